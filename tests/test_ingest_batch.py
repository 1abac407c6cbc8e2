"""The daemon's batch job (`ingest_new_sequences`) in a real instance on disk: one bad sequence fails
with its reason, the others are materialized, the batch run fails at the end; unchanged ones are skipped."""

import shutil

import numpy as np
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from pipelines.definitions import defs
from pipelines.ingest_batch import BATCH_TAG, JOB_NAME, OP_NAME
from pipelines.instance_config import instance_yaml
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.runner import job_with_resources
from storage.sequence_store import SequenceStore
from tests.builders import write_sequence

GOOD, OTHER, BAD = "ID0_SEN01", "ID1_SEN01", "ID2_SEN01"


DRIFT = {"ops": {"audio_features": {"config": {"max_drift_s": 0.5}}}}  # a per-sequence run config


def _batch(instance, resources, keys, workers):
    config = {"ops": {OP_NAME: {"config": {"keys": keys, "workers": workers, "sequence_run_config": DRIFT}}}}
    return job_with_resources(JOB_NAME, resources).execute_in_process(
        run_config=config, instance=instance, raise_on_error=False
    )


def test_the_batch_job_loads_with_the_definitions_and_the_queue_runs_one_batch_at_a_time(tmp_path):
    repository = defs.get_repository_def()  # what the code server loads: names must not clash
    job = repository.get_job(JOB_NAME)
    assert job.graph.node_names() == [OP_NAME]
    assert repository.get_sensor_def("sequence_folder_sensor").job_name == JOB_NAME
    (tmp_path / "dagster.yaml").write_text(instance_yaml())
    limits = DagsterInstance.from_config(str(tmp_path)).get_concurrency_config().run_queue_config.tag_concurrency_limits
    (limit,) = [limit for limit in limits if limit["key"] in job.tags]
    assert limit["limit"] == 1


def _failure_metadata(result) -> dict:
    (event,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    return event.step_failure_data.user_failure_data.metadata


def test_batch_run_ingests_the_good_sequences_and_fails_at_the_end_naming_the_bad_one(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    write_sequence(data, GOOD, n_frames=24, seed=0, nphm_meshes=True)
    write_sequence(data, OTHER, n_frames=24, seed=1, flame=False, nphm_meshes=False)
    write_sequence(data, BAD, n_frames=24, seed=2, nphm_meshes=False)
    np.savez(data / BAD / "nphm_tracking" / "nphm_expressions" / "frame_0003.npz", other=np.zeros(200, np.float32))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml())
    instance = DagsterInstance.from_config(str(home))  # persistent: the pool's worker process shares it
    keys = [BAD, GOOD, OTHER]
    instance.add_dynamic_partitions("sequences", keys)  # what the sensor's tick does before the run
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }

    result = _batch(instance, resources, keys, workers=2)
    assert not result.success  # failed at the end ...
    for key in (GOOD, OTHER):  # ... after the others were ingested
        assert key in instance.get_materialized_partitions(AssetKey("audio_features"))
    assert BAD not in instance.get_materialized_partitions(AssetKey("nphm_expressions"))
    assert SequenceStore(tmp_path / "store").sequences_with("audio_features") == [GOOD, OTHER]
    metadata = _failure_metadata(result)
    assert (metadata["ok"].value, metadata["failed"].value, metadata["unchanged"].value) == (2, 1, 0)
    rows = {line.split(" | ")[0].strip("| "): line for line in metadata["sequences"].value.splitlines()[2:]}
    assert set(rows) == set(keys)
    assert "**failed** | nphm_expressions" in rows[BAD] and f"{BAD}/nphm_tracking" in rows[BAD]
    assert "frame_0003.npz" in rows[BAD] and "| ok |" in rows[GOOD] and "| ok |" in rows[OTHER]

    # Every sequence is a real `ingest_sequence` run of its partition, tagged with the batch run.
    runs = instance.get_runs(RunsFilter(job_name="ingest_sequence"))
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(keys)
    assert {r.tags[BATCH_TAG] for r in runs} == {result.run_id}
    by_key = {r.tags["dagster/partition"]: r.status for r in runs}
    assert by_key == {GOOD: DagsterRunStatus.SUCCESS, OTHER: DagsterRunStatus.SUCCESS, BAD: DagsterRunStatus.FAILURE}
    assert all(r.run_config["ops"]["audio_features"] == DRIFT["ops"]["audio_features"] for r in runs)
    lines = [record.user_message for record in instance.all_logs(result.run_id)]  # the op's log, one line each
    assert any(f"{GOOD}: ok" in line for line in lines) and any(
        f"{BAD}: FAILED nphm_expressions" in line for line in lines
    )

    # Again, with the bad one fixed and another folder gone: unchanged ones launch no run.
    write_sequence(tmp_path / "fixed", BAD, n_frames=24, seed=2, nphm_meshes=False)
    shutil.rmtree(data / BAD)
    shutil.move(tmp_path / "fixed" / BAD, data / BAD)
    shutil.rmtree(data / OTHER)
    again = _batch(instance, resources, keys, workers=1)
    assert again.success
    (output,) = [e for e in again.all_events if e.event_type == DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert (metadata["ok"].value, metadata["unchanged"].value, metadata["skipped"].value) == (1, 1, 1)
    assert f"| {OTHER} | skipped |" in metadata["sequences"].value
    assert len(instance.get_runs(RunsFilter(job_name="ingest_sequence"))) == 4  # only BAD ran again


def test_batch_refuses_real_data_with_the_demo_encoder_before_any_run(tmp_path, monkeypatch):
    from pipelines.settings import default_encoder_path

    monkeypatch.delenv("FACETALK_AUDIO_ENCODER", raising=False)
    data = tmp_path / "data"
    write_sequence(data, GOOD, n_frames=24, seed=0, nphm_meshes=False)  # no demo marker: a user's data
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sequences", [GOOD])
    resources = {
        "dataset": DatasetResource(root=str(data)),
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(default_encoder_path()), create_demo_if_missing=True),
    }
    result = _batch(instance, resources, [GOOD], workers=1)
    assert not result.success
    (event,) = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    message = event.step_failure_data.user_failure_data.description
    assert str(data) in message and "FACETALK_AUDIO_ENCODER" in message and "allow_random_encoder" in message
    assert not instance.get_runs(RunsFilter(job_name="ingest_sequence"))  # refused before any sequence ran
