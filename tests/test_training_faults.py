"""SIGKILL during training: run by hand, a re-run resumes from the last checkpoint with the step count
continuing; launched by the model asset through Dagster Pipes, the asset fails with what happened and the
published model stays."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from dagster import DagsterEventType, materialize

from models.config import load_config, save_config
from ops.demo.synthetic_segments import write_synthetic_segment_store
from pipelines.assets.training import facetalk_model
from pipelines.runner import failure_messages
from pipelines.settings import PROJECT_ROOT
from tests.training_data import ingest_for_training, step_log_messages

MAX_STEPS = 120


@pytest.mark.slow
def test_training_killed_then_resumed_continues_the_step_count(tmp_path):
    segments = write_synthetic_segment_store(
        tmp_path / "segments", n_train=64, n_val=16, segment_frames=24, audio_dim=32
    )
    config = load_config(PROJECT_ROOT / "configs" / "tiny.yaml").replace(
        model={"audio_dim": 32}, train={"max_steps": MAX_STEPS, "val_every": 20, "batch_size": 8}
    )
    save_config(config, tmp_path / "config.yaml")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "models.train",
        "-c",
        str(tmp_path / "config.yaml"),
        "--segments",
        str(segments),
        "--out",
        str(out),
    ]

    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            checkpoints = list(out.glob("runs/*/checkpoints/last.ckpt"))
            if checkpoints:
                step = torch.load(checkpoints[0], map_location="cpu", weights_only=True)["global_step"]
                if step >= 40:  # at least two validations in: kill it mid-run
                    process.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    assert killed_at is not None and killed_at < MAX_STEPS, "training was not killed mid-run"
    assert not (out / "model.ckpt").exists()  # nothing published by the killed run

    resumed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "training_result.json").read_text())
    assert result["resumed_from"] and Path(result["resumed_from"]).name == "last.ckpt"
    assert result["steps"] == MAX_STEPS  # the step count continued from the killed run's checkpoint
    final = torch.load(out / "model.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] >= killed_at


def _training_children() -> list[int]:
    """PIDs of this process's children running `python -m pipelines.training_process`."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        if ppid == me and b"pipelines.training_process" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _kill_each_new_run_at_its_first_checkpoint(runs: Path, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the training process whenever a run directory it started gets its first `last.ckpt`."""
    seen = {p.parent.parent for p in runs.glob("*/checkpoints/last.ckpt")}
    while not stop.is_set():
        for checkpoint in runs.glob("*/checkpoints/last.ckpt"):
            if checkpoint.parent.parent not in seen:
                seen.add(checkpoint.parent.parent)
                for pid in _training_children():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_training_process_fails_the_asset_and_keeps_the_published_model(tmp_path, tiny_encoder_dir):
    """Through Dagster Pipes: the training process is SIGKILLed mid-run, twice (the asset's retry, which
    resumed from the first one's checkpoint, too). The asset fails saying so, the step's process (here: the
    test itself, as a code server would be) lives on, and the model published before is untouched."""
    instance, resources, _ = ingest_for_training(tmp_path, tiny_encoder_dir)
    first = materialize(
        [facetalk_model],
        resources=resources,
        instance=instance,
        run_config={"ops": {"facetalk_model": {"config": {"max_steps": 12, "batch_size": 4}}}},
    )
    out = tmp_path / "store" / "checkpoints" / "facetalk_model"
    published = (out / "model.ckpt").read_bytes(), (out / "training_result.json").read_bytes()

    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_each_new_run_at_its_first_checkpoint, args=(out / "runs", stop, killed))
    watcher.start()
    try:
        long_run = {"ops": {"facetalk_model": {"config": {"max_steps": 400, "batch_size": 4}}}}
        failed = materialize(
            [facetalk_model], resources=resources, instance=instance, run_config=long_run, raise_on_error=False
        )
    finally:
        stop.set()
        watcher.join()
    assert first.success and not failed.success and len(killed) == 2
    (message,) = failure_messages(failed)
    assert message.startswith("facetalk_model: ") and message.endswith(
        "TrainingProcessError: facetalk_model training process was killed by SIGKILL (exit code -9) "
        "before it reported an error"
    ), message
    retries = [e for e in failed.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 1  # a killed process is retried: the retry resumed from the killed run's checkpoint
    logs = step_log_messages(instance, failed.run_id, "facetalk_model")
    # the retry resumed from the killed run's first checkpoint (step val_every of the config), past the
    # first model's 12 steps
    resumed = [int(m.group(1)) for line in logs if (m := re.match(r"resuming from .* at step (\d+)$", line))]
    assert any(step > 12 for step in resumed), logs
    assert ((out / "model.ckpt").read_bytes(), (out / "training_result.json").read_bytes()) == published
    assert _training_children() == []
