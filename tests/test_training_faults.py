"""SIGKILL during training, then re-run: training resumes from the last checkpoint, the step count continuing."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.config import load_config, save_config
from ops.demo.synthetic_segments import write_synthetic_segment_store
from pipelines.settings import PROJECT_ROOT

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
