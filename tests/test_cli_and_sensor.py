"""The command line (real subprocesses, real Dagster instance on disk) and the partition sensor."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance, RunRequest, SkipReason, build_sensor_context

from pipelines.resources import DatasetResource, StoreResource
from pipelines.sensors import MAX_NEW_PER_TICK, sequence_folder_sensor
from storage.segments import SegmentReader, current_segments_dir
from tests.builders import write_sequence

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path, data_root, encoder):
    env = dict(os.environ)
    env.update(
        FACETALK_DATA_ROOT=str(data_root),
        FACETALK_STORE=str(tmp_path / "store"),
        FACETALK_AUDIO_ENCODER=str(encoder),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        PYTHONPATH=str(REPO),
    )
    return env


def test_facetalk_ingest_then_dagster_cli_materializes_segments(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    for identity in range(3):
        write_sequence(data, f"ID{identity}_SEN01", n_frames=50, seed=identity, flame=identity != 1, nphm_meshes=False)
    (data / "ID..bad_x").mkdir()  # reported, not fatal
    env = _env(tmp_path, data, tiny_encoder_dir)
    facetalk = [sys.executable, "-m", "pipelines.cli"]

    ingest = subprocess.run([*facetalk, "ingest"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    assert "3 sequences" in ingest.stdout and "[3/3] ID" in ingest.stdout and "ID2_SEN01: ok" in ingest.stdout
    assert (
        "ID..bad_x" in ingest.stdout and "3 sequences: 3 ok, 0 unchanged, 0 failed; 1 folders skipped" in ingest.stdout
    )

    config = tmp_path / "segments.yaml"
    config.write_text("ops:\n  training_segments:\n    config:\n      segment_frames: 24\n      stride: 24\n")
    materialize = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines", "--select", "training_segments", "-c", str(config)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert materialize.returncode == 0, materialize.stderr[-3000:]
    reader = SegmentReader(current_segments_dir(tmp_path / "store"))
    assert len(reader) == 3 * 2  # 50 frames -> windows at 0 and 24
    # FLAME per sequence: ID1 has none, so only the others' segments carry it.
    flame_sequences = {reader.manifest.column("sequence")[int(i)].as_py() for i in reader.indices(flame=True)}
    assert reader.has("flame_offsets") and flame_sequences == {"ID0_SEN01", "ID2_SEN01"}

    segments = subprocess.run(
        [*facetalk, "segments", "-c", str(config)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert segments.returncode == 0, segments.stdout + segments.stderr
    assert "materialized training_segments:" in segments.stdout and "n_segments: 6" in segments.stdout

    # Every run went through the persistent instance, so the UI lists them, under the job's name.
    instance = DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    assert sorted(run.job_name for run in instance.get_runs()) == [
        "__ASSET_JOB",  # `dagster asset materialize`
        "build_training_segments",
        *["ingest_sequence"] * 3,
    ]
    assert set(instance.get_dynamic_partitions("sequences")) == {"ID0_SEN01", "ID1_SEN01", "ID2_SEN01"}
    # Absent optional inputs leave their partitions missing, and audio_features still ran for them.
    assert instance.get_materialized_partitions(AssetKey("flame_vertices")) == {"ID0_SEN01", "ID2_SEN01"}
    assert instance.get_materialized_partitions(AssetKey("nphm_meshes")) == set()
    assert len(instance.get_materialized_partitions(AssetKey("audio_features"))) == 3

    again = subprocess.run([*facetalk, "ingest"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "3 sequences: 0 ok, 3 unchanged, 0 failed" in again.stdout, again.stdout  # absent is not stale


def test_facetalk_cli_reports_missing_root(tmp_path):
    env = _env(tmp_path, tmp_path / "nowhere", tmp_path / "enc")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ingest"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and "nowhere" in result.stderr and "does not exist" in result.stderr


def test_sensor_registers_new_sequences_in_bounded_batches(tmp_path):
    data = tmp_path / "data"
    for index in range(MAX_NEW_PER_TICK + 5):
        (data / f"ID{index:04d}_SEN01").mkdir(parents=True)
    (data / "bad name_x").mkdir()
    instance = DagsterInstance.ephemeral()
    dataset = DatasetResource(root=str(data))

    def tick(cursor):
        resources = {"dataset": dataset, "store": StoreResource(root=str(tmp_path / "store"))}
        context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = sequence_folder_sensor(context)
        for request in getattr(result, "dynamic_partitions_requests", None) or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    def batch(result) -> list[str]:  # ONE run of the batch job per tick, listing the tick's new keys
        (request,) = result.run_requests
        assert isinstance(request, RunRequest) and request.job_name in (None, "ingest_new_sequences")
        assert request.partition_key is None and request.run_key.startswith("ingest-batch:")
        return request.run_config["ops"]["ingest_batch"]["config"]["keys"]

    first = tick(None)
    assert batch(first) == [f"ID{i:04d}_SEN01" for i in range(MAX_NEW_PER_TICK)]
    second = tick(first.cursor)
    assert batch(second) == [f"ID{i:04d}_SEN01" for i in range(MAX_NEW_PER_TICK, MAX_NEW_PER_TICK + 5)]
    assert first.run_requests[0].run_key != second.run_requests[0].run_key
    third = tick(second.cursor)
    assert isinstance(third, SkipReason)  # nothing new: no storm of runs
    (data / "ID9999_NEW").mkdir()
    fourth = tick(second.cursor)
    assert batch(fourth) == ["ID9999_NEW"]
    assert len(instance.get_dynamic_partitions("sequences")) == MAX_NEW_PER_TICK + 6
