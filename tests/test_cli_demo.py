"""`facetalk demo` end to end as a subprocess, shrunk by a run config: it ends with a compact summary
(metrics table, MP4 paths, how to open the UI), prints no encoded image, and its runs carry job names."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance

from tests.test_cli_usage import REPO, facetalk

pytestmark = pytest.mark.slow

SMALL_RETRAIN = """\
ops:
  training_segments: {config: {segment_frames: 24, stride: 12, val_fraction: 0.34, test_fraction: 0.34}}
  facetalk_model: {config: {max_steps: 4, batch_size: 2}}
  flame_model: {config: {max_steps: 4, batch_size: 2}}
  evaluation_metrics: {config: {steps: 4, n_samples: 1}}
  evaluation_renders: {config: {n_sequences: 1, resolution: 16, video_size: 64, steps: 4, max_seconds: 1.0}}
"""


def test_demo_ends_with_metrics_videos_and_the_way_to_the_ui(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    made = facetalk(tmp_path, "demo-data", str(data), "--identities", "3", "--sequences", "1", "--seconds", "2",
                    "--mesh-resolution", "16")  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = tmp_path / "retrain.yaml"
    config.write_text(SMALL_RETRAIN)
    store = tmp_path / "store"
    demo = facetalk(tmp_path, "demo", "--data-root", str(data), "--store", str(store), "--encoder",
                    str(tiny_encoder_dir), "--workers", "1", "-c", str(config))  # fmt: skip
    out = demo.stdout
    # 4 training steps need not beat the audio-free baseline (a blocking check): the summary comes anyway.
    assert demo.returncode in (0, 1), out + demo.stderr
    if demo.returncode == 1:
        assert "model_beats_audio_free_baseline" in demo.stderr, demo.stderr
    assert "data:image" not in out + demo.stderr and "base64" not in out
    summary = out[out.index("demo finished in") :].splitlines()
    print("\n".join(summary))  # shown with -s, or when the test fails
    assert len(summary) < 30, "\n".join(summary)
    assert any(line.split()[:1] == ["model"] for line in summary), "\n".join(summary)  # a metrics table row
    videos = [Path(line.removeprefix("talking head: ")) for line in summary if line.startswith("talking head: ")]
    assert videos and all(v.suffix == ".mp4" and v.is_file() for v in videos)
    assert f"`make ui` in {REPO}" in summary[-1]

    instance = DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    assert {run.job_name for run in instance.get_runs()} == {"ingest_sequence", "retrain"}
