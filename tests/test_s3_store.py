"""The store on S3 (moto's server on loopback) through the same code that serves a local store.

The pipeline runs twice on the same dataset, once with `StoreResource(root=<tmp dir>)` and once
with `StoreResource(root="s3://<bucket>/store")`; every component, the segment store and a
training batch must come out equal. Interrupted writes on S3 must leave nothing a reader takes
for data, and a re-run must complete.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None:
    pytest.skip("needs s3fs and moto[server] (the dev extras)", allow_module_level=True)

from dagster import materialize

from models.data import SegmentDataset
from ops.dataset.segmenting import SegmentingConfig, build_training_segments
from ops.tracking import ingest as ingest
from pipelines.assets.segments import training_segments
from pipelines.resources import StoreResource
from pipelines.runner import failure_messages
from storage import sequence_store
from storage.atomic import completion_marker
from storage.frame_store import FrameStoreWriter, is_frame_store
from storage.layout import scan_dataset
from storage.location import OPTIONS_ENV, StoreLocationError, is_remote, store_path
from storage.segments import SegmentReader, current_segments_dir, frames_dir
from storage.sequence_store import COMPONENTS, ComponentMissing, SequenceStore
from tests.builders import write_sequence
from tests.dagster_ingest import ingest_every_partition

REPO = Path(__file__).resolve().parents[1]
KEYS = ["ID0_SEN01", "ID1_SEN01", "ID2_SEN01"]  # three identities: train, val and test get one each
SEGMENTS = {"segment_frames": 24, "stride": 12}


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "data"
    for seed, key in enumerate(KEYS):
        write_sequence(root, key, n_frames=60, seed=seed, sample_rate=(16_000, 44_100, 22_050)[seed])
    return root


def _run_local_reference(dataset: Path, store_root: Path, encoder: Path) -> None:
    """What the per-sequence assets and `training_segments` do, called directly on a local store
    (test_ingestion_assets runs the local store through Dagster)."""
    store = SequenceStore(store_root)
    for seq in scan_dataset(dataset).sequences:
        ingest.ingest_cleaned_audio(seq, store)
        ingest.ingest_nphm_expressions(seq, store, fps=24)
        ingest.ingest_flame_vertices(seq, store, fps=24)
        ingest.ingest_nphm_meshes(seq, store)
        ingest.ingest_audio_features(seq, store, ingest.EncoderSource(encoder), ingest.FeatureSettings(fps=24))
    build_training_segments(store, store.sequences_with("nphm", "audio_features"), SegmentingConfig(**SEGMENTS))


def _run_pipeline(dataset: Path, store_root: str, encoder: Path) -> None:
    """Ingest every sequence and build the segments through Dagster, one run per partition as `facetalk ingest` does."""
    resources, instance = ingest_every_partition(dataset, store_root, encoder, KEYS)
    run_config = {"ops": {"training_segments": {"config": SEGMENTS}}}
    result = materialize(
        [training_segments], resources=resources, instance=instance, run_config=run_config, raise_on_error=False
    )
    assert result.success, failure_messages(result)
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 3 and all(c.passed for c in checks)


def _assert_same_components(local: SequenceStore, remote: SequenceStore) -> None:
    assert remote.sequences_with(*COMPONENTS) == local.sequences_with(*COMPONENTS) == KEYS
    for key in KEYS:
        for component in COMPONENTS:
            assert remote.attrs(key, component) == local.attrs(key, component), (key, component)
            expected = dict(local.open_component(key, component).arrays())
            got = dict(remote.open_component(key, component).arrays())
            assert sorted(got) == sorted(expected), (key, component)
            for name, array in expected.items():
                np.testing.assert_array_equal(got[name][...], array[...], err_msg=f"{key}/{component}/{name}")


def _assert_same_segment_stores(local: Path, remote) -> None:
    a, b = SegmentReader(local), SegmentReader(remote)
    assert a.manifest.equals(b.manifest) and a.attrs == b.attrs and a.fields == b.fields
    for field in a.fields:
        np.testing.assert_array_equal(b.read(field, b.indices()), a.read(field, a.indices()), err_msg=field)
    for name, array in a.frames.group.arrays():
        np.testing.assert_array_equal(b.frames.group[name][...], array[...], err_msg=name)


def test_pipeline_on_s3_equals_local_store(dataset, tmp_path, s3_root, tiny_encoder_dir):
    local_root = tmp_path / "store"
    _run_local_reference(dataset, local_root, tiny_encoder_dir)
    _run_pipeline(dataset, s3_root, tiny_encoder_dir)

    remote = StoreResource(root=s3_root).sequences()
    assert is_remote(remote.root) and str(remote.root) == s3_root
    _assert_same_components(SequenceStore(local_root), remote)

    local_segments, remote_segments = current_segments_dir(local_root), current_segments_dir(s3_root)
    assert is_remote(remote_segments) and remote_segments.name == local_segments.name
    _assert_same_segment_stores(local_segments, remote_segments)

    # A training batch: shuffled train segments, repeats allowed, read the way the loader reads them.
    local_batch = SegmentDataset(local_segments, SegmentReader(local_segments).indices("train")).__getitems__(
        [3, 0, 2, 0]
    )
    reader = SegmentReader(remote_segments)
    rows = reader.indices("train")[[3, 0, 2, 0]]
    np.testing.assert_array_equal(reader.read("expression", rows), local_batch["motion"].numpy())
    np.testing.assert_array_equal(reader.read("audio_features", rows), local_batch["audio"].numpy())
    with pytest.raises(IndexError):
        reader.read("expression", [len(reader)])

    # A second run finds everything current on S3 as well.
    again = build_training_segments(remote, KEYS, SegmentingConfig(**SEGMENTS))
    assert again.status == "cached" and again.path == remote_segments


def _ones(n: int) -> dict[str, np.ndarray]:
    return {"expression": np.ones((n, 200), np.float32)}


def test_interrupted_component_write_on_s3_is_absent_then_rerun_completes(s3_root, monkeypatch):
    store = SequenceStore(s3_root)
    original = sequence_store.write_group
    seen_while_writing = []

    def failing(path, arrays, attrs):
        original(path, arrays, attrs)
        seen_while_writing.append(((path / "zarr.json").exists(), store.attrs("ID1_S1", "nphm")))
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(sequence_store, "write_group", failing)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        store.write_component("ID1_S1", "nphm", _ones(10), {"fingerprint": "a"})
    assert seen_while_writing == [(True, None)]  # objects had landed; no reader could see them
    assert store.attrs("ID1_S1", "nphm") is None and store.sequences_with("nphm") == []
    with pytest.raises(ComponentMissing, match="ID1_S1"):
        store.open_component("ID1_S1", "nphm")

    monkeypatch.setattr(sequence_store, "write_group", original)
    store.write_component("ID1_S1", "nphm", _ones(10), {"fingerprint": "a"})
    assert store.is_current("ID1_S1", "nphm", "a") and store.sequences_with("nphm") == ["ID1_S1"]
    np.testing.assert_array_equal(store.read("ID1_S1", "nphm", "expression"), _ones(10)["expression"])


KILLED_WRITER = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {repo!r})
import storage.sequence_store as sequence_store
original = sequence_store.write_group
def dying(path, arrays, attrs):
    original(path, arrays, attrs)
    os.kill(os.getpid(), signal.SIGKILL)  # every object written, the completion marker not yet
sequence_store.write_group = dying
arrays = {{"expression": np.zeros((20, 200), np.float32), "pose": np.zeros((20, 6), np.float32)}}
sequence_store.SequenceStore({root!r}).write_component("ID1_S1", "nphm", arrays, {{"fingerprint": "killed"}})
"""


def test_sigkilled_component_write_on_s3_leaves_objects_no_reader_sees(s3_root):
    store = SequenceStore(s3_root)
    store.write_component("ID1_S1", "nphm", _ones(10), {"fingerprint": "old"})
    store.write_component("ID1_S1", "audio_features", {"features": np.ones((10, 64), np.float32)}, {"fingerprint": "f"})
    store.write_component("ID1_S1", "nphm_meshes", {"vertices": np.ones((30, 3), np.float32)}, {"fingerprint": "m"})
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(repo=str(REPO), root=s3_root)], check=False)
    assert killed.returncode == -9

    path = store.component_path("ID1_S1", "nphm")
    assert (path / "zarr.json").exists() and (path / "pose").exists()  # the killed run's objects
    assert not completion_marker(path).exists()
    # On an object store a replacement hides the old version from its start: absent, never mixed.
    assert store.attrs("ID1_S1", "nphm") is None and store.sequences_with("nphm", "audio_features") == []
    # Other components are untouched, `nphm_meshes` too although its key starts with `nphm`.
    assert store.is_current("ID1_S1", "audio_features", "f") and store.is_current("ID1_S1", "nphm_meshes", "m")

    store.write_component("ID1_S1", "nphm", _ones(12), {"fingerprint": "new"})
    assert store.attrs("ID1_S1", "nphm")["fingerprint"] == "new"
    assert sorted(name for name, _ in store.open_component("ID1_S1", "nphm").arrays()) == ["expression"]  # no leftovers
    np.testing.assert_array_equal(store.read("ID1_S1", "nphm", "expression"), _ones(12)["expression"])
    assert store.sequences_with("nphm", "audio_features") == ["ID1_S1"]
    np.testing.assert_array_equal(store.read("ID1_S1", "nphm_meshes", "vertices"), np.ones((30, 3), np.float32))


def _ingest_directly(store: SequenceStore, keys: list[str], n_frames: int = 60) -> None:
    rng = np.random.default_rng(0)
    for key in keys:
        store.write_component(
            key,
            "nphm",
            {
                "expression": rng.standard_normal((n_frames, 200)).astype(np.float32),
                "identity": rng.standard_normal(1344).astype(np.float32),
            },
            {"fingerprint": key, "fps": 24, "n_frames": n_frames},
        )
        features = rng.standard_normal((n_frames, 64)).astype(np.float32)
        store.write_component(key, "audio_features", {"features": features}, {"fingerprint": key, "fps": 24})


def test_interrupted_segment_store_on_s3_keeps_current_then_rerun_completes(s3_root, tmp_path, monkeypatch):
    remote, local = SequenceStore(s3_root), SequenceStore(tmp_path / "store")
    keys = KEYS[:2]
    _ingest_directly(remote, keys)
    _ingest_directly(local, keys)
    previous = build_training_segments(
        remote, keys, SegmentingConfig(segment_frames=24, stride=24, include_flame=False)
    )
    config = SegmentingConfig(segment_frames=24, stride=12)  # include_flame: other frame data, written anew

    original = FrameStoreWriter.append_sequence
    appended = []

    def failing(self, *args, **kwargs):
        original(self, *args, **kwargs)
        appended.append(args[0])
        if len(appended) == 1:  # frames of the first sequence are on S3
            assert not is_frame_store(frames_dir(s3_root, self.group.attrs["key"]))
            raise RuntimeError("killed mid-segments")

    monkeypatch.setattr(FrameStoreWriter, "append_sequence", failing)
    with pytest.raises(RuntimeError, match="killed mid-segments"):
        build_training_segments(remote, keys, config)
    assert current_segments_dir(s3_root) == previous.path
    assert len(SegmentReader(previous.path)) == previous.n_segments

    monkeypatch.setattr(FrameStoreWriter, "append_sequence", original)
    rerun = build_training_segments(remote, keys, config)
    reference = build_training_segments(local, keys, config)
    assert rerun.status == "materialized" and rerun.version == reference.version != previous.version
    assert current_segments_dir(s3_root) == rerun.path
    _assert_same_segment_stores(reference.path, rerun.path)


def test_store_location_from_the_environment(monkeypatch):
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert store_path("~/store") == Path.home() / "store" and store_path("file:///tmp/x") == Path("/tmp/x")
    remote = store_path("s3://bucket/store")
    assert is_remote(remote) and remote.storage_options["endpoint_url"] == "http://127.0.0.1:9"
    assert str(remote / "segments" / "CURRENT") == "s3://bucket/store/segments/CURRENT"
    monkeypatch.setenv(OPTIONS_ENV, '{"endpoint_url": "http://minio:9000", "anon": true}')
    assert store_path("s3://bucket/store").storage_options["endpoint_url"] == "http://minio:9000"
    monkeypatch.setenv(OPTIONS_ENV, "endpoint_url=http://minio:9000")
    with pytest.raises(StoreLocationError, match=OPTIONS_ENV):
        store_path("s3://bucket/store")
    monkeypatch.setenv(OPTIONS_ENV, '["not", "an", "object"]')
    with pytest.raises(StoreLocationError, match="JSON object"):
        store_path("s3://bucket/store")


def test_meshes_copied_to_s3_read_back_without_the_dataset(dataset, tmp_path, s3_root):
    """Copy mode is the mode for object storage: streamed to S3, read back frame by frame."""
    from ops.tracking.mesh_frames import stored_mesh_frames
    from ops.tracking.ply import read_ply

    seq = scan_dataset(dataset).sequences[0]
    remote = SequenceStore(s3_root)
    outcome = ingest.ingest_nphm_meshes(seq, remote, mode="copy")
    assert outcome.status == "materialized" and is_remote(outcome.path)
    frames = stored_mesh_frames(remote, seq.key, dataset_root=None)
    assert len(frames) == 60
    for index in (0, 1, 59):
        mesh = read_ply(seq.nphm_meshes_dir / f"frame_{index:04d}.ply")
        vertices, faces = frames[index]
        np.testing.assert_array_equal(faces, mesh.faces)
        assert np.abs(vertices - mesh.vertices).max() <= outcome.metadata["vertex_error_bound"]
    assert ingest.ingest_nphm_meshes(seq, remote, mode="copy").status == "cached"
