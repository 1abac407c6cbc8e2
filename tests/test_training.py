"""Training end to end on a tiny synthetic segment store: loss goes down, resume continues the step
count, the published model loads and samples, and bad inputs fail with clear messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    load_motion_model,
)
from models.config import ExperimentConfig, config_from_dict
from models.data import SegmentDataModule, SegmentDataset, _already_batched
from models.motion_codec import fit_pca_basis
from models.train import MODEL_FILE, RESULT_FILE, resolve_precision, train
from ops.demo.synthetic_segments import write_synthetic_segment_store
from storage.segments import SegmentStoreError

pytestmark = pytest.mark.slow

AUDIO_DIM, FRAMES = 16, 24


def expected_device() -> str:
    """Where `accelerator: auto` trains on this machine (the first GPU when there is one)."""
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def tiny_config(**train_overrides) -> ExperimentConfig:
    return config_from_dict(
        {
            "model": {
                "motion_dim": 200,
                "audio_dim": AUDIO_DIM,
                "width": 32,
                "layers": 1,
                "heads": 2,
                "ff": 64,
                "dropout": 0.0,
            },
            "diffusion": {"scale_augment": [0.9, 1.1], "guidance": 2.0},
            "train": {
                "batch_size": 8,
                "lr": 3e-3,
                "weight_decay": 0.0,
                "warmup_steps": 5,
                "max_steps": 40,
                "val_every": 10,
                "val_batches": 2,
                "ema_decay": 0.9,
                "num_workers": 0,
                "log_every": 10,
                "cpu_threads": 1,
                **train_overrides,
            },
        }
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_synthetic_segment_store(
        tmp_path_factory.mktemp("seg") / "v1", n_train=32, n_val=8, segment_frames=FRAMES, audio_dim=AUDIO_DIM
    )


@pytest.fixture(scope="module")
def first_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    messages: list[str] = []
    return out, train(tiny_config(), store, out, progress=messages.append), messages


def test_training_reduces_loss_and_publishes_a_model(first_run):
    out, result, messages = first_run
    assert result.steps == 40
    val = [loss for _, loss in result.loss_history["val"]]
    assert len(val) == 4 and val[-1] < val[0]
    assert result.best_val_loss == pytest.approx(min(val))
    assert result.device == expected_device() and result.precision == resolve_precision("auto", "auto")
    assert result.data_path.startswith(f"frames on {expected_device()}")  # a tiny store fits any device
    assert Path(result.best_checkpoint).is_file() and Path(result.last_checkpoint).is_file()
    assert (out / MODEL_FILE).is_file() and (out / RESULT_FILE).is_file()
    assert (Path(result.run_dir) / "logs" / "csv" / "version_0" / "metrics.csv").is_file()
    assert any("val_loss" in m for m in messages) and any("steps/s" in m for m in messages)
    assert f"batches: {result.data_path}" in messages
    assert result.segments_per_s > 0


def test_published_model_samples_motion(first_run, store):
    out, _, _ = first_run
    model = load_motion_model(out / MODEL_FILE, expected_config=tiny_config())
    assert model.meta.segment_frames == FRAMES and model.meta.fps == 24
    audio = np.random.default_rng(0).standard_normal((60, AUDIO_DIM)).astype(np.float32)
    motion = model.generate(audio, steps=5, seed=0)
    assert motion.shape == (60, 200) and np.isfinite(motion).all()
    # normalisation statistics travel with the model
    assert not torch.allclose(model.codec.std, torch.ones(200))


def test_resume_continues_the_step_count(first_run, store):
    out, first, _ = first_run
    before = (out / MODEL_FILE).read_bytes()
    second = train(tiny_config(max_steps=80), store, out, resume=True)
    assert second.steps == 80
    assert second.resumed_from == first.last_checkpoint
    assert second.run_dir != first.run_dir
    assert [s for s, _ in second.loss_history["val"]] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert (out / MODEL_FILE).read_bytes() != before
    ckpt = torch.load(second.last_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 80


def test_incompatible_checkpoint_is_refused_and_previous_model_survives(first_run, store):
    out, _, _ = first_run
    wider = config_from_dict({**tiny_config().to_dict(), "model": {**tiny_config().to_dict()["model"], "width": 48}})
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.width: checkpoint has 32, config has 48"):
        train(wider, store, out, resume=True)
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.width"):
        load_motion_model(out / MODEL_FILE, expected_config=wider)
    assert load_motion_model(out / MODEL_FILE).generate(np.zeros((10, AUDIO_DIM), np.float32), steps=2).shape == (
        10,
        200,
    )


def test_missing_and_unreadable_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_motion_model(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt.*is not a model checkpoint \(not a PyTorch file\)"):
        load_motion_model(garbage)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04 cut short")  # a zip's start: a checkpoint, damaged
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt.*unreadable"):
        load_motion_model(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a FaceTalk"):
        load_motion_model(foreign)


def test_store_problems_fail_before_training(tmp_path):
    with pytest.raises(SegmentStoreError, match="does not exist"):
        train(tiny_config(), tmp_path / "missing", tmp_path / "out")
    empty = write_synthetic_segment_store(
        tmp_path / "empty", n_train=0, n_val=0, segment_frames=FRAMES, audio_dim=AUDIO_DIM
    )
    with pytest.raises(SegmentStoreError, match=r"empty"):
        train(tiny_config(), empty, tmp_path / "out")
    small = write_synthetic_segment_store(
        tmp_path / "small", n_train=5, n_val=2, segment_frames=FRAMES, audio_dim=AUDIO_DIM
    )
    with pytest.raises(SegmentStoreError, match=r"5 train segments, fewer than one batch"):
        train(tiny_config(), small, tmp_path / "out")
    no_val = write_synthetic_segment_store(
        tmp_path / "noval", n_train=8, n_val=0, segment_frames=FRAMES, audio_dim=AUDIO_DIM
    )
    with pytest.raises(SegmentStoreError, match=r"no 'val' segments"):
        train(tiny_config(), no_val, tmp_path / "out")
    wide = write_synthetic_segment_store(tmp_path / "wide", n_train=8, n_val=2, segment_frames=FRAMES, audio_dim=24)
    with pytest.raises(SegmentStoreError, match=r"24-d, config model.audio_dim is 16"):
        train(tiny_config(), wide, tmp_path / "out")
    with pytest.raises(SegmentStoreError, match=r"no 'flame_offsets'"):
        flame = config_from_dict({**tiny_config().to_dict(), "data": {"variant": "flame", "pca_components": 200}})
        train(flame, wide, tmp_path / "out")
    assert not (tmp_path / "out" / MODEL_FILE).exists()


def test_lazy_reads_match_preloaded_and_work_in_worker_processes(store):
    cfg = tiny_config()
    preloaded = SegmentDataModule(store, cfg)
    preloaded.prepare()
    lazy = SegmentDataModule(store, config_from_dict({**cfg.to_dict(), "data": {"preload_max_mb": 0}}))
    lazy.prepare()
    assert not lazy.preloaded and preloaded.preloaded
    np.testing.assert_allclose(lazy.mean, preloaded.mean, rtol=1e-5)
    a, b = preloaded.train_dataset.__getitems__([3, 0, 7]), lazy.train_dataset.__getitems__([3, 0, 7])
    assert a["motion"].shape == (3, FRAMES, 200) and a["audio"].shape == (3, FRAMES, AUDIO_DIM)
    torch.testing.assert_close(a["motion"], b["motion"])
    torch.testing.assert_close(a["audio"], b["audio"])
    assert isinstance(lazy.train_dataset, SegmentDataset) and lazy.train_dataset.motion is None
    loader = DataLoader(lazy.train_dataset, batch_size=8, num_workers=2, collate_fn=_already_batched)
    batches = list(loader)
    assert sum(len(batch["motion"]) for batch in batches) == 32


def test_pca_basis_recovers_a_low_rank_motion_space():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy((rng.standard_normal((500, 16)) @ rng.standard_normal((16, 300))).astype(np.float32))
    basis, energy = fit_pca_basis(frames, 16)
    torch.testing.assert_close(basis @ basis.T, torch.eye(16), atol=1e-4, rtol=0)
    reconstructed = (frames @ basis.T) @ basis
    assert (reconstructed - frames).abs().max() < 1e-3 * frames.abs().max()
    assert energy.sum().item() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="at least 400 frames"):
        fit_pca_basis(frames[:10], 400)


def test_flame_variant_trains_on_pca_codes_and_decodes_offsets(tmp_path):
    store = write_synthetic_segment_store(
        tmp_path / "seg", n_train=16, n_val=4, segment_frames=FRAMES, audio_dim=AUDIO_DIM, n_vertices=40
    )
    raw = tiny_config(max_steps=10, val_every=10).to_dict()
    raw["model"]["motion_dim"] = 16
    raw["data"] = {"variant": "flame", "pca_components": 16, "pca_fit_frames": 300}
    result = train(config_from_dict(raw), store, tmp_path / "out")
    assert result.steps == 10
    model = load_motion_model(tmp_path / "out" / MODEL_FILE)
    assert model.codec.uses_pca and model.codec.basis.shape == (16, 120)
    offsets = model.generate(np.zeros((30, AUDIO_DIM), np.float32), steps=3)
    assert offsets.shape == (30, 40, 3) and np.isfinite(offsets).all()


def test_a_resumed_run_that_gets_worse_publishes_the_earlier_best(tmp_path, store):
    """The second `facetalk demo` bug: a run resumed from last.ckpt published its own best even
    when every validation it made was worse than the earlier run's best."""
    out = tmp_path / "out"
    messages: list[str] = []
    first = train(tiny_config(max_steps=30, compile=True), store, out, progress=messages.append)
    if not torch.cuda.is_available():  # compiling runs on CUDA only
        assert any("train.compile is off on CPU" in m for m in messages)
    first_best = Path(first.best_checkpoint).read_bytes()
    # The earlier run's tail went bad (as an overfitting or diverging run does): noise on its last weights.
    last = torch.load(first.last_checkpoint, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, value in last["state_dict"].items():
        if name.startswith(("model.denoiser.", "ema.shadow.")) and value.is_floating_point():
            value.add_(torch.randn(value.shape, generator=generator) * value.std().nan_to_num(0.1).clamp(min=0.1))
    torch.save(last, first.last_checkpoint)
    second = train(tiny_config(max_steps=50), store, out, resume=True)
    assert second.resumed_from == first.last_checkpoint
    resumed_vals = [v for s, v in second.loss_history["val"] if s > 30]
    assert len(resumed_vals) == 2 and min(resumed_vals) > first.best_val_loss  # the premise: it got worse
    assert second.best_val_loss == pytest.approx(first.best_val_loss)
    assert second.best_checkpoint == first.best_checkpoint
    assert (out / MODEL_FILE).read_bytes() == first_best
    # ... and the chain's best travels on: a third run resumed from the second still knows it.
    third = train(tiny_config(max_steps=60), store, out, resume=True)
    assert third.best_val_loss == pytest.approx(min(v for _, v in third.loss_history["val"]))
    assert third.best_val_loss <= first.best_val_loss


def test_device_batches_match_the_dataloader_and_shard_across_ranks(store):
    from models.device_data import DeviceBatches

    data = SegmentDataModule(store, tiny_config())
    data.prepare()
    data.use_device(expected_device())
    assert data.on_device
    val = data.val_dataloader()
    assert isinstance(val, DeviceBatches) and len(val) == 1
    batch = next(iter(val))
    reference = data.val_dataset.__getitems__(list(range(len(data.val_dataset))))
    assert batch["motion"].device.type == torch.device(expected_device()).type
    torch.testing.assert_close(batch["motion"].cpu(), reference["motion"])
    torch.testing.assert_close(batch["audio"].cpu(), reference["audio"])
    train_batches = data.train_dataloader()
    first, second = [torch.cat([b["motion"] for b in train_batches]) for _ in range(2)]
    assert len(train_batches) == 4 and first.shape == (32, FRAMES, 200)
    assert not torch.equal(first, second)  # a new permutation every epoch
    # two DDP ranks: disjoint halves of one epoch's permutation, equal batch counts
    ranks = []
    for rank in (0, 1):
        data.use_device(expected_device(), rank=rank, world_size=2)
        loader = data.train_dataloader()
        ranks.append(torch.cat([b["motion"] for b in loader]).flatten(1))
        assert len(loader) == 2
    together = torch.cat(ranks)
    assert torch.unique(together, dim=0).shape[0] == 32
    # a zero share of device memory streams through a DataLoader instead
    streaming = SegmentDataModule(store, tiny_config(device_data_fraction=0.0))
    streaming.prepare()
    streaming.use_device(expected_device())
    assert not streaming.on_device and isinstance(streaming.train_dataloader(), DataLoader)


def test_ddp_on_two_cpu_processes_publishes_a_model_like_a_single_process(first_run, store, tmp_path):
    """`train.devices: 2, strategy: ddp` on the CPU (gloo): Lightning re-runs the command for rank 1,
    both ranks share one run directory, and only rank 0 publishes."""
    import json
    import os
    import subprocess
    import sys

    from models.config import save_config

    single_out, _, _ = first_run
    config = tiny_config(max_steps=10, val_every=5, accelerator="cpu", devices=2, strategy="ddp")
    save_config(config, tmp_path / "ddp.yaml")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "models.train", "-c", str(tmp_path / "ddp.yaml")]
    command += ["--segments", str(store), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr and "rank 1: done; rank 0 publishes the model" in done.stderr
    published = json.loads((tmp_path / "out" / RESULT_FILE).read_text())
    assert published["devices"] == 2 and published["rank"] == 0 and published["steps"] == 10
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 1  # both ranks wrote into rank 0's run
    ddp = load_motion_model(tmp_path / "out" / MODEL_FILE, expected_config=tiny_config())
    single = load_motion_model(single_out / MODEL_FILE)
    assert {k: v.shape for k, v in ddp.state_dict().items()} == {k: v.shape for k, v in single.state_dict().items()}
    assert ddp.meta == single.meta
    audio = np.random.default_rng(1).standard_normal((40, AUDIO_DIM)).astype(np.float32)
    motion = ddp.generate(audio, steps=4, seed=0)
    assert motion.shape == single.generate(audio, steps=4, seed=0).shape == (40, 200) and np.isfinite(motion).all()


def test_a_finished_run_ends_with_its_final_step_checkpointed_and_is_not_resumed(tmp_path, store):
    """max_steps not a multiple of val_every: last.ckpt still holds the final step, so the next call
    starts a new run instead of taking the finished one for a crashed one."""
    first = train(tiny_config(max_steps=15, val_every=10), store, tmp_path / "out")
    ckpt = torch.load(first.last_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 15
    # 4 batches per epoch: the checkpoint knows that 3 of the 4th epoch's were drawn (resume goes on from there)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"drawn": 3}]
    again = train(tiny_config(max_steps=15, val_every=10), store, tmp_path / "out", resume=True)
    assert again.resumed_from is None and again.run_dir != first.run_dir


def test_fused_adamw_with_bf16_mixed_precision_and_gradient_clipping(tmp_path, store, monkeypatch):
    """The CUDA combination (bf16-mixed, fused AdamW, grad_clip), run on this machine's device:
    Lightning refuses to clip for a fused optimizer unless the module clips itself."""
    import models.lightning_module as lightning_module

    monkeypatch.setattr(lightning_module, "fused_adamw", lambda device: True)  # CPU has a fused AdamW kernel too
    result = train(tiny_config(max_steps=6, val_every=6, precision="bf16-mixed"), store, tmp_path / "out")
    assert result.steps == 6 and result.precision == "bf16-mixed" and np.isfinite(result.best_val_loss)
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["fused"] is True
