"""Training-throughput benchmark (CPU): segments per second for the tiny and paper-size configs.

  step:   one optimisation step (forward, x0 loss, backward, AdamW, EMA) on batches in memory
  train:  `models.train.train` end to end (Lightning Trainer, DataModule, validation, checkpoints)
  data:   reading batches from the segment store: our batched `__getitems__` (a gather from the
          frame arrays the reader keeps in RAM) vs the obvious per-item zarr slicing with default collation

Stores are synthetic (48-frame segments, 768-d audio features, 200-d codes).
Run: python -m bench.training [--threads N] [--steps 20]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset

from models.config import ExperimentConfig, load_config
from models.data import SegmentDataset, _already_batched
from models.diffusion import diffusion_loss
from models.lightning_module import MotionDiffusionModule
from ops.demo.synthetic_segments import write_synthetic_segment_store
from storage.segments import SegmentReader

ROOT = Path(__file__).resolve().parents[1]


def step_throughput(cfg: ExperimentConfig, audio_dim: int, steps: int) -> float:
    torch.manual_seed(0)
    module = MotionDiffusionModule(cfg.to_dict(), {"fps": 24, "segment_frames": 48})
    optimizer = torch.optim.AdamW(module.model.denoiser.parameters(), lr=cfg.train.lr)
    b, frames = cfg.train.batch_size, 48
    batch = {"motion": torch.randn(b, frames, cfg.model.motion_dim), "audio": torch.randn(b, frames, audio_dim)}
    d = cfg.diffusion

    def one_step(step: int) -> None:
        x0 = module._prepare_motion(batch["motion"], augment=True)
        loss = diffusion_loss(
            module.model.denoiser,
            module.model.diffusion,
            x0,
            batch["audio"],
            cond_drop_prob=d.cond_drop_prob,
            velocity_weight=d.velocity_loss_weight,
        ).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.denoiser.parameters(), cfg.train.grad_clip)
        optimizer.step()
        module.ema.update(module.model.denoiser, step)

    module.train()
    for step in range(2):
        one_step(step)
    t0 = time.perf_counter()
    for step in range(steps):
        one_step(step)
    return steps * b / (time.perf_counter() - t0)


def train_throughput(cfg: ExperimentConfig, store: Path, steps: int) -> float:
    from models.train import train

    cfg = cfg.replace(
        train={"max_steps": steps, "val_every": steps, "val_batches": 1, "log_every": steps, "warmup_steps": 1}
    )
    with tempfile.TemporaryDirectory() as out:
        return train(cfg, store, out, resume=False, progress=lambda _: None).segments_per_s


class PerItemZarr(Dataset):
    """The obvious dataset: one zarr slice of the frame arrays per segment and field, default collation."""

    def __init__(self, store: Path, indices: np.ndarray):
        reader = SegmentReader(store, cache_bytes=0)
        group = zarr.open_group(str(reader.frames.path / "frames.zarr"), mode="r")
        self.expression, self.audio = group["expression"], group["audio_features"]
        self.starts, self.length = reader.first_rows("expression", indices), reader.segment_frames

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = slice(int(self.starts[i]), int(self.starts[i]) + self.length)
        return {"motion": torch.from_numpy(self.expression[window]), "audio": torch.from_numpy(self.audio[window])}


def loader_throughput(dataset: Dataset, batch_size: int, batched: bool, epochs: int = 2) -> float:
    kwargs = {"collate_fn": _already_batched} if batched else {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, **kwargs)
    t0, n = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            n += len(batch["motion"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, float] = {"threads": args.threads, "load_average_1min": os.getloadavg()[0]}
    configs = {
        "tiny": load_config(ROOT / "configs" / "tiny.yaml"),
        "paper": load_config(ROOT / "configs" / "nphm.yaml"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_segment_store(
            Path(tmp) / "seg", n_train=512, n_val=32, segment_frames=48, audio_dim=768
        )
        for name, cfg in configs.items():
            steps = args.steps if name == "tiny" else max(3, args.steps // 4)
            step_rate = step_throughput(cfg, 768, steps)
            train_rate = train_throughput(cfg.replace(train={"cpu_threads": args.threads}), store, steps)
            results[f"{name}_segments_per_s"] = step_rate
            results[f"{name}_train_segments_per_s"] = train_rate
            print(
                f"{name:>5} (batch {cfg.train.batch_size}, width {cfg.model.width}, {cfg.model.layers} layers): "
                f"{step_rate:8.1f} segments/s per optimisation step, {train_rate:8.1f} segments/s through train()"
            )
        indices = SegmentReader(store).indices("train")
        ours = loader_throughput(SegmentDataset(store, indices, field="expression"), 64, batched=True)
        naive = loader_throughput(PerItemZarr(store, indices), 64, batched=False)
        results["data_lazy_segments_per_s"] = ours
        results["data_naive_segments_per_s"] = naive
        results["data_speedup"] = ours / naive
        print(
            f" data: batched direct reads {ours:8.1f} segments/s vs per-item zarr {naive:8.1f} segments/s ({ours / naive:.1f}x)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
