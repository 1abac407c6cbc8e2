"""Per-sequence assets and training_segments through Dagster's real in-process executor."""

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from pipelines.assets.ingestion import per_sequence_assets
from pipelines.assets.segments import training_segments
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import failure_messages, ingest_sequences
from storage.segments import SegmentReader, current_segments_dir
from storage.sequence_store import SequenceStore
from tests.builders import write_sequence


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    for identity in range(3):
        write_sequence(
            root, f"ID{identity}_SEN01", n_frames=60, seed=identity, sample_rate=(16_000, 44_100, 22_050)[identity]
        )
    return root


@pytest.fixture
def resources(tmp_path, dataset, tiny_encoder_dir):
    return {
        "dataset": DatasetResource(root=str(dataset)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }


def _materialize_sequence(key, resources, instance):
    instance.add_dynamic_partitions("sequences", [key])
    return materialize(
        per_sequence_assets, partition_key=key, resources=resources, instance=instance, raise_on_error=False
    )


def _metadata(result):
    return {
        e.event_specific_data.materialization.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in e.event_specific_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def test_per_sequence_assets_write_store_then_cache(resources, tmp_path):
    instance = DagsterInstance.ephemeral()
    result = _materialize_sequence("ID0_SEN01", resources, instance)
    assert result.success, failure_messages(result)
    meta = _metadata(result)
    assert {m["status"] for m in meta.values()} == {"materialized"}
    assert meta["audio_features"]["n_frames"] == 60 and meta["audio_features"]["feature_dim"] == 64
    assert meta["audio_features"]["encoder_random_weights"] is True
    assert meta["nphm_expressions"]["expression_shape"] == [60, 200]
    assert meta["flame_vertices"]["vertices_shape"] == [60, 36, 3]
    assert meta["cleaned_audio"]["sample_rate"] == 16_000
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(c.passed for c in checks)

    store = SequenceStore(tmp_path / "store")
    assert store.read("ID0_SEN01", "audio_features", "features").shape == (60, 64)
    n_vertices = store.read("ID0_SEN01", "nphm_meshes", "n_vertices")  # an index: meshes by reference
    assert n_vertices.shape == (60,) and n_vertices.sum() == 60 * 36
    assert meta["nphm_meshes"]["mode"] == "reference" and "vertices" not in store.open_component(
        "ID0_SEN01", "nphm_meshes"
    )

    again = _materialize_sequence("ID0_SEN01", resources, instance)
    assert again.success
    assert {m["status"] for m in _metadata(again).values()} == {"cached"}


def test_bad_sequence_fails_clearly_while_others_ingest(resources, dataset, tmp_path):
    bad = dataset / "ID0_SEN01" / "nphm_tracking" / "nphm_expressions" / "frame_0007.npz"
    np.savez(bad, something_else=np.zeros(200, np.float32))
    instance = DagsterInstance.ephemeral()
    summary = ingest_sequences(instance, resources, dataset, progress=lambda line: None)
    assert summary.succeeded == ["ID1_SEN01", "ID2_SEN01"]
    messages = " ".join(summary.failed["ID0_SEN01"])
    assert "frame_0007.npz" in messages and "something_else" in messages
    store = SequenceStore(tmp_path / "store")
    assert store.attrs("ID0_SEN01", "nphm") is None
    assert store.sequences_with("nphm", "audio_features") == ["ID1_SEN01", "ID2_SEN01"]
    assert set(instance.get_dynamic_partitions("sequences")) == {"ID0_SEN01", "ID1_SEN01", "ID2_SEN01"}


def test_audio_far_from_motion_is_refused(tmp_path, resources):
    write_sequence(tmp_path / "data", "ID9_LONG", n_frames=24, audio_seconds=5.0)
    result = _materialize_sequence("ID9_LONG", resources, DagsterInstance.ephemeral())
    assert not result.success
    (message,) = [m for m in failure_messages(result) if m.startswith("audio_features")]
    assert "ID9_LONG" in message and "apart" in message


def test_training_segments_from_ingested_sequences(resources, dataset, tmp_path):
    instance = DagsterInstance.ephemeral()
    summary = ingest_sequences(instance, resources, dataset, progress=lambda line: None)
    assert not summary.failed
    run_config = {"ops": {"training_segments": {"config": {"segment_frames": 24, "stride": 12}}}}
    result = materialize([training_segments], resources=resources, instance=instance, run_config=run_config)
    meta = _metadata(result)["training_segments"]
    # 60 frames, windows of 24 every 12 -> starts 0, 12, 24, 36 -> 4 per sequence.
    assert meta["n_segments"] == 12 and meta["includes_flame"] is True
    assert sorted(meta["segments_per_split"].values()) == [4, 4, 4]
    reader = SegmentReader(current_segments_dir(tmp_path / "store"))
    train = reader.indices("train")
    expression = reader.read("expression", train)
    assert expression.shape == (4, 24, 200) and reader.read("audio_features", train).shape == (4, 24, 64)
    assert reader.read("flame_offsets", train).shape == (4, 24, 36, 3)
    # Segment 1 of a sequence starts at frame 12 of that sequence's stored expression codes.
    row = int(train[1])
    key = reader.manifest.column("sequence")[row].as_py()
    start = reader.manifest.column("start_frame")[row].as_py()
    stored = SequenceStore(tmp_path / "store").read(key, "nphm", "expression")
    np.testing.assert_array_equal(reader.read("expression", [row])[0], stored[start : start + 24])

    cached = materialize([training_segments], resources=resources, instance=instance, run_config=run_config)
    assert _metadata(cached)["training_segments"]["status"] == "cached"


def test_meshes_copied_into_the_store_by_run_config(resources, tmp_path):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sequences", ["ID1_SEN01"])
    run_config = {"ops": {"nphm_meshes": {"config": {"mode": "copy"}}}}
    result = materialize(per_sequence_assets, partition_key="ID1_SEN01", resources=resources, instance=instance,
                         run_config=run_config)  # fmt: skip
    meta = _metadata(result)["nphm_meshes"]
    assert meta["mode"] == "copy" and 0 < meta["max_vertex_error"] <= meta["vertex_error_bound"] < 1e-5
    group = SequenceStore(tmp_path / "store").open_component("ID1_SEN01", "nphm_meshes")
    assert group["vertices"].dtype == np.uint16 and group["vertices"].shape == (60 * 36, 3)
    # Switching back to the default mode re-materializes: the mode is part of the fingerprint.
    again = materialize(per_sequence_assets, partition_key="ID1_SEN01", resources=resources, instance=instance)
    assert _metadata(again)["nphm_meshes"]["status"] == "materialized"
    assert _metadata(again)["nphm_meshes"]["mode"] == "reference"


def test_inconsistent_frame_counts_are_flagged_with_the_numbers(tmp_path, resources):
    """121 FLAME frames vs 141 NPHM frames: stored, but `components_consistent` fails, naming both."""
    seq = write_sequence(tmp_path / "data", "ID15_flame_short", n_frames=141)
    for frame in range(121, 141):
        (seq / "flame_2023_tracking" / "flame_meshes" / f"frame_{frame:04d}.ply").unlink()
    result = _materialize_sequence("ID15_flame_short", resources, DagsterInstance.ephemeral())
    assert result.success  # a non-blocking check: nothing stops, training leaves the sequence out
    checks = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    check = checks["components_consistent"]
    assert not check.passed and check.severity.value == "ERROR"
    metadata = {key: value.value for key, value in check.metadata.items()}
    assert metadata["nphm_frames"] == 141 and metadata["flame_frames"] == 121
    assert metadata["motion_spread_frames"] == 20 and metadata["audio_frames"] == pytest.approx(141)
    assert "nphm 141, flame 121" in check.description and "differs by 20 frames" in check.description
    assert all(c.passed for name, c in checks.items() if name != "components_consistent")


def test_absent_optional_inputs_materialize_nothing(resources, dataset):
    from pipelines.assets.ingestion import assets_for
    from storage.layout import sequence_folder

    write_sequence(dataset, "ID9_SEN01", n_frames=24, seed=9, flame=False, nphm_meshes=False)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sequences", ["ID9_SEN01"])
    selected = assets_for(sequence_folder(dataset, "ID9_SEN01"))
    assert {key.to_user_string() for key in selected} == {"cleaned_audio", "nphm_expressions", "audio_features"}
    # As the CLI and the sensor run it: the absent inputs' assets left out, audio_features runs.
    result = materialize(per_sequence_assets, partition_key="ID9_SEN01", resources=resources, instance=instance,
                         selection=selected)  # fmt: skip
    assert result.success and set(_metadata(result)) == {"cleaned_audio", "nphm_expressions", "audio_features"}
    # Everything selected (the UI's default): the optional assets write nothing, their checks say why;
    # Dagster then skips audio_features, downstream of the skipped flame_vertices.
    everything = materialize(per_sequence_assets, partition_key="ID9_SEN01", resources=resources, instance=instance)
    assert everything.success and "flame_vertices" not in _metadata(everything)
    checks = [e.event_specific_data for e in everything.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert any(c.check_name == "vertex_dim" and "not applicable" in (c.description or "") for c in checks)
    for asset in ("flame_vertices", "nphm_meshes"):
        assert instance.get_materialized_partitions(AssetKey(asset)) == set()
