"""Training-throughput benchmark: the raw optimisation step against `train()` end to end.

For each batch size (default 64, 512, 4096 on a GPU; 16 and 64 on a CPU, `--batches` to change):
  step:   one optimisation step (forward, x0 loss, backward, clip, AdamW, EMA) on a batch already on
          the device, as `train()` runs it (bf16 autocast and fused AdamW on CUDA, fp32 on CPU)
  train:  `models.train.train` end to end (Lightning, data, one validation, checkpoints), with the
          frame arrays on the device (today's path) and, side by side, through a DataLoader
          (`train.device_data_fraction: 0`, the path before frames went onto the device)
  ratio:  train / step, the share of the chip's pace that the training loop keeps
  TFLOP/s: FLOPs of one step from torch's FLOP counter times steps/s, against a measured matmul
          rate (bf16 on CUDA, fp32 on CPU)
Then the time `train()` takes to reach a fixed validation loss on the synthetic store, and with
`--curves` the validation-loss curves of batch 64 against the large-batch setting (README).

Stores are synthetic (48-frame segments, `ops.demo.synthetic_segments`).
Run: python -m bench.training [--config configs/nphm.yaml] [--batches 64,512] [--steps 20] [--curves]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from models.config import ExperimentConfig, load_config
from models.diffusion import diffusion_loss
from models.lightning_module import MotionDiffusionModule
from ops.demo.synthetic_segments import write_synthetic_segment_store

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 48
# The clock the rates are timed with: wall time, or (`--clock cpu`) this process's CPU time, which a
# shared, busy CPU machine disturbs far less (with one thread it is the work done, not the waiting).
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def clock() -> float:
    return CLOCK[0]()


def bench_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, seconds: float = 1.0) -> tuple[float, str]:
    """Measured dense matmul rate: bf16 on CUDA (what autocast runs), fp32 on CPU."""
    dtype, n = (torch.bfloat16, 8192) if device.type == "cuda" else (torch.float32, 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    count, t0 = 0, clock()
    while clock() - t0 < seconds:
        a @ b
        count += 1
        if device.type == "cuda" and count % 10:
            continue
        _sync(device)
    _sync(device)
    return 2 * n**3 * count / (clock() - t0) / 1e12, str(dtype).removeprefix("torch.")


class RawStep:
    """The optimisation step of `MotionDiffusionModule` without Lightning or data loading."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device):
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.module = MotionDiffusionModule(cfg.to_dict(), {"fps": 24, "segment_frames": FRAMES}).to(device)
        self.module.train()
        self.optimizer = self.module.configure_optimizers()["optimizer"]  # fused AdamW on CUDA, as in train()
        b = cfg.train.batch_size
        self.batch = {
            "motion": torch.randn(b, FRAMES, cfg.model.motion_dim, device=device),
            "audio": torch.randn(b, FRAMES, cfg.model.audio_dim, device=device),
        }
        on_cuda = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else nullcontext
        self.step_count = 0

    def loss(self) -> torch.Tensor:
        d, m = self.cfg.diffusion, self.module
        with self.autocast():
            x0 = m._prepare_motion(self.batch["motion"], augment=True)
            return diffusion_loss(
                m.model.denoiser,
                m.model.diffusion,
                x0,
                self.batch["audio"],
                cond_drop_prob=d.cond_drop_prob,
                velocity_weight=d.velocity_loss_weight,
            ).total

    def __call__(self) -> None:
        loss = self.loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.model.denoiser.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.module.ema.update(self.module.model.denoiser, self.step_count)
        self.step_count += 1

    def flops(self) -> int:
        """FLOPs of one forward and backward pass (torch's FLOP counter: matmuls, convolutions, attention)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.loss().backward()
        self.optimizer.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


def step_rate(step: RawStep, steps: int) -> float:
    """Segments/s of the raw step over `steps` steps, after two warm-up steps."""
    for _ in range(2):
        step()
    _sync(step.device)
    t0 = clock()
    for _ in range(steps):
        step()
    _sync(step.device)
    return steps * step.cfg.train.batch_size / (clock() - t0)


def run_train(cfg: ExperimentConfig, store: Path, on_val: Callable[[int, float], None] | None = None):
    """`train()` into a temporary directory; `on_val(step, loss)` at every validation. Returns the
    result and the steady training pace (steps/s after the first step, from train()'s log line)."""
    from models.train import train

    stamps: list[tuple[int, float]] = []

    def progress(message: str) -> None:
        if not message.startswith("step "):
            return
        if "steps/s" in message:
            stamps.append((int(message.split()[1].split("/")[0]), clock()))
        elif on_val is not None and "val_loss" in message:
            step, loss = message.split()[1].split("/")[0], message.split()[-1]
            on_val(int(step), float(loss))

    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, store, out, resume=False, progress=progress)
    (first, t_first), (last, t_last) = (stamps[0], stamps[-1]) if stamps else ((0, 0.0), (0, 0.0))
    return result, (last - first) / (t_last - t_first) if last > first else 0.0


def train_rate(cfg: ExperimentConfig, store: Path, steps: int, on_device: bool) -> tuple[float, float, str]:
    """Segments/s of `train()` over `steps` steps with one validation at the end: end to end (start-up,
    validation and checkpoints included, wall time) and steady (the training loop's pace from the end
    of its first step to the end of its last, timed at train()'s log lines: what the raw step is
    compared with). The log line comes at the first step only with `log_every: 1`: used on CPU, where
    the line costs nothing; on CUDA it would synchronise the GPU every step, so there the pace runs
    from the step `steps // 2` instead."""
    cfg = cfg.replace(
        train={
            "max_steps": steps,
            "val_every": steps,
            "val_batches": 1,
            "log_every": 1 if bench_device().type == "cpu" else max(1, steps // 2),
            "warmup_steps": 1,
            "device_data_fraction": cfg.train.device_data_fraction if on_device else 0.0,
        }
    )
    result, steps_per_s = run_train(cfg, store)
    return result.segments_per_s, steps_per_s * cfg.train.batch_size, result.data_path


def time_to_loss(cfg: ExperimentConfig, store: Path, target: float, max_steps: int, val_every: int) -> dict[str, Any]:
    """Time (on the bench's clock, start-up included) until `train()`'s validation loss first reaches `target`."""
    t0, reached = clock(), {}
    curve: list[list[float]] = []

    def on_val(step: int, loss: float) -> None:
        curve.append([step, loss, clock() - t0])
        if loss <= target and not reached:
            reached.update(step=step, seconds=clock() - t0)

    cfg = cfg.replace(train={"max_steps": max_steps, "val_every": val_every, "log_every": val_every})
    run_train(cfg, store, on_val)
    return {"target": target, "reached_at_step": reached.get("step"), "seconds": reached.get("seconds"), "curve": curve}


# The large-batch setting (README, "Training at the GPU's pace"), relative to a batch-64 config with
# batch k x 64: lr x k (linear scaling), the warm-up over as many segments (at least 3 steps), and
# LARGE_BATCH_SEGMENTS x the segments. The square-root rule (lr x sqrt(k)) was measured too and
# trailed (README).
LARGE_BATCH_SEGMENTS = 2


def large_batch(cfg: ExperimentConfig, batch: int) -> ExperimentConfig:
    k = batch / cfg.train.batch_size
    warmup = max(3, math.ceil(cfg.train.warmup_steps / k))
    return cfg.replace(train={"batch_size": batch, "lr": cfg.train.lr * k, "warmup_steps": warmup})


def curves(cfg: ExperimentConfig, store: Path, large: int, segments: int, points: int) -> dict[str, Any]:
    """Validation loss against segments seen for the config's batch (`segments` of them) and for
    `large_batch(cfg, large)` (LARGE_BATCH_SEGMENTS times as many)."""
    rows: dict[str, Any] = {}
    for name, c, seen in (("base", cfg, segments), ("large", large_batch(cfg, large), LARGE_BATCH_SEGMENTS * segments)):
        steps = max(points, seen // c.train.batch_size)
        c = c.replace(train={"max_steps": steps, "val_every": max(1, steps // points), "val_batches": 8})
        found = time_to_loss(c, store, target=0.0, max_steps=steps, val_every=max(1, steps // points))
        rows[name] = {
            "batch": c.train.batch_size,
            "lr": c.train.lr,
            "warmup_steps": c.train.warmup_steps,
            "val": [[step * c.train.batch_size, loss, seconds] for step, loss, seconds in found["curve"]],
        }
    return rows


def print_curves(rows: dict[str, Any]) -> None:
    print(
        "\n| segments seen | "
        + " | ".join(f"val loss, batch {r['batch']} (lr {r['lr']:.2g})" for r in rows.values())
        + " |"
    )
    print("|---|" + "---|" * len(rows))
    base, large = rows["base"]["val"], rows["large"]["val"]
    for seen, loss, _ in large:
        nearest = min(base, key=lambda p: abs(p[0] - seen))
        base_cell = f"{nearest[1]:.4f}" if abs(nearest[0] - seen) <= seen * 0.1 else "(ended)"
        print(f"| {seen:,} | {base_cell} | {loss:.4f} |")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    device = bench_device()
    on_cuda = device.type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/nphm.yaml" if on_cuda else "configs/tiny.yaml")
    parser.add_argument("--batches", default="64,512,4096" if on_cuda else "16,64", help="comma-separated")
    parser.add_argument("--steps", type=int, default=50 if on_cuda else 20, help="timed steps per measurement")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall" if on_cuda else "cpu")
    parser.add_argument("--rounds", type=int, default=1 if on_cuda else 3, help="interleaved repeats (median)")
    parser.add_argument("--threads", type=int, default=1 if not on_cuda else os.cpu_count(), help="torch threads")
    parser.add_argument("--target-loss", type=float, default=0.8, help="validation loss for the time-to-loss run")
    parser.add_argument("--target-steps", type=int, default=3000 if on_cuda else 200, help="its step budget")
    parser.add_argument("--curves", action="store_true", help="also batch 64 vs the large-batch setting")
    parser.add_argument("--curves-only", action="store_true", help="only the curves (and peak RSS)")
    parser.add_argument("--large-batch", type=int, default=512)
    parser.add_argument("--curve-segments", type=int, default=400_000 if on_cuda else 12_800)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    cfg = load_config(ROOT / args.config if not Path(args.config).is_absolute() else args.config)
    cfg = cfg.replace(train={"cpu_threads": args.threads, "num_workers": 0})
    batches = [int(b) for b in args.batches.split(",")]
    peak, peak_dtype = matmul_tflops(device)
    name = torch.cuda.get_device_name(device) if on_cuda else f"CPU ({args.threads} threads)"
    results: dict[str, Any] = {
        "device": name,
        "config": args.config,
        "load_average_1min": os.getloadavg()[0],
        "clock": args.clock,
        "matmul_tflops": peak,
        "matmul_dtype": peak_dtype,
        "batches": {},
    }
    print(
        f"{name}: {peak_dtype} matmul {peak:.2f} TFLOP/s; {args.config} (width {cfg.model.width}, {cfg.model.layers} layers)"
    )
    n_train = max(2 * max(batches), 512)
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_segment_store(
            Path(tmp) / "seg", n_train=n_train, n_val=256, segment_frames=FRAMES, audio_dim=cfg.model.audio_dim
        )
        for batch in [] if args.curves_only else batches:
            c = cfg.replace(train={"batch_size": batch})
            rounds = []  # raw step, frames on device, DataLoader: interleaved, so that load hits all alike
            for _ in range(args.rounds):
                step = RawStep(c, device)
                flops = step.flops()
                raw = step_rate(step, args.steps)
                del step
                end_to_end, on_dev, data_path = train_rate(c, store, args.steps, on_device=True)
                loader_end_to_end, loader, _ = train_rate(c, store, args.steps, on_device=False)
                rounds.append((raw, on_dev, loader, end_to_end, loader_end_to_end))
            raw, on_dev, loader, end_to_end, loader_end_to_end = (statistics.median(r) for r in zip(*rounds))
            tflops = flops * raw / batch / 1e12
            results["batches"][batch] = row = {
                "step_segments_per_s": raw,
                "train_segments_per_s": on_dev,
                "train_dataloader_segments_per_s": loader,
                "train_end_to_end_segments_per_s": end_to_end,
                "train_dataloader_end_to_end_segments_per_s": loader_end_to_end,
                "train_over_step": on_dev / raw,
                "device_data_over_dataloader": on_dev / loader,
                "device_data_over_dataloader_end_to_end": end_to_end / loader_end_to_end,
                "step_tflops": tflops,
                "share_of_matmul_peak": tflops / peak,
                "flops_per_step": flops,
                "data_path": data_path,
                "rounds": rounds,
            }
            print(
                f"batch {batch:>5}: step {raw:9.1f} seg/s ({tflops:.3g} TFLOP/s, {tflops / peak:.0%} of matmul) | "
                f"train() {on_dev:9.1f} seg/s = {row['train_over_step']:.0%} of step | "
                f"train() via DataLoader {loader:9.1f} seg/s (frames on device {row['device_data_over_dataloader']:.2f}x)"
            )
            print(
                f"             end to end (start-up, validation, checkpoints): train() {end_to_end:9.1f} seg/s, "
                f"via DataLoader {loader_end_to_end:9.1f} seg/s ({end_to_end / loader_end_to_end:.2f}x)"
            )
        if not args.curves_only:
            reach = time_to_loss(cfg, store, args.target_loss, args.target_steps, max(1, args.target_steps // 10))
            results["time_to_val_loss"] = reach
            seconds = reach["seconds"]
            when = f"{seconds:.1f} s (step {reach['reached_at_step']})" if seconds else "not reached"
            print(f"time to val loss {args.target_loss} at batch {cfg.train.batch_size}: {when} ({args.clock} time)")
        if args.curves or args.curves_only:
            rows = curves(cfg.replace(train={"batch_size": 64}), store, args.large_batch, args.curve_segments, 10)
            results["curves"] = rows
            print_curves(rows)
    results["peak_rss_mb"] = peak_rss_mb()
    print(f"peak RSS {results['peak_rss_mb']:.0f} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
