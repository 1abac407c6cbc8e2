"""build_training_segments on a real store: left-out reasons, frame reuse, no-op without reading frames,
bytes and the FLAME error bound."""

import numpy as np
import pytest

from ops.dataset.segmenting import SegmentingConfig, SegmentingError, build_training_segments
from storage.frame_store import FRAMES_ZARR, frame_data_reads
from storage.segment_versions import stored_versions
from storage.segments import SegmentReader, frames_dir
from storage.sequence_store import SequenceStore

N_VERTICES = 300
CONFIG = SegmentingConfig(segment_frames=24, stride=12)


def _sequence(store, key, n=72, fps=24, audio_dim=32, flame_frames=None, vertices=N_VERTICES, seed=0):
    rng = np.random.default_rng(seed)
    nphm = {"expression": rng.standard_normal((n, 200)).astype(np.float32), "identity": np.ones(1344, np.float32)}
    store.write_component(key, "nphm", nphm, {"fingerprint": f"{key}-{seed}", "fps": fps})
    features = {"features": rng.standard_normal((n, audio_dim)).astype(np.float32)}
    store.write_component(key, "audio_features", features, {"fingerprint": f"{key}-{seed}", "fps": fps})
    if flame_frames is not None:
        template = rng.uniform(-0.1, 0.1, (vertices, 3)).astype(np.float32)
        moved = template + 0.02 * rng.standard_normal((flame_frames, vertices, 3)).astype(np.float32)
        arrays = {"vertices": moved, "template": template, "faces": np.zeros((8, 3), np.int32)}
        store.write_component(key, "flame", arrays, {"fingerprint": f"{key}-{seed}", "fps": fps})


@pytest.fixture
def store(tmp_path) -> SequenceStore:
    store = SequenceStore(tmp_path / "store")
    for identity in range(4):
        _sequence(store, f"ID{identity}_SEN01", flame_frames=72 if identity < 3 else None, seed=identity)
    _sequence(store, "ID4_SEN01", flame_frames=60, seed=4)  # FLAME shorter than NPHM
    _sequence(store, "ID5_SEN01", fps=25, seed=5)
    _sequence(store, "ID6_SEN01", audio_dim=48, seed=6)  # another encoder
    _sequence(store, "ID7_SEN01", flame_frames=72, vertices=100, seed=7)  # another FLAME topology
    return store


def test_disagreeing_sequences_are_left_out_with_their_reasons(store):
    keys = store.sequences_with("nphm", "audio_features")
    result = build_training_segments(store, keys, CONFIG)
    assert result.sequences_left_out == {
        "ID4_SEN01": "60 FLAME frames but 72 NPHM expression frames",
        "ID5_SEN01": "25 frames per second where the majority has 24",
        "ID6_SEN01": "48-d audio features (another encoder?) where the majority has 32",
    }
    assert result.flame_left_out == {"ID7_SEN01": "100 FLAME vertices where the majority has 300"}
    assert result.sequences_used == ["ID0_SEN01", "ID1_SEN01", "ID2_SEN01", "ID3_SEN01", "ID7_SEN01"]
    assert result.flame_sequences == ["ID0_SEN01", "ID1_SEN01", "ID2_SEN01"]
    reader = SegmentReader(result.path)
    with_flame = set(np.asarray(reader.manifest.column("sequence").to_pylist())[reader.indices(flame=True)])
    assert with_flame == set(result.flame_sequences) and result.n_flame_segments == 3 * 5

    with pytest.raises(SegmentingError, match="no sequence can be segmented"):
        build_training_segments(store, ["ID4_SEN01"], CONFIG)


def test_bytes_and_flame_error_bound(store):
    result = build_training_segments(store, store.sequences_with("nphm", "audio_features"), CONFIG)
    assert result.stored_bytes <= 1.5 * result.float32_bytes
    reader = SegmentReader(result.path)
    worst = 0.0
    for index in reader.indices(flame=True):
        row = reader.manifest.slice(int(index), 1).to_pylist()[0]
        vertices = store.read(row["sequence"], "flame", "vertices")[row["start_frame"] : row["start_frame"] + 24]
        template = store.read(row["sequence"], "flame", "template")
        worst = max(worst, float(np.abs(reader.read("flame_offsets", [index])[0] - (vertices - template)).max()))
    assert worst == pytest.approx(result.flame_max_abs_error) and 0 < worst < 1e-4  # float16 of offsets < 0.1
    assert reader.attrs["flame_max_abs_error"] == result.flame_max_abs_error


def test_new_stride_reuses_frames_and_a_rerun_reads_no_frame_data(store):
    keys = store.sequences_with("nphm", "audio_features")
    first = build_training_segments(store, keys, CONFIG)
    assert first.status == "materialized" and first.frames_status == "written"
    chunks = sorted(frames_dir(store.root, first.frames).joinpath(FRAMES_ZARR).rglob("c/*"))
    stamps = [p.stat().st_mtime_ns for p in chunks]

    again = SegmentingConfig(segment_frames=24, stride=6)
    second = build_training_segments(store, keys, again)
    assert (second.status, second.frames_status, second.frames) == ("materialized", "reused", first.frames)
    assert second.version != first.version and second.n_segments > first.n_segments
    np.testing.assert_array_equal(
        SegmentReader(second.path).read("expression", [0]), SegmentReader(first.path).read("expression", [0])
    )

    reads = frame_data_reads()
    noop = build_training_segments(store, keys, again)
    assert noop.status == "cached" and noop.version == second.version and noop.sequences_left_out
    assert frame_data_reads() == reads  # decided from fingerprints and the stored attrs alone
    assert [p.stat().st_mtime_ns for p in chunks] == stamps

    _sequence(store, "ID3_SEN01", seed=33)  # re-ingested differently: new frame data
    changed = build_training_segments(store, keys, again)
    assert changed.frames_status == "written" and changed.frames != first.frames


def test_pruning_keeps_the_newest_versions_and_removes_unused_frames(store):
    keys = ["ID0_SEN01", "ID1_SEN01", "ID2_SEN01"]
    made = [build_training_segments(store, keys, SegmentingConfig(24, s), keep_versions=2) for s in (6, 8, 12)]
    assert set(stored_versions(store.root)) == {made[1].version, made[2].version}
    assert made[2].pruned == [made[0].version]
    _sequence(store, "ID0_SEN01", seed=10)  # re-ingested: new frame data
    newer = [build_training_segments(store, keys, SegmentingConfig(24, s), keep_versions=2) for s in (6, 8)]
    assert newer[0].frames != made[0].frames
    assert set(stored_versions(store.root)) == {newer[0].version, newer[1].version}
    assert [p.name for p in (store.root / "segments" / "frames").iterdir()] == [newer[1].frames]
