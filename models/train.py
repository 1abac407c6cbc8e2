"""Train the motion diffusion model on a segment store: `train(...)` or `python -m models.train`.

Layout of `out_dir`:
    runs/<stamp>/checkpoints/{last,best}.ckpt   one fresh directory per call (a crash leaves others alone)
    runs/<stamp>/logs/                          CSV (and TensorBoard, when installed) metrics
    runs/<stamp>/history.json, result.json     loss curves; result.json marks a finished run
    model.ckpt, training_result.json            the published model: replaced only when a run succeeds;
                                                the result names the segment version it was trained on

`resume=True` continues from the newest `last.ckpt` under runs/ (finished or crashed), so the
global step, optimiser and EMA carry on; a checkpoint from a config with different shapes is
refused with the differing fields named. The published model is the best checkpoint of the whole
chain of resumed runs: a resumed run whose validations never beat an earlier run's best publishes
that earlier best (each checkpoint carries the chain's best score and file).

With `train.devices` > 1 and `train.strategy: ddp`, Lightning starts one process per device (it
re-runs the command, so launch through `python -m models.train` or a script); every process runs
`train()`, they share one run directory, and only rank 0 writes the published files.

`out_dir` may be on an object store (`s3://...`, see `storage.location`): Lightning then writes the
run into a local staging directory, and every validation (when the checkpoints are saved) uploads
what changed, so a remote `last.ckpt` is at most one validation interval old; `resume=True`
downloads the newest one. The published `model.ckpt` and `training_result.json` are single
objects, each written by one PUT, the model first and the result last, as locally.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import (
    IncompatibleCheckpointError,
    check_compatible,
    read_checkpoint,
)
from models.config import ExperimentConfig, as_config, save_config
from storage.atomic import atomic_write_bytes
from storage.location import StorePath, is_remote, store_path
from storage.transfer import FileMirror, download_file, modified_time, upload_file

log = logging.getLogger(__name__)

MODEL_FILE = "model.ckpt"
RESULT_FILE = "training_result.json"
# Set by rank 0 before Lightning starts the other DDP processes, so that they share its run directory.
RUN_NAME_ENV = "FACETALK_TRAIN_RUN_NAME"
BEST_SCORE_KEY, BEST_PATH_KEY = "facetalk_chain_best_score", "facetalk_chain_best_path"
BEST_DATA_KEY = "facetalk_chain_best_segments"


@dataclass
class TrainResult:
    best_val_loss: float | None
    last_val_loss: float | None
    steps: int
    wall_time_s: float
    segments_per_s: float
    device: str
    precision: str
    run_dir: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    model_checkpoint: str  # the published copy of the best checkpoint
    resumed_from: str | None
    n_train_segments: int
    n_val_segments: int
    segments_dir: str = ""  # the segment version trained on: pruning keeps it while this model is published
    segments_version: str = ""
    devices: int = 1  # processes that trained together (DDP); segments_per_s counts all of them
    rank: int = 0  # this process's DDP rank: only rank 0 published
    data_path: str = ""  # how batches reached the model: frames on the device, or a DataLoader
    loss_history: dict[str, list[list[float]]] = field(default_factory=dict)  # {"train"|"val": [[step, loss], ...]}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def latest_checkpoint(out_dir: str | Path | StorePath) -> StorePath | None:
    """The newest `runs/*/checkpoints/last.ckpt` under `out_dir` (local or remote), or None."""
    runs = store_path(out_dir) / "runs"
    if not runs.exists():
        return None
    candidates = list(runs.glob("*/checkpoints/last.ckpt"))
    return max(candidates, key=modified_time) if candidates else None


def _atomic_write_json(data: dict[str, Any], dst: Path | StorePath) -> None:
    atomic_write_bytes(dst, json.dumps(data, indent=2).encode())


def _make_history_callback(
    config: ExperimentConfig, history_path: Path, previous: dict[str, list], say: Callable[[str], None]
):
    import lightning as L

    class LossHistory(L.Callback):
        """Loss curves for plotting plus a log line every `log_every` steps (for non-TTY runs)."""

        def __init__(self) -> None:
            self.history = {"train": list(previous.get("train", [])), "val": list(previous.get("val", []))}
            self._t0 = time.perf_counter()
            self._step0: int | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            if trainer.is_global_zero and trainer.datamodule is not None:
                say(f"batches: {trainer.datamodule.data_path}")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if self._step0 is None:  # the pace counts from the end of the first step: start-up aside
                self._step0, self._t0 = step, time.perf_counter()
            if step % config.train.log_every and step != trainer.max_steps:
                return
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            value = float(loss.detach().float().cpu())
            self.history["train"].append([step, value])
            # Steps since the first one over the time since, validation included (it is part of training).
            rate = (step - self._step0) / max(time.perf_counter() - self._t0, 1e-9) if step > self._step0 else 0.0
            if trainer.is_global_zero:
                say(f"step {step}/{trainer.max_steps}  train_loss {value:.4f}  {rate:.2f} steps/s")

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
                return
            value = float(trainer.callback_metrics["val_loss"].cpu())
            self.history["val"].append([trainer.global_step, value])
            if trainer.is_global_zero:
                say(f"step {trainer.global_step}/{trainer.max_steps}  val_loss {value:.4f}")
                _atomic_write_json(self.history, history_path)

    return LossHistory()


@dataclass(frozen=True)
class ChainBest:
    """The best validation of a chain of resumed runs: its score and its file, relative to `out_dir`."""

    score: float
    path: str  # "runs/<name>/checkpoints/best.ckpt"
    segments_version: str = ""  # val losses compare only on the same validation data


def chain_best_in(ckpt: dict[str, Any], resumed_from: StorePath) -> ChainBest | None:
    """The chain's best as recorded in a checkpoint's ModelCheckpoint state.

    Checkpoints written before the chain was recorded give their own run's best."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if not key.startswith("ModelCheckpoint") or not isinstance(state, dict):
            continue
        if state.get(BEST_PATH_KEY):
            return ChainBest(float(state[BEST_SCORE_KEY]), str(state[BEST_PATH_KEY]), str(state.get(BEST_DATA_KEY, "")))
        if state.get("best_model_score") is not None and state.get("best_model_path"):
            run = resumed_from.parent.parent.name
            return ChainBest(
                float(state["best_model_score"]), f"runs/{run}/checkpoints/{Path(state['best_model_path']).name}"
            )
    return None


def _mirrored_checkpoint(
    mirror: FileMirror | None, run_name: str, segments_version: str, previous: ChainBest | None, **kwargs: Any
):
    """Lightning's ModelCheckpoint, uploading the run directory after each save when it is remote,
    and recording in every checkpoint the best of the chain of resumed runs (see `chain_best`).

    A callback of its own would not do: Lightning runs checkpoint callbacks after all others."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class MirroredCheckpoint(ModelCheckpoint):
        @property
        def state_key(self) -> str:
            # A plain ModelCheckpoint's key: its state (best score) resumes from older checkpoints too.
            return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

        def this_run_best(self) -> ChainBest | None:
            # After a resume Lightning restores the previous run's best_model_path (not its score,
            # as the directory changed): only a file written in this run's directory counts here.
            path = Path(self.best_model_path) if self.best_model_path else None
            if self.best_model_score is None or path is None or path.parent != Path(self.dirpath):
                return None
            return ChainBest(float(self.best_model_score), f"runs/{run_name}/checkpoints/{path.name}", segments_version)

        def chain_best(self) -> ChainBest | None:
            """The better of this run's best and the best of the runs it resumed."""
            mine = self.this_run_best()
            candidates = [b for b in (mine, previous) if b is not None]
            return min(candidates, key=lambda b: b.score) if candidates else None

        def state_dict(self) -> dict[str, Any]:
            state = super().state_dict()
            best = self.chain_best()
            if best is not None:
                state[BEST_SCORE_KEY], state[BEST_PATH_KEY], state[BEST_DATA_KEY] = (
                    best.score,
                    best.path,
                    best.segments_version,
                )
            return state

        def on_validation_end(self, trainer, pl_module) -> None:
            super().on_validation_end(trainer, pl_module)
            if mirror is not None and trainer.is_global_zero:
                mirror.sync()

    return MirroredCheckpoint(**kwargs)


def train(
    config: ExperimentConfig | str | Path,
    segments_dir: str | Path | StorePath,
    out_dir: str | Path | StorePath,
    resume: bool = True,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or continue training) and publish the best checkpoint as `out_dir/model.ckpt`.

    `out_dir` is a local directory or a store URL (`s3://...`); see the module docstring."""
    out_dir = store_path(out_dir)
    if not is_remote(out_dir):
        return _train(config, segments_dir, out_dir, Path(out_dir), resume, progress)
    with tempfile.TemporaryDirectory(prefix="facetalk-train-") as work:
        return _train(config, segments_dir, out_dir, Path(work), resume, progress)


def _train(
    config: ExperimentConfig | str | Path,
    segments_dir: str | Path | StorePath,
    out_dir: StorePath,
    work: Path,
    resume: bool,
    progress: Callable[[str], None] | None,
) -> TrainResult:
    """`train` with Lightning writing under the local directory `work` (`out_dir` itself when local)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from models.data import SegmentDataModule
    from models.lightning_module import MotionDiffusionModule

    say = progress or log.info
    config = as_config(config)
    t = config.train

    data = SegmentDataModule(segments_dir, config)
    summary = data.prepare()  # raises SegmentStoreError on an empty/small/mismatched store
    say(
        f"segments: {summary.n_train} train, {summary.n_val} val, {summary.segment_frames} frames each ({summary.path})"
    )

    resume_from = latest_checkpoint(out_dir) if resume else None
    previous_history: dict[str, list] = {}
    previous_best: ChainBest | None = None
    resumed_step = 0
    resume_local = None  # the file Lightning resumes from: a download when the store is remote
    if resume_from is not None:
        resume_local = resume_from if not is_remote(resume_from) else download_file(resume_from, work / "resume.ckpt")
        ckpt = read_checkpoint(resume_local)
        try:  # an output directory holds one architecture, finished or not
            check_compatible(ckpt, config, resume_from)
        except IncompatibleCheckpointError as err:
            raise IncompatibleCheckpointError(
                f"{err}. To train a new model here, pass resume=False (--no-resume)."
            ) from err
        resumed_step = int(ckpt.get("global_step", 0))
        if resumed_step >= t.max_steps:
            # That run finished: a retrain (new data, same config) starts over rather than doing nothing.
            say(f"{resume_from} already reached step {resumed_step} >= max_steps {t.max_steps}; starting a new run")
            resume_from, resume_local, resumed_step = None, None, 0
    if resume_from is not None:
        previous_best = chain_best_in(ckpt, resume_from)
        if previous_best and previous_best.segments_version not in ("", summary.path.name):
            say(f"the earlier best was validated on segments {previous_best.segments_version}: not compared")
            previous_best = None
        history_file = resume_from.parent.parent / "history.json"
        if history_file.is_file():
            previous_history = {
                k: [p for p in v if p[0] <= resumed_step] for k, v in json.loads(history_file.read_text()).items()
            }
        say(f"resuming from {resume_from} at step {resumed_step}")

    L.seed_everything(t.seed, workers=True, verbose=False)
    meta = {"fps": summary.fps, "segment_frames": summary.segment_frames, "n_vertices": data.n_vertices}
    module = MotionDiffusionModule(config.to_dict(), meta)
    module.set_data_statistics(data.mean, data.std, data.basis)

    # DDP: the processes Lightning starts find rank 0's run name in their environment.
    run_name = os.environ.get(RUN_NAME_ENV) or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir, local_run = out_dir / "runs" / run_name, work / "runs" / run_name  # the same when local
    (local_run / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(config, local_run / "config.yaml")
    mirror = FileMirror(local_run, run_dir) if is_remote(out_dir) else None
    checkpointing = _mirrored_checkpoint(
        mirror,
        run_name,
        summary.path.name,
        previous_best,
        dirpath=local_run / "checkpoints",
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    history = _make_history_callback(config, local_run / "history.json", previous_history, say)
    loggers = [CSVLogger(local_run / "logs", name="csv", version=0)]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(local_run / "logs", name="tensorboard", version=0))
    precision = resolve_precision(t.precision, t.accelerator)
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=precision,
        max_steps=t.max_steps,
        val_check_interval=min(t.val_every, t.max_steps),
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches,
        num_sanity_val_steps=0,
        gradient_clip_val=t.grad_clip or None,
        log_every_n_steps=t.log_every,
        callbacks=[checkpointing, history],
        logger=loggers,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        default_root_dir=local_run,
    )
    device = trainer.strategy.root_device
    on_cuda = device.type == "cuda"
    processes = f", {trainer.world_size} processes ({t.strategy})" if trainer.world_size > 1 else ""
    say(f"training on {device} with precision {precision}{processes}, run dir {run_dir}")
    if t.compile and on_cuda:
        module.model.denoiser.compile()  # in place: parameter names (and checkpoints) stay as they are
    elif t.compile:
        say("train.compile is off on CPU (compiling costs more than it saves there); training eagerly")
    threads_before, matmul_before = torch.get_num_threads(), torch.get_float32_matmul_precision()
    if t.cpu_threads and device.type == "cpu":
        torch.set_num_threads(t.cpu_threads)
    if on_cuda:  # TF32 Tensor Cores for fp32 matmuls (what Lightning's hint asks for); bf16 autocast aside
        torch.set_float32_matmul_precision("high")
    spawned = t.devices > 1 and RUN_NAME_ENV not in os.environ
    if spawned:
        os.environ[RUN_NAME_ENV] = run_name
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Expected here: resuming writes into a fresh run dir; tiny stores have short epochs.
            warnings.filterwarnings("ignore", message=".*dirpath has changed.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            trainer.fit(module, datamodule=data, ckpt_path=str(resume_local) if resume_local else None)
            if not trainer.interrupted and trainer.global_step % trainer.val_check_interval:
                # Steps after the last validation would be lost, and the next run would take this
                # finished run for a crashed one and resume it: last.ckpt at the final step.
                trainer.save_checkpoint(local_run / "checkpoints" / "last.ckpt")
    finally:
        if spawned:
            os.environ.pop(RUN_NAME_ENV, None)
        torch.set_num_threads(threads_before)
        torch.set_float32_matmul_precision(matmul_before)
        if mirror is not None and trainer.is_global_zero:  # a crashed run's last.ckpt too: the retry resumes from it
            with contextlib.suppress(Exception):
                mirror.sync()
    wall = time.perf_counter() - t0
    if trainer.interrupted:
        raise RuntimeError(
            f"training interrupted at step {trainer.global_step}; resume from {run_dir / 'checkpoints' / 'last.ckpt'}"
        )

    best = checkpointing.chain_best()
    if best is not None and not (work / best.path).is_file() and not (out_dir / best.path).exists():
        say(f"the chain's best checkpoint {out_dir / best.path} is gone; publishing this run's best")
        best = checkpointing.this_run_best()
    best_file = out_dir / best.path if best is not None else None
    last = local_run / "checkpoints" / "last.ckpt"
    last = last if last.is_file() else None
    val = history.history["val"]
    steps_run = trainer.global_step - resumed_step
    result = TrainResult(
        best_val_loss=best.score if best is not None else (min(v for _, v in val) if val else None),
        last_val_loss=val[-1][1] if val else None,
        steps=trainer.global_step,
        wall_time_s=wall,
        segments_per_s=steps_run * t.batch_size * trainer.world_size / wall if wall > 0 else 0.0,
        device=str(device),
        precision=precision,
        run_dir=str(run_dir),
        best_checkpoint=str(best_file) if best_file is not None else None,
        last_checkpoint=str(run_dir / "checkpoints" / last.name) if last else None,
        model_checkpoint=str(out_dir / MODEL_FILE),
        resumed_from=str(resume_from) if resume_from else None,
        n_train_segments=summary.n_train,
        n_val_segments=summary.n_val,
        segments_dir=str(summary.path),
        segments_version=summary.path.name,
        devices=trainer.world_size,
        rank=trainer.global_rank,
        data_path=data.data_path,
        loss_history=history.history,
    )
    if not trainer.is_global_zero:  # rank 0 writes the run's files and publishes the model
        say(f"rank {trainer.global_rank}: done; rank 0 publishes the model")
        return result
    publish_source = None
    if best is not None:  # this run's files are in `work`; an earlier run's best may only be in the store
        publish_source = work / best.path
        if not publish_source.is_file():
            publish_source = download_file(best_file, work / "publish.ckpt") if is_remote(out_dir) else best_file
    publish_source = publish_source or last or resume_local
    if publish_source is None:
        raise RuntimeError(
            f"training produced no checkpoint in {run_dir} (max_steps {t.max_steps}, val_every {t.val_every})"
        )
    _atomic_write_json(history.history, local_run / "history.json")
    if mirror is not None:
        mirror.sync()
    _atomic_write_json(result.to_dict(), run_dir / "result.json")  # marks the run finished, so after the rest
    # Publish last, and only now: until here a previous model.ckpt stays as it was.
    upload_file(publish_source, out_dir / MODEL_FILE)
    _atomic_write_json(result.to_dict(), out_dir / RESULT_FILE)
    say(
        f"done: {result.steps} steps in {wall:.1f} s, best val_loss {result.best_val_loss}, published {out_dir / MODEL_FILE}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.train", description="Train the FaceTalk motion diffusion model."
    )
    parser.add_argument("-c", "--config", required=True, help="YAML config, e.g. configs/nphm.yaml")
    parser.add_argument("--segments", required=True, help="segment store directory (segments.zarr + manifest.parquet)")
    parser.add_argument("--out", required=True, help="output directory (runs/, model.ckpt)")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if out/runs has a checkpoint")
    parser.add_argument("--max-steps", type=int, help="override train.max_steps")
    parser.add_argument("--devices", type=int, help="override train.devices (processes; DDP when > 1)")
    parser.add_argument("--strategy", help="override train.strategy, e.g. ddp")
    parser.add_argument("--accelerator", help="override train.accelerator: auto, gpu or cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = as_config(args.config)
    overrides = {"max_steps": args.max_steps, "devices": args.devices, "strategy": args.strategy}
    overrides["accelerator"] = args.accelerator
    config = config.replace(train={k: v for k, v in overrides.items() if v})
    result = train(config, args.segments, args.out, resume=not args.no_resume)
    if result.rank == 0:  # under DDP every process returns here; one summary is enough
        summary = {k: v for k, v in result.to_dict().items() if k != "loss_history"}
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
