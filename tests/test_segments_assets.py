"""training_segments through Dagster on a messy dataset: a bad sequence left out, FLAME on a subset,
no FLAME at all (flame_model skipped, the retrain job still succeeds), pruning around a published model."""

from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, materialize

from pipelines.assets.evaluation import evaluation_metrics, evaluation_renders
from pipelines.assets.segments import training_segments
from pipelines.assets.training import FLAME_SKIPPED, facetalk_model, flame_model
from pipelines.jobs import retrain_job
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import failure_messages, ingest_sequences
from pipelines.training_launch import TrainingLauncher
from storage.segment_versions import stored_versions
from storage.segments import SegmentReader, current_segments_dir, segments_root
from tests.builders import write_sequence

TRAIN = {"max_steps": 4, "batch_size": 4}
SEGMENTS = {"segment_frames": 24, "stride": 12}


def _ingest(tmp_path: Path, encoder: Path, flame: set[int]) -> tuple[DagsterInstance, dict]:
    data = tmp_path / "data"
    # Identities split as ID3 test, ID0 val, the others train (assign_splits, seed 0).
    for identity in range(5):
        write_sequence(
            data, f"ID{identity}_SEN01", n_frames=96, seed=identity, flame=identity in flame, nphm_meshes=False
        )
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(encoder)),
        "training_launcher": TrainingLauncher(),
    }
    return DagsterInstance.ephemeral(), resources


def _segments(instance, resources, **config) -> dict:
    run_config = {"ops": {"training_segments": {"config": {**SEGMENTS, **config}}}}
    result = materialize([training_segments], resources=resources, instance=instance, run_config=run_config)
    assert result.success
    return _meta(result, "training_segments")


def _meta(result, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def test_bad_sequence_left_out_flame_on_a_subset_and_pruning_keeps_the_trained_version(tmp_path, tiny_encoder_dir):
    instance, resources = _ingest(tmp_path, tiny_encoder_dir, flame={0, 1, 2, 3})
    data = Path(resources["dataset"].root)
    # ID5: 96 NPHM frames but only 80 FLAME frames, the ID15_flame_short of the issue.
    write_sequence(data, "ID5_SEN01", n_frames=96, seed=5, nphm_meshes=False)
    for extra in sorted((data / "ID5_SEN01" / "flame_2023_tracking" / "flame_meshes").glob("*.ply"))[80:]:
        extra.unlink()
    assert not ingest_sequences(instance, resources, data, progress=lambda line: None).failed

    meta = _segments(instance, resources)
    assert meta["sequences_left_out"] == {"ID5_SEN01": "80 FLAME frames but 96 NPHM expression frames"}
    assert meta["includes_flame"] and meta["n_flame_sequences"] == 4 and meta["n_sequences"] == 5
    reader = SegmentReader(current_segments_dir(resources["store"].path))
    flame_train = reader.indices("train", flame=True)
    assert 0 < len(flame_train) < len(reader.indices("train"))  # ID4 trains NPHM only
    assert meta["bytes_vs_float32_frames"] <= 1.5
    trained_on = reader.attrs["version"]

    run_config = {"ops": {"facetalk_model": {"config": TRAIN}, "flame_model": {"config": TRAIN}}}
    result = materialize(
        [facetalk_model, flame_model],
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    assert _meta(result, "flame_model")["train_segments"] == len(flame_train)
    assert _meta(result, "facetalk_model")["train_segments"] == len(reader.indices("train"))
    assert _meta(result, "flame_model")["segments_version"] == trained_on

    # Three new window settings with keep_versions=1: the newest stays, and the models' version.
    for stride in (6, 8, 24):
        meta = _segments(instance, resources, stride=stride, keep_versions=1)
        assert meta["frames_status"] == "reused"
    store = resources["store"].path
    assert set(stored_versions(store)) == {trained_on, meta["version"]}
    assert [p.name for p in (segments_root(store) / "frames").iterdir()] == [meta["frames"]]
    assert len(SegmentReader(segments_root(store) / trained_on)) == len(reader)


@pytest.mark.timeout(900)
def test_no_flame_anywhere_skips_flame_model_and_the_retrain_job_runs_through(tmp_path, tiny_encoder_dir):
    instance, resources = _ingest(tmp_path, tiny_encoder_dir, flame=set())
    assert not ingest_sequences(instance, resources, Path(resources["dataset"].root), progress=lambda line: None).failed
    defs = Definitions(
        assets=[training_segments, facetalk_model, flame_model, evaluation_metrics, evaluation_renders],
        jobs=[retrain_job],
        resources=resources,
    )
    run_config = {
        "ops": {
            "training_segments": {"config": SEGMENTS},
            "facetalk_model": {"config": TRAIN},
            "flame_model": {"config": TRAIN},
            "evaluation_metrics": {"config": {"steps": 2, "n_samples": 2}},
            "evaluation_renders": {
                "config": {"n_sequences": 1, "resolution": 16, "video_size": 64, "max_seconds": 1.0, "steps": 2}
            },
        }
    }
    result = defs.get_job_def("retrain").execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False
    )
    # Every step runs through. The one thing a 4-step model may fail is the blocking quality gate
    # (model better than the audio-free baselines), which is not about FLAME: with enough steps the
    # job succeeds (test_learnability shows that gate passing).
    failed = {event.step_key: event.event_specific_data.error.message for event in result.get_step_failure_events()}
    assert set(failed) <= {"evaluation_metrics"}, failure_messages(result)
    assert all("model_beats_audio_free_baseline" in message for message in failed.values()), failed
    assert {"training_segments", "facetalk_model", "flame_model", "evaluation_renders"} <= {
        event.step_key for event in result.get_step_success_events()
    }
    assert _meta(result, "flame_model")["status"] == FLAME_SKIPPED
    assert "no flame_model checkpoint: FLAME metrics skipped" in _meta(result, "evaluation_metrics")["notes"]
    assert not (resources["store"].path / "checkpoints" / "flame_model" / "model.ckpt").exists()
    assert _meta(result, "training_segments")["includes_flame"] is False
