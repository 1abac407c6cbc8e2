"""The whole store on S3 (moto's server on loopback): ingest -> segments -> both models -> evaluation ->
renders through Dagster with `StoreResource(root="s3://...")`, equal to the same run on a local store.

Then: training resumes from the remote `last.ckpt`, `facetalk animate -m s3://.../model.ckpt` works,
and what cannot be remote (the dataset root, animate's output) is refused in one line before any work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dagster import materialize

from models.config import load_config, save_config
from models.train import latest_checkpoint
from ops.demo.synthetic_segments import write_synthetic_segment_store
from pipelines.assets.evaluation import BASELINE_CHECK, evaluation_metrics, evaluation_renders
from pipelines.assets.segments import training_segments
from pipelines.assets.training import facetalk_model, flame_model
from pipelines.cli import main as facetalk
from pipelines.resources import DatasetResource, default_resources
from pipelines.runner import failure_messages
from pipelines.settings import PROJECT_ROOT
from storage.atomic import completion_marker
from storage.location import StoreLocationError, is_remote, store_path
from storage.transfer import local_copy
from tests.builders import write_sequence
from tests.dagster_ingest import ingest_every_partition

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KEYS = [f"ID{identity}_SEN01" for identity in range(5)]  # identities split into train, val and test
TRAIN = {"max_steps": 4, "batch_size": 4}
RUN_CONFIG = {
    "ops": {
        "training_segments": {"config": {"segment_frames": 24, "stride": 12}},
        "facetalk_model": {"config": TRAIN},
        "flame_model": {"config": TRAIN},
        "evaluation_metrics": {"config": {"steps": 2, "n_samples": 2}},
        "evaluation_renders": {
            "config": {"n_sequences": 1, "resolution": 16, "video_size": 64, "max_seconds": 1.0, "steps": 2}
        },
    }
}
RETRAIN = [training_segments, facetalk_model, flame_model, evaluation_metrics, evaluation_renders]


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "data"
    for seed, key in enumerate(KEYS):
        write_sequence(root, key, n_frames=72, seed=seed, nphm_meshes=seed == 3)  # ID3: the test identity
    (root / "_meta").mkdir()
    # Lip / upper-face vertex sets of the builders' grid mesh, so the FLAME model is evaluated too.
    (root / "_meta" / "regions.json").write_text(
        json.dumps({"lip": [0, 1, 2, 3], "upper_lip": [0, 1], "lower_lip": [2, 3], "upper_face": [10, 11, 12]})
    )
    return root


def _metadata(result) -> dict[str, dict]:
    return {
        event.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def _run_everything(dataset: Path, store_root: str, encoder: Path) -> dict[str, dict]:
    """Every sequence (one run per partition, as `facetalk ingest` does), then the retrain assets."""
    resources, instance = ingest_every_partition(dataset, store_root, encoder, KEYS)
    result = materialize(RETRAIN, resources=resources, instance=instance, run_config=RUN_CONFIG, raise_on_error=False)
    # A 4-step model may lose to the audio-free baseline: the blocking check may fail, nothing else.
    failed = {e.step_key: e.event_specific_data.error.message for e in result.get_step_failure_events()}
    assert set(failed) <= {"evaluation_metrics"}, failure_messages(result)
    assert all(BASELINE_CHECK in message for message in failed.values()), failed
    metadata = _metadata(result)
    assert set(metadata) == {a.key.to_user_string() for a in RETRAIN}, sorted(metadata)
    return metadata


def _state_dict(path) -> dict[str, torch.Tensor]:
    with store_path(path).open("rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=True)["state_dict"]


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("seconds", "wall_time_s")}
    return value


def test_whole_pipeline_on_s3_equals_local_store(dataset, tmp_path, s3_root, tiny_encoder_dir, one_torch_thread):
    local_root = tmp_path / "store"
    local = _run_everything(dataset, str(local_root), tiny_encoder_dir)
    remote = _run_everything(dataset, s3_root, tiny_encoder_dir)
    root = store_path(s3_root)
    assert is_remote(root)

    for name in ("facetalk_model", "flame_model"):
        published = root / "checkpoints" / name
        assert remote[name]["checkpoint"] == str(published / "model.ckpt")
        run_dir = store_path(remote[name]["run_dir"])
        assert is_remote(run_dir) and run_dir.parent == published / "runs"
        for part in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "history.json", "result.json", "config.yaml"):
            assert (run_dir / part).is_file(), part
        assert (published / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
        # Deterministic on CPU: the same losses and the same weights as on the local store.
        result = json.loads((published / "training_result.json").read_text())
        expected = json.loads((local_root / "checkpoints" / name / "training_result.json").read_text())
        assert result["loss_history"] == expected["loss_history"] and result["steps"] == expected["steps"] == 4
        assert result["model_checkpoint"] == str(published / "model.ckpt")
        ours, theirs = (
            _state_dict(published / "model.ckpt"),
            _state_dict(local_root / "checkpoints" / name / "model.ckpt"),
        )
        assert sorted(ours) == sorted(theirs)
        for key, tensor in theirs.items():
            torch.testing.assert_close(ours[key], tensor, rtol=0, atol=0, msg=key)

    metrics = json.loads((root / "metrics" / "evaluation.json").read_text())
    expected = json.loads((local_root / "metrics" / "evaluation.json").read_text())
    assert set(metrics["tables"]) == {"nphm", "flame"}
    assert _without_timings(metrics) == _without_timings(expected)
    assert remote["evaluation_metrics"]["metrics_json"] == str(root / "metrics" / "evaluation.json")

    renders = root / "renders"
    assert completion_marker(renders).exists()
    videos = remote["evaluation_renders"]["videos"]
    assert [Path(v).name for v in videos] == [Path(v).name for v in local["evaluation_renders"]["videos"]] != []
    for video in videos:
        assert video.startswith(f"{s3_root}/renders/")
        remote_bytes, local_bytes = (
            store_path(video).read_bytes(),
            (local_root / "renders" / Path(video).name).read_bytes(),
        )
        assert len(remote_bytes) > 1000 and remote_bytes == local_bytes
    assert "data:image/png;base64," in remote["evaluation_renders"]["preview"]

    # Training resumes from the newest remote last.ckpt (written during the run, not only at its end).
    resources = default_resources(data_root=dataset, store=s3_root, audio_encoder=tiny_encoder_dir)
    more = {"ops": {"facetalk_model": {"config": {**TRAIN, "max_steps": 6}}}}
    resumed = materialize([facetalk_model], resources=resources, run_config=more, raise_on_error=False)
    assert resumed.success, failure_messages(resumed)
    meta = _metadata(resumed)["facetalk_model"]
    assert meta["resumed_from"] == str(store_path(remote["facetalk_model"]["run_dir"]) / "checkpoints" / "last.ckpt")
    assert meta["steps"] == 6

    # `facetalk animate` with the published model on S3.
    out = tmp_path / "animated" / "talk.mp4"
    audio = dataset / KEYS[0] / "audio" / "cleaned_audio.wav"
    argv = ["animate", str(audio), "-o", str(out), "-m", f"{s3_root}/checkpoints/facetalk_model/model.ckpt"]
    options = ["--encoder", str(tiny_encoder_dir), "--resolution", "16", "--steps", "2", "--size", "64"]
    assert facetalk([*argv, *options]) == 0
    assert out.stat().st_size > 1000 and np.load(out.with_suffix(".npz"))["expression"].shape[1] == 200


def test_what_cannot_be_remote_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(StoreLocationError, match="dataset root") as refused:
        default_resources(data_root="s3://bucket/data", store=str(tmp_path / "store"))
    assert "\n" not in str(refused.value)
    with pytest.raises(StoreLocationError, match="DatasetResource.root"):
        _ = DatasetResource(root="s3://bucket/data").path

    assert facetalk(["animate", "speech.wav", "-o", "s3://bucket/out.mp4", "-m", str(tmp_path / "m.ckpt")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--out must be a local path" in error


def test_training_killed_on_s3_resumes_from_the_remote_last_checkpoint(tmp_path, s3_root):
    """SIGKILL mid-run (no cleanup code runs): the `last.ckpt` uploaded at the last validation is
    on S3, nothing is published, and the re-run (another process, as on another machine) resumes."""
    segments = write_synthetic_segment_store(
        tmp_path / "segments", n_train=64, n_val=16, segment_frames=24, audio_dim=32
    )
    config = load_config(PROJECT_ROOT / "configs" / "tiny.yaml").replace(
        model={"audio_dim": 32}, train={"max_steps": 80, "val_every": 10, "batch_size": 8}
    )
    save_config(config, tmp_path / "config.yaml")
    out = f"{s3_root}/checkpoints/facetalk_model"
    command = [sys.executable, "-m", "models.train", "-c", str(tmp_path / "config.yaml"), "--segments", str(segments)]
    command += ["--out", out]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            last = latest_checkpoint(out)
            if last is not None:
                with local_copy(last) as local:
                    step = torch.load(local, map_location="cpu", weights_only=True)["global_step"]
                if step >= 20:  # two validations uploaded
                    process.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.5)
    finally:
        process.kill()
        process.wait()
    assert killed_at is not None, "training was not killed mid-run"
    assert not (store_path(out) / "model.ckpt").exists()

    resumed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((store_path(out) / "training_result.json").read_text())
    assert result["resumed_from"].startswith(f"{out}/runs/") and result["resumed_from"].endswith("/last.ckpt")
    assert result["steps"] == 80 and result["run_dir"].startswith(f"{out}/runs/")
    assert (store_path(result["run_dir"]) / "result.json").is_file()
    assert _state_dict(f"{out}/model.ckpt")
