"""Model assets: the diffusion model over NPHM codes and its FLAME-vertex variant.

Both train in a process of their own, launched through Dagster Pipes by the `training_launcher`
resource (`pipelines/training_launch.py`: a subprocess by default, a Kubernetes pod by
configuration), which runs `models.train.train`, the same entry point as `python -m models.train
-c ...`. Logs, progress and the final metadata stream back; a crashed or killed training process
fails the asset with its own error and leaves the previous `model.ckpt` published. They run in the
`gpu` pool (one at a time per instance) and resume from the last checkpoint of an interrupted run
when retried.
"""

from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, Config, MaterializeResult, RetryPolicy, asset

from pipelines.assets.segments import training_segments
from pipelines.k8s_pods import gpu_tags
from pipelines.resources import StoreResource
from pipelines.training_launch import TrainingLauncher, launcher_kind_from_env
from storage.location import is_remote
from storage.segments import SegmentReader, current_segments_dir

# Training runs one at a time in the `gpu` pool; a retry resumes from the last checkpoint. On
# Kubernetes with the step-per-pod executor, each training step's pod asks for a GPU node, unless
# training runs in a pod of its own (FACETALK_TRAINING_LAUNCHER=k8s): then that pod asks for it.
model_asset = asset(
    group_name="training",
    deps=[training_segments],
    pool="gpu",
    op_tags=gpu_tags() if launcher_kind_from_env() == "subprocess" else {},
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
    context: AssetExecutionContext, config: TrainingConfig, store: StoreResource, launcher: TrainingLauncher, name: str
) -> MaterializeResult:
    settings = config.model_dump()
    if Path(config.config_path).exists():  # relative to this process's directory; else the child's project
        settings["config_path"] = str(Path(config.config_path).absolute())
    root = store.path
    request: dict[str, Any] = {
        "asset": name,
        "store": str(root if is_remote(root) else Path(root).absolute()),
        "config": settings,
    }
    context.log.info(f"{name}: launching the training process ({launcher.kind}, pipelines.training_process)")
    return launcher.train(context, request)


@model_asset
def facetalk_model(
    context: AssetExecutionContext, config: TrainingConfig, store: StoreResource, training_launcher: TrainingLauncher
) -> MaterializeResult:
    """The FaceTalk diffusion model: audio features -> NPHM expression-code sequences.

    Metadata `features_from_random_encoder: true` (and a `warning`) when its training features came
    from the random demo encoder rather than real Wav2Vec2 weights."""
    return _train(context, config, store, training_launcher, "facetalk_model")


class FlameTrainingConfig(TrainingConfig):
    config_path: str = "configs/flame_tiny.yaml"  # configs/flame.yaml for the paper-size model


FLAME_SKIPPED = "skipped: no sequence has FLAME tracking"


@model_asset
def flame_model(
    context: AssetExecutionContext,
    config: FlameTrainingConfig,
    store: StoreResource,
    training_launcher: TrainingLauncher,
) -> MaterializeResult:
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
    return _train(context, config, store, training_launcher, "flame_model")
