"""Evaluation: metrics on the held-out identities, and rendered talking heads with their audio."""

import json
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ops.evaluation.plots import png_markdown
from pipelines.assets.training import facetalk_model, flame_model
from pipelines.resources import AudioEncoderResource, DatasetResource, StoreResource
from pipelines.results import check_specs
from storage.atomic import atomic_write_bytes
from storage.segments import SegmentReader, current_segments_dir

BASELINE_CHECK = "model_beats_audio_free_baseline"


class EvaluationConfig(Config):
    split: str = "test"
    steps: int = 50  # DDIM steps
    n_samples: int = 3  # samples per clip for the diversity metric
    seed: int = 0
    max_sequences: int = 0  # 0: every sequence of the split
    regions_path: str = ""  # lip / upper-face vertex sets, mouth code dims; default <data root>/_meta/regions.json


def _checkpoint(store: StoreResource, name: str) -> Path:
    return store.path / "checkpoints" / name / "model.ckpt"


def metrics_markdown(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    """One Markdown table per model family: rows = model and baselines, columns = metrics."""
    lines = []
    for family, table in tables.items():
        rows = {name: row for name, row in table.items() if name != "data"}
        metrics = sorted({metric for row in rows.values() for metric in row})
        lines += [f"**{family}**", "", "| | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4g}" if m in row else "" for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


@asset(
    group_name="evaluation",
    deps=[facetalk_model, flame_model],
    check_specs=check_specs("evaluation_metrics", [BASELINE_CHECK], blocking=True),
    kinds={"pytorch"},
)
def evaluation_metrics(
    context: AssetExecutionContext, config: EvaluationConfig, store: StoreResource, dataset: DatasetResource
) -> MaterializeResult:
    """Both models and the audio-free baselines on the test identities; blocks when the model is not better."""
    from models.checkpoint import load_motion_model
    from ops.evaluation.evaluate import (
        better_than_baseline,
        evaluate_flame_model,
        evaluate_nphm_model,
        read_code_regions,
        read_regions,
    )

    reader = SegmentReader(current_segments_dir(store.path))
    max_sequences = config.max_sequences or None
    notes = []
    regions_path = Path(config.regions_path) if config.regions_path else dataset.path / "_meta" / "regions.json"
    code_regions = read_code_regions(regions_path)
    if code_regions is None:
        notes.append(
            f"no 'expression' mouth/jaw dims in {regions_path}: mouth metrics use the whole code, lip sync dim 0"
        )
    tables = {
        "nphm": evaluate_nphm_model(
            load_motion_model(_checkpoint(store, "facetalk_model")), reader, store.sequences(), split=config.split,
            regions=code_regions, n_samples=config.n_samples, steps=config.steps, seed=config.seed,
            max_sequences=max_sequences, progress=context.log.info,
        )
    }  # fmt: skip
    if not _checkpoint(store, "flame_model").is_file():
        notes.append("no flame_model checkpoint: FLAME metrics skipped")
    elif not reader.has("flame_offsets"):
        notes.append("the segment store has no FLAME offsets: FLAME metrics skipped")
    elif not regions_path.is_file():
        notes.append(f"no lip/upper-face vertex sets at {regions_path}: FLAME metrics skipped (set regions_path)")
    else:
        tables["flame"] = evaluate_flame_model(
            load_motion_model(_checkpoint(store, "flame_model")), reader, read_regions(regions_path), split=config.split,
            n_samples=config.n_samples, steps=config.steps, seed=config.seed, progress=context.log.info,
        )  # fmt: skip
    for note in notes:
        context.log.warning(note)

    verdicts = {family: better_than_baseline(table) for family, table in tables.items()}
    out = store.path / "metrics" / "evaluation.json"
    atomic_write_bytes(out, json.dumps({"tables": tables, "notes": notes}, indent=2).encode())
    return MaterializeResult(
        metadata={
            "metrics": MetadataValue.md(metrics_markdown(tables)),
            "metrics_json": MetadataValue.path(str(out)),
            "segments": MetadataValue.path(str(reader.path)),
            "notes": MetadataValue.json(notes),
            **{f"{family}_{metric}": value for family, t in tables.items() for metric, value in t["model"].items()},
        },
        check_results=[
            AssetCheckResult(
                check_name=BASELINE_CHECK,
                passed=all(passed for passed, _ in verdicts.values()),
                description="; ".join(f"{family}: {why}" for family, (_, why) in verdicts.items()),
            )
        ],
    )


class RendersConfig(Config):
    n_sequences: int = 2  # test sequences rendered beside their ground truth
    unseen_audio: list[str] = []  # noqa: RUF012 - pydantic copies defaults; default: the audio files in <data root>/_meta/unseen_audio/
    head: str = "analytic"  # or "nphm" with nphm_checkpoint
    nphm_checkpoint: str = ""
    resolution: int = 48  # marching-cubes grid per axis (64 preview, 256 final)
    video_size: int = 256
    max_seconds: float = 10.0
    steps: int = 50


@asset(group_name="evaluation", deps=[facetalk_model], kinds={"video"})
def evaluation_renders(
    context: AssetExecutionContext,
    config: RendersConfig,
    store: StoreResource,
    dataset: DatasetResource,
    audio_encoder: AudioEncoderResource,
) -> MaterializeResult:
    """MP4s with audio: held-out sequences beside their ground truth, and unseen audio files."""
    from models.checkpoint import load_motion_model
    from ops.evaluation.evaluate import render_evaluation_videos

    unseen = config.unseen_audio or sorted(str(p) for p in (dataset.path / "_meta" / "unseen_audio").glob("*.wav"))
    renders = render_evaluation_videos(
        load_motion_model(_checkpoint(store, "facetalk_model")),
        SegmentReader(current_segments_dir(store.path)),
        store.sequences(),
        store.path / "renders",
        dataset_root=dataset.path,  # nphm_meshes stored by reference are read from there
        n_sequences=config.n_sequences,
        unseen_audio=unseen,
        encoder_path=audio_encoder.source().path,
        head=config.head,
        nphm_checkpoint=config.nphm_checkpoint or None,
        resolution=config.resolution,
        video_size=config.video_size,
        max_seconds=config.max_seconds,
        steps=config.steps,
        progress=context.log.info,
    )
    metadata = {
        "videos": MetadataValue.json([str(v) for v in renders.videos]),
        "first_video": MetadataValue.path(str(renders.videos[0])) if renders.videos else "",
        "seconds": round(renders.seconds, 1),
        "notes": MetadataValue.json(renders.notes),
    }
    if renders.preview_png is not None:
        metadata["preview"] = MetadataValue.md(png_markdown(renders.preview_png, "first frame"))
    return MaterializeResult(metadata=metadata)
