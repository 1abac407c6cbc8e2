"""The training process: `python -m pipelines.training_process`, launched by the model assets through Dagster Pipes.

The launcher (`pipelines/training_launch.py`) starts it as a subprocess or a Kubernetes pod and
passes the request as Pipes extras: the asset's name, the store root and the asset's training
config. It trains with `models.train.train` (which publishes `model.ckpt` only when the run
succeeds), streams its progress lines back as Dagster logs, and reports the materialization with
the same metadata the asset showed when it trained in-process. An exception closes the Pipes
session with the error, which the launcher turns into the asset's failure message.

torch and Lightning are imported when training starts, not with the module (which, being in
`pipelines/`, loads the code location's modules first). The store may be a URL (`s3://...`): its options come from the
environment, which the launcher passes on.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

RANDOM_FEATURES_WARNING = (
    "{n} training sequences have audio features from a RANDOMLY initialised encoder (the demo's): the model "
    "learned from meaningless features. Set FACETALK_AUDIO_ENCODER to real Wav2Vec2 weights and re-ingest."
)


def _md(text: str) -> dict[str, Any]:
    return {"raw_value": text, "type": "md"}


def _path(path: str | None) -> dict[str, Any]:
    return {"raw_value": path or "", "type": "path"}


def random_encoder_sequences(store_root: str, keys: list[str]) -> list[str]:
    """The sequences whose stored `audio_features` were computed by random weights."""
    from storage.location import store_path
    from storage.sequence_store import SequenceStore

    sequences = SequenceStore(store_path(store_root))
    flagged = []
    for key in keys:
        attrs = sequences.attrs(key, "audio_features") or {}
        if attrs.get("encoder_random_weights") or attrs.get("encoder_random_init"):
            flagged.append(key)
    return flagged


def resolve_config_path(config_path: str) -> Path:
    """A config path as given, or relative to the project (where `configs/` is)."""
    from pipelines.settings import PROJECT_ROOT

    path = Path(config_path)
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise FileNotFoundError(f"training config {config_path!r} not found (config_path; tried {path})")
    return path


def run_training(request: Mapping[str, Any], say: Callable[[str], None], warn: Callable[[str], None]) -> dict[str, Any]:
    """Train as the request says and return the materialization's metadata (Pipes metadata values)."""
    from models.config import load_config
    from models.train import train
    from ops.evaluation.plots import loss_curve_png, loss_curve_svg_markdown, png_markdown
    from storage.location import store_path
    from storage.segments import SegmentReader, current_segments_dir
    from storage.transfer import upload_file

    name, store_root = request["asset"], request["store"]
    settings = request["config"]
    config_path = resolve_config_path(settings["config_path"])
    experiment = load_config(config_path)
    train_overrides: dict[str, Any] = {"accelerator": settings["accelerator"]}
    if settings.get("max_steps"):
        train_overrides["max_steps"] = settings["max_steps"]
        train_overrides["val_every"] = min(experiment.train.val_every, settings["max_steps"])
    if settings.get("batch_size"):
        train_overrides["batch_size"] = settings["batch_size"]
    store = store_path(store_root)
    segments_dir = current_segments_dir(store)
    segments_attrs = SegmentReader(segments_dir, cache_bytes=0).attrs
    # The store knows the encoder's width; a config written for Wav2Vec2-base says 768.
    audio_dim = int(segments_attrs.get("audio_dim", experiment.model.audio_dim))
    if audio_dim != experiment.model.audio_dim:
        say(f"audio features are {audio_dim}-d in {segments_dir}; model.audio_dim set to match")
    experiment = experiment.replace(train=train_overrides, model={"audio_dim": audio_dim})
    out_dir = store / "checkpoints" / name
    result = train(experiment, segments_dir, out_dir, resume=bool(settings.get("resume", True)), progress=say)
    with tempfile.TemporaryDirectory(prefix="facetalk-plot-") as tmp:  # matplotlib writes local files
        plot = loss_curve_png(result.loss_history, Path(tmp) / "loss_curve.png", title=f"{name}: loss")
        loss_curve = png_markdown(plot, f"{name} loss curve")
        upload_file(plot, out_dir / "loss_curve.png")
    random_features = random_encoder_sequences(store_root, segments_attrs.get("sequences", []))
    warning = RANDOM_FEATURES_WARNING.format(n=len(random_features)) if random_features else ""
    if warning:
        warn(warning)
    return {
        "status": "trained",
        "features_from_random_encoder": bool(random_features),
        **({"warning": warning} if warning else {}),
        "checkpoint": _path(result.model_checkpoint),
        "best_val_loss": result.best_val_loss,
        "last_val_loss": result.last_val_loss,
        "steps": result.steps,
        "wall_time_s": round(result.wall_time_s, 1),
        "segments_per_s": round(result.segments_per_s, 1),
        "device": result.device,
        "requested_accelerator": settings["accelerator"],
        "precision": result.precision,
        "resumed_from": result.resumed_from or "",
        "config": _path(str(config_path)),
        "run_dir": _path(result.run_dir),
        "train_segments": result.n_train_segments,
        "val_segments": result.n_val_segments,
        "segments_version": segments_attrs.get("version", ""),
        "data_state": segments_attrs.get("data_state", ""),
        "loss_curve": _md(loss_curve),
        # Short enough for the asset page to draw in place; the full plot is one click away.
        "loss": _md(loss_curve_svg_markdown(result.loss_history, f"{name} loss")),
    }


def main() -> int:
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        print(
            "python -m pipelines.training_process: error: started outside Dagster Pipes; it is launched by the "
            "model assets (to train by hand: python -m models.train -c CONFIG --segments DIR --out DIR)",
            file=sys.stderr,
        )
        return 2
    with open_dagster_pipes() as pipes:
        metadata = run_training(pipes.extras, say=pipes.log.info, warn=pipes.log.warning)
        pipes.report_asset_materialization(metadata=metadata)
    # Reported, the Pipes session closed, the model published: skip the interpreter's teardown of
    # torch and Lightning, which only frees memory and took 2-5 s of the asset's time on a busy machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
