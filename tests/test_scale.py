"""Scale: 2,000 sequence partitions through the sensor, and the gpu pool serializing training."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, build_sensor_context, materialize

from pipelines.assets.ingestion import per_sequence_assets
from pipelines.instance_config import instance_yaml
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.sensors import MAX_NEW_PER_TICK, sequence_folder_sensor
from tests.builders import write_sequence

REPO = Path(__file__).resolve().parents[1]
N_SEQUENCES = 2000


def test_sensor_registers_2000_partitions_and_work_runs_for_some(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    real = ["ID0000_SEN00", "ID0001_SEN00", "ID0002_SEN00"]
    for key in real:
        write_sequence(data, key, n_frames=48, seed=int(key[2:6]), nphm_meshes=False)
    for index in range(3, N_SEQUENCES):
        (data / f"ID{index:04d}_SEN00").mkdir()
    instance = DagsterInstance.ephemeral()
    dataset = DatasetResource(root=str(data))
    sensor_resources = {"dataset": dataset, "store": StoreResource(root=str(tmp_path / "store"))}

    cursor, requested, tick_seconds = None, [], []
    started = time.perf_counter()
    while True:
        tick_start = time.perf_counter()
        result = sequence_folder_sensor(
            build_sensor_context(instance=instance, cursor=cursor, resources=sensor_resources)
        )
        tick_seconds.append(time.perf_counter() - tick_start)
        if not getattr(result, "run_requests", None):
            break
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        (request,) = result.run_requests  # one batch run per tick
        requested += request.run_config["ops"]["ingest_batch"]["config"]["keys"]
        cursor = result.cursor
    total = time.perf_counter() - started
    print(
        f"{N_SEQUENCES} partitions in {len(tick_seconds)} ticks, {total:.2f} s; slowest tick {max(tick_seconds):.3f} s"
    )
    assert len(requested) == len(set(requested)) == N_SEQUENCES
    assert len(tick_seconds) == N_SEQUENCES // MAX_NEW_PER_TICK + 1
    assert max(tick_seconds) < 10 and total < 60
    assert len(instance.get_dynamic_partitions("sequences")) == N_SEQUENCES

    resources = {
        "dataset": dataset,
        "store": StoreResource(root=str(tmp_path / "store")),
        "audio_encoder": AudioEncoderResource(path=str(tiny_encoder_dir)),
    }
    for key in real:
        assert materialize(per_sequence_assets, partition_key=key, instance=instance, resources=resources).success
    empty = materialize(
        per_sequence_assets, partition_key="ID0500_SEN00", instance=instance, resources=resources, raise_on_error=False
    )
    assert not empty.success  # an empty folder fails with its own message, the others are unaffected


@pytest.mark.slow
def test_gpu_pool_runs_training_one_at_a_time(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    for identity in range(5):
        write_sequence(data, f"ID{identity}_SEN01", n_frames=96, seed=identity, nphm_meshes=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml())  # the instance config the project ships
    DagsterInstance.from_config(str(home))  # create the schema before two processes share it
    env = dict(
        os.environ,
        FACETALK_DATA_ROOT=str(data),
        FACETALK_STORE=str(tmp_path / "store"),
        FACETALK_AUDIO_ENCODER=str(tiny_encoder_dir),
        DAGSTER_HOME=str(home),
        PYTHONPATH=str(REPO),
    )
    cli = [sys.executable, "-m", "pipelines.cli"]
    subprocess.run([*cli, "ingest"], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    segments = tmp_path / "segments.yaml"
    segments.write_text("ops:\n  training_segments:\n    config:\n      segment_frames: 24\n      stride: 12\n")
    subprocess.run(
        [*cli, "segments", "-c", str(segments)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600
    )

    config = tmp_path / "train.yaml"
    config.write_text("ops:\n  facetalk_model:\n    config:\n      max_steps: 10\n      batch_size: 4\n")
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "pipelines",
        "--select",
        "facetalk_model",
        "-c",
        str(config),
    ]
    first = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The second launch waits until the first training step holds the slot: two claims within ~0.1 s
    # of each other can both succeed on SQLite (Dagster's claim is not atomic there; PostgreSQL's is),
    # and this test is about the pool holding a second training back, not about that race.
    _wait_for_training_step(DagsterInstance.from_config(str(home)), first)
    second = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for process in (first, second):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    instance = DagsterInstance.from_config(str(home))
    spans = []
    for run in instance.get_runs():
        if "facetalk_model" not in str(run.asset_selection):
            continue
        start = [e.timestamp for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)]
        end = [e.timestamp for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS)]
        spans.append((min(start), max(end)))
    assert len(spans) == 2
    (_a_start, a_end), (b_start, _b_end) = sorted(spans)
    assert a_end <= b_start, f"training steps overlapped: {spans}"


def _wait_for_training_step(instance: DagsterInstance, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for run in instance.get_runs():
            if "facetalk_model" in str(run.asset_selection) and instance.all_logs(
                run.run_id, of_type=DagsterEventType.STEP_START
            ):
                return
        time.sleep(0.2)
    raise AssertionError("the first training run never started its step")
