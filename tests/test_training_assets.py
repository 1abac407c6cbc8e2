"""facetalk_model / flame_model through Dagster, and the retrain sensor."""

import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context, materialize

from pipelines.assets.segments import training_segments
from pipelines.assets.training import facetalk_model, flame_model
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.retraining import retrain_on_new_data
from pipelines.runner import failure_messages, ingest_sequences
from tests.builders import write_sequence

TRAIN = {"max_steps": 12, "batch_size": 4}


@pytest.fixture
def ingested(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    for identity in range(5):
        write_sequence(data, f"ID{identity}_SEN01", n_frames=96, seed=identity, nphm_meshes=False)
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }
    instance = DagsterInstance.ephemeral()
    assert not ingest_sequences(instance, resources, data, progress=lambda line: None).failed
    segments = {"ops": {"training_segments": {"config": {"segment_frames": 24, "stride": 12}}}}
    assert materialize([training_segments], resources=resources, instance=instance, run_config=segments).success
    return instance, resources, data


def _meta(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def test_models_train_and_retrain_sensor_follows_new_data(ingested, tmp_path):
    instance, resources, data = ingested
    run_config = {"ops": {"facetalk_model": {"config": TRAIN}, "flame_model": {"config": TRAIN}}}
    result = materialize(
        [facetalk_model, flame_model],
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    for name in ("facetalk_model", "flame_model"):
        meta = _meta(result, name)
        assert meta["steps"] == 12 and meta["device"] == "cpu"
        assert meta["best_val_loss"] > 0 and "data:image/png;base64," in meta["loss_curve"]
        assert (tmp_path / "store" / "checkpoints" / name / "model.ckpt").is_file()

    context = build_sensor_context(instance=instance, resources={"store": resources["store"]})
    assert isinstance(retrain_on_new_data(context), SkipReason)

    write_sequence(data, "ID7_SEN01", n_frames=96, seed=7, nphm_meshes=False)
    assert not ingest_sequences(instance, resources, data, only=["ID7_SEN01"], progress=lambda line: None).failed
    request = retrain_on_new_data(build_sensor_context(instance=instance, resources={"store": resources["store"]}))
    assert isinstance(request, RunRequest) and request.run_key.startswith("retrain:")


def test_failed_training_keeps_previous_model(ingested, tmp_path):
    instance, resources, _ = ingested
    ok = materialize(
        [facetalk_model],
        resources=resources,
        instance=instance,
        run_config={"ops": {"facetalk_model": {"config": TRAIN}}},
    )
    checkpoint = tmp_path / "store" / "checkpoints" / "facetalk_model" / "model.ckpt"
    before = checkpoint.read_bytes()
    bad = {"ops": {"facetalk_model": {"config": {**TRAIN, "batch_size": 10_000}}}}
    failed = materialize([facetalk_model], resources=resources, instance=instance, run_config=bad, raise_on_error=False)
    assert ok.success and not failed.success
    assert "fewer than one batch" in " ".join(failure_messages(failed))
    assert checkpoint.read_bytes() == before

    # A retrain after a finished run trains a new model instead of resuming at max_steps.
    again = materialize(
        [facetalk_model],
        resources=resources,
        instance=instance,
        run_config={"ops": {"facetalk_model": {"config": TRAIN}}},
    )
    meta = _meta(again, "facetalk_model")
    assert meta["steps"] == 12 and meta["resumed_from"] == ""
    assert checkpoint.read_bytes() != before
