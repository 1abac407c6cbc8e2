"""Evaluation: metrics on the held-out identities, and rendered talking heads with their audio."""

import json
import tempfile
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
from storage.atomic import atomic_directory, atomic_write_bytes
from storage.location import StorePath, is_remote
from storage.segments import SegmentReader, current_segments_dir
from storage.transfer import local_copy, staged_directory

BASELINE_CHECK = "model_beats_audio_free_baseline"
PLOTS_PER_FAMILY = 12  # mouth-opening plots inlined in the metadata (all are written to <store>/metrics/plots/)


class EvaluationConfig(Config):
    split: str = "test"
    steps: int = 50  # DDIM steps
    n_samples: int = 3  # K seeds per test sequence for the diversity metric (< 2: no diversity)
    seed: int = 0
    max_sequences: int = 0  # 0: every sequence of the split
    max_frames: int = 0  # 0: whole sequences; else every sequence is cut to this many frames (for every row)
    lip_sync_max_offset: int = 3  # frames the lip-sync measure may shift the generated mouth by
    regions_path: str = ""  # lip / upper-face vertex sets, mouth code dims; default <data root>/_meta/regions.json
    mouth_dims: list[int] = []  # noqa: RUF012 - NPHM code dims of the mouth; [] = the regions file's "expression"
    jaw_dim: int = -1  # NPHM code dim that opens the mouth (lip sync); -1 = the regions file's


def _checkpoint(store: StoreResource, name: str) -> StorePath:
    return store.path / "checkpoints" / name / "model.ckpt"


def _load_model(store: StoreResource, name: str):
    """The published model `name`, read from the store (through a temporary download when remote)."""
    from models.checkpoint import load_motion_model

    with local_copy(_checkpoint(store, name)) as path:
        return load_motion_model(path)


def _mouth_plots(evaluation, store: StoreResource, fps: float) -> str:
    """One mouth-opening PNG per test sequence under <store>/metrics/plots/, and Markdown inlining the first few."""
    from ops.evaluation.plots import mouth_opening_png

    parts = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, (key, tracks) in enumerate(evaluation.tracks.items()):
            name = f"mouth_{evaluation.family}_{key}.png"
            png = mouth_opening_png(tracks, Path(scratch) / name, f"{evaluation.family} {key}: mouth opening", fps)
            atomic_write_bytes(store.path / "metrics" / "plots" / name, png.read_bytes())
            if number < PLOTS_PER_FAMILY:
                parts.append(png_markdown(png, f"{key} mouth opening"))
    return "\n\n".join(parts)


@asset(
    group_name="evaluation",
    deps=[facetalk_model, flame_model],
    check_specs=check_specs("evaluation_metrics", [BASELINE_CHECK], blocking=True),
    kinds={"pytorch"},
)
def evaluation_metrics(
    context: AssetExecutionContext, config: EvaluationConfig, store: StoreResource, dataset: DatasetResource
) -> MaterializeResult:
    """Both models and the audio-free baselines on whole test sequences; blocks unless the model beats
    every audio-free baseline on the lip metrics. Writes <store>/metrics/evaluation.json and, for the
    FLAME model, the files the peers' metric scripts read (<store>/metrics/flame_model/)."""
    from ops.evaluation.evaluate import evaluate_flame_model, evaluate_nphm_model
    from ops.evaluation.export import PeerExport
    from ops.evaluation.gate import baseline_wins, family_gate
    from ops.evaluation.regions import configured_code_regions, read_regions
    from ops.evaluation.report import metrics_markdown

    reader = SegmentReader(current_segments_dir(store.path))
    notes: list[str] = []
    regions_path = Path(config.regions_path) if config.regions_path else dataset.path / "_meta" / "regions.json"
    code_regions = configured_code_regions(regions_path, config.mouth_dims, config.jaw_dim, notes)
    common = dict(
        split=config.split, n_samples=config.n_samples, steps=config.steps, seed=config.seed,
        max_frames=config.max_frames or None, max_sequences=config.max_sequences or None,
        max_offset=config.lip_sync_max_offset, progress=context.log.info,
    )  # fmt: skip
    nphm_model = _load_model(store, "facetalk_model")
    evaluations = [evaluate_nphm_model(nphm_model, reader, store.sequences(), regions=code_regions, **common)]
    export_dir = store.path / "metrics" / "flame_model"
    if not _checkpoint(store, "flame_model").is_file():
        notes.append("no flame_model checkpoint: FLAME metrics skipped")
    elif not reader.has("flame_offsets"):
        notes.append("the segment store has no FLAME offsets: FLAME metrics skipped")
    elif not regions_path.is_file():
        notes.append(f"no lip/upper-face vertex sets at {regions_path}: FLAME metrics skipped (set regions_path)")
    else:
        regions = read_regions(regions_path)
        # np.save writes local files: on an object store the export is staged, then published whole.
        publish = staged_directory if is_remote(export_dir) else atomic_directory
        with publish(export_dir) as tmp:
            evaluations.append(
                evaluate_flame_model(
                    _load_model(store, "flame_model"), reader, regions, store.sequences(),
                    export=PeerExport(tmp, regions.lip, regions.upper_face), **common,
                )
            )  # fmt: skip
    tables = {e.family: e.table for e in evaluations}
    verdicts = {family: family_gate(family, table) for family, table in tables.items()}
    wins = {family: baseline_wins(family, table) for family, table in tables.items()}
    notes += [win for family_wins in wins.values() for win in family_wins]
    for note in notes:
        context.log.warning(note)
    gate = "; ".join(f"{family}: {verdict.explanation()}" for family, verdict in verdicts.items())
    out = store.path / "metrics" / "evaluation.json"
    report = {
        "tables": tables,
        "gate": {family: {"passed": v.passed, "margins": v.margins()} for family, v in verdicts.items()},
        "notes": notes,
    }
    atomic_write_bytes(out, json.dumps(report, indent=2).encode())
    fps = float(nphm_model.meta.fps)
    metadata = {
        "metrics": MetadataValue.md(metrics_markdown(tables, wins)),
        "gate": MetadataValue.text(gate),
        "margins": MetadataValue.json({family: v.margins() for family, v in verdicts.items()}),
        "notes": MetadataValue.json(notes),
        "metrics_json": MetadataValue.path(str(out)),
        "segments": MetadataValue.path(str(reader.path)),
        **({"peer_export": MetadataValue.path(str(export_dir))} if "flame" in tables else {}),
        **{f"{family}_{metric}": value for family, t in tables.items() for metric, value in t["model"].items()},
        **{f"mouth_opening_{e.family}": MetadataValue.md(_mouth_plots(e, store, fps)) for e in evaluations},
    }
    return MaterializeResult(
        metadata=metadata,
        check_results=[
            AssetCheckResult(
                check_name=BASELINE_CHECK,
                passed=all(v.passed for v in verdicts.values()),
                description=gate,
                metadata={"margins": MetadataValue.json({family: v.margins() for family, v in verdicts.items()})},
            )
        ],
    )


class RendersConfig(Config):
    n_sequences: int = 2  # test sequences rendered beside their ground truth
    unseen_audio: list[str] = []  # noqa: RUF012 - pydantic copies defaults; default: the audio files in <data root>/_meta/unseen_audio/
    head: str = "analytic"  # or "nphm" with nphm_checkpoint
    nphm_checkpoint: str = ""
    resolution: int = 64  # marching-cubes grid per axis (64: eyes, lids and lips still read; 256 final)
    video_size: int = 256
    max_seconds: float = 10.0
    steps: int = 50
    facial_smoothing: bool = True  # FaceTalk's post-processing: mouth motion kept, the rest smoothed over time
    smoothing_width: float = 0.1  # standard deviation of the mouth Gaussian, head units


@asset(group_name="evaluation", deps=[facetalk_model], kinds={"video"})
def evaluation_renders(
    context: AssetExecutionContext,
    config: RendersConfig,
    store: StoreResource,
    dataset: DatasetResource,
    audio_encoder: AudioEncoderResource,
) -> MaterializeResult:
    """MP4s with audio: held-out sequences beside their ground truth, and unseen audio files."""
    from ops.evaluation.renders import render_evaluation_videos
    from ops.geometry.facial_smoothing import FacialSmoothing

    unseen = config.unseen_audio or sorted(str(p) for p in (dataset.path / "_meta" / "unseen_audio").glob("*.wav"))
    final = store.path / "renders"
    # ffmpeg writes local files: on an object store they are rendered into a staging directory
    # and published as a whole (completion marker last) when every video is done.
    with staged_directory(final) as out_dir:
        renders = render_evaluation_videos(
            _load_model(store, "facetalk_model"),
            SegmentReader(current_segments_dir(store.path)),
            store.sequences(),
            out_dir,
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
            facial_smoothing=FacialSmoothing(width=config.smoothing_width) if config.facial_smoothing else None,
        )
        videos = [
            str(final / v.relative_to(out_dir).as_posix()) if is_remote(final) else str(v) for v in renders.videos
        ]
        metadata = {
            "videos": MetadataValue.json(videos),
            "first_video": MetadataValue.path(videos[0]) if videos else "",
            "seconds": round(renders.seconds, 1),
            "notes": MetadataValue.json(renders.notes),
        }
        if renders.preview_png is not None:
            metadata["preview"] = MetadataValue.md(png_markdown(renders.preview_png, "first frame"))
    return MaterializeResult(metadata=metadata)
