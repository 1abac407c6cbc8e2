"""Model assets: the diffusion model over NPHM codes and its FLAME-vertex variant.

Both call `models.train.train`, the same entry point as `python -m models.train -c ...`,
in-process; they run in the `gpu` pool (one at a time per instance) and resume from the
last checkpoint of an interrupted run when retried.
"""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, RetryPolicy, asset

from ops.evaluation.plots import loss_curve_png, loss_curve_svg_markdown, png_markdown
from pipelines.assets.segments import training_segments
from pipelines.k8s_pods import gpu_tags
from pipelines.resources import StoreResource
from pipelines.settings import PROJECT_ROOT
from storage.segments import SegmentReader, current_segments_dir
from storage.transfer import upload_file

RANDOM_FEATURES_WARNING = (
    "{n} training sequences have audio features from a RANDOMLY initialised encoder (the demo's): the model "
    "learned from meaningless features. Set FACETALK_AUDIO_ENCODER to real Wav2Vec2 weights and re-ingest."
)


def random_encoder_sequences(store: StoreResource, keys: list[str]) -> list[str]:
    """The sequences whose stored `audio_features` were computed by random weights."""
    sequences = store.sequences()
    flagged = []
    for key in keys:
        attrs = sequences.attrs(key, "audio_features") or {}
        if attrs.get("encoder_random_weights") or attrs.get("encoder_random_init"):
            flagged.append(key)
    return flagged


# Training runs one at a time in the `gpu` pool; a retry resumes from the last checkpoint. On
# Kubernetes with the step-per-pod executor, each training step's pod asks for a GPU node.
model_asset = asset(
    group_name="training",
    deps=[training_segments],
    pool="gpu",
    op_tags=gpu_tags(),
    retry_policy=RetryPolicy(max_retries=1, delay=5),
    kinds={"pytorch"},
)


class TrainingConfig(Config):
    config_path: str = "configs/tiny.yaml"  # configs/nphm.yaml for the paper-size model
    max_steps: int = 0  # 0: the config's
    batch_size: int = 0  # 0: the config's
    accelerator: str = "auto"  # "auto" picks the GPU when present
    resume: bool = True  # continue an interrupted run; False starts a new model (e.g. after a config change)


def _train(
    context: AssetExecutionContext, config: TrainingConfig, store: StoreResource, name: str
) -> MaterializeResult:
    from models.config import load_config
    from models.train import train

    config_path = Path(config.config_path)
    if not config_path.is_absolute() and not config_path.exists():
        config_path = PROJECT_ROOT / config_path
    experiment = load_config(config_path)
    train_overrides = {"accelerator": config.accelerator}
    if config.max_steps:
        train_overrides["max_steps"] = config.max_steps
        train_overrides["val_every"] = min(experiment.train.val_every, config.max_steps)
    if config.batch_size:
        train_overrides["batch_size"] = config.batch_size
    segments_dir = current_segments_dir(store.path)
    segments_attrs = SegmentReader(segments_dir, cache_bytes=0).attrs
    # The store knows the encoder's width; a config written for Wav2Vec2-base says 768.
    audio_dim = int(segments_attrs.get("audio_dim", experiment.model.audio_dim))
    if audio_dim != experiment.model.audio_dim:
        context.log.info(f"audio features are {audio_dim}-d in {segments_dir}; model.audio_dim set to match")
    experiment = experiment.replace(train=train_overrides, model={"audio_dim": audio_dim})
    out_dir = store.path / "checkpoints" / name
    result = train(experiment, segments_dir, out_dir, resume=config.resume, progress=context.log.info)
    with tempfile.TemporaryDirectory(prefix="facetalk-plot-") as tmp:  # matplotlib writes local files
        plot = loss_curve_png(result.loss_history, Path(tmp) / "loss_curve.png", title=f"{name}: loss")
        loss_curve = png_markdown(plot, f"{name} loss curve")
        upload_file(plot, out_dir / "loss_curve.png")
    random_features = random_encoder_sequences(store, segments_attrs.get("sequences", []))
    if random_features:
        context.log.warning(RANDOM_FEATURES_WARNING.format(n=len(random_features)))
    return MaterializeResult(
        metadata={
            "status": "trained",
            "features_from_random_encoder": bool(random_features),
            **({"warning": RANDOM_FEATURES_WARNING.format(n=len(random_features))} if random_features else {}),
            "checkpoint": MetadataValue.path(result.model_checkpoint),
            "best_val_loss": result.best_val_loss,
            "last_val_loss": result.last_val_loss,
            "steps": result.steps,
            "wall_time_s": round(result.wall_time_s, 1),
            "segments_per_s": round(result.segments_per_s, 1),
            "device": result.device,
            "precision": result.precision,
            "resumed_from": result.resumed_from or "",
            "config": MetadataValue.path(str(config_path)),
            "run_dir": MetadataValue.path(result.run_dir),
            "train_segments": result.n_train_segments,
            "val_segments": result.n_val_segments,
            "segments_version": segments_attrs.get("version", ""),
            "data_state": segments_attrs.get("data_state", ""),
            "loss_curve": MetadataValue.md(loss_curve),
            # Short enough for the asset page to draw in place; the full plot is one click away.
            "loss": MetadataValue.md(loss_curve_svg_markdown(result.loss_history, f"{name} loss")),
        }
    )


@model_asset
def facetalk_model(context: AssetExecutionContext, config: TrainingConfig, store: StoreResource) -> MaterializeResult:
    """The FaceTalk diffusion model: audio features -> NPHM expression-code sequences.

    Metadata `features_from_random_encoder: true` (and a `warning`) when its training features came
    from the random demo encoder rather than real Wav2Vec2 weights."""
    return _train(context, config, store, "facetalk_model")


class FlameTrainingConfig(TrainingConfig):
    config_path: str = "configs/flame_tiny.yaml"  # configs/flame.yaml for the paper-size model


FLAME_SKIPPED = "skipped: no sequence has FLAME tracking"


@model_asset
def flame_model(context: AssetExecutionContext, config: FlameTrainingConfig, store: StoreResource) -> MaterializeResult:
    """The same denoiser over FLAME vertex offsets (PCA-compressed), trained on the segments of the
    sequences with FLAME tracking; skipped (materialized with that status) when none has it.

    Metadata `features_from_random_encoder: true` (and a `warning`) when its training features came
    from the random demo encoder rather than real Wav2Vec2 weights."""
    segments_dir = current_segments_dir(store.path)
    attrs = SegmentReader(segments_dir, cache_bytes=0).attrs
    if not attrs.get("has_flame", False):
        context.log.warning(
            f"flame_model {FLAME_SKIPPED} in {segments_dir}; the previous FLAME model, if any, stays as it was"
        )
        return MaterializeResult(
            metadata={"status": FLAME_SKIPPED, "segments_version": attrs.get("version", ""), "steps": 0}
        )
    context.log.info(
        f"FLAME: {len(attrs.get('flame_sequences', []))} sequences, {attrs.get('n_flame_segments')} segments"
    )
    return _train(context, config, store, "flame_model")
