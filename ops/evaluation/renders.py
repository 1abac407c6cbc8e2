"""Rendered evaluation videos: held-out sequences beside their ground truth, and unseen audio.

NPHM-variant models are meshed with the head model (analytic or NPHM); FLAME-variant ones are
drawn on the store's fixed topology (`flame_faces`), one non-overlapping test window each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.motion_model import MotionModel
from ops.audio.cleaning import clean_audio_file
from ops.evaluation.regions import EvaluationError
from ops.evaluation.sequences import check_features
from ops.geometry.facial_smoothing import FacialSmoothing
from ops.geometry.render import RenderConfig
from ops.geometry.talking_head import (
    expression_meshes,
    render_expression_video,
    render_talking_head,
    talking_head_render_config,
)
from ops.inference import (
    InferenceError,
    audio_features_for,
    identity_for,
    ignored_identity,
    load_encoder_for,
    load_head,
)
from ops.progress import FrameProgress
from ops.tracking.mesh_frames import stored_mesh_frames
from storage.segments import SegmentReader
from storage.sequence_store import SequenceStore

Progress = Callable[[str], None]


@dataclass
class _Clip:
    key: str
    features: np.ndarray  # [T, A]
    codes: np.ndarray  # [T, 200] ground truth
    audio: np.ndarray | None  # samples covering the T frames
    sample_rate: int
    identity: np.ndarray | None  # [1344]


def _load_clip(store: SequenceStore, key: str, fps: float, max_frames: int | None) -> _Clip:
    features = store.read(key, "audio_features", "features")
    codes = store.read(key, "nphm", "expression")
    n = min(len(features), len(codes), max_frames or len(codes))
    nphm = store.open_component(key, "nphm")
    identity = nphm["identity"][...] if "identity" in nphm else None
    audio, rate = None, 16_000
    audio_attrs = store.attrs(key, "audio")
    if audio_attrs is not None:
        rate = int(audio_attrs.get("sample_rate", rate))
        audio = store.read(key, "audio", "samples")[: round(n / fps * rate)]
    return _Clip(key, features[:n].astype(np.float32), codes[:n].astype(np.float32), audio, rate, identity)


def non_overlapping_windows(reader: SegmentReader, split: str = "test", flame: bool = False) -> np.ndarray:
    """Segment indices of `split` (with FLAME only, when `flame`) that do not overlap, per sequence
    (greedy by start frame)."""
    manifest = reader.manifest
    sequences = np.asarray(manifest.column("sequence").to_pylist(), dtype=object)
    starts = manifest.column("start_frame").to_numpy()
    lengths = manifest.column("n_frames").to_numpy()
    kept, next_free = [], {}
    for index in sorted(reader.indices(split, flame=flame), key=lambda i: (sequences[i], starts[i])):
        if starts[index] >= next_free.get(sequences[index], -1):
            kept.append(index)
            next_free[sequences[index]] = starts[index] + lengths[index]
    return np.asarray(kept, dtype=np.int64)


def _templates(reader: SegmentReader, indices: np.ndarray) -> np.ndarray:
    """Per-window neutral template [N, V, 3]: the sequence's own when stored, else the mean one."""
    if reader.has("flame_templates"):
        rows = reader.manifest.column("flame_index").to_numpy()[indices]
        return reader.static("flame_templates")[rows].astype(np.float32)
    if reader.has("flame_template"):
        return np.repeat(reader.static("flame_template")[None].astype(np.float32), len(indices), axis=0)
    raise EvaluationError(f"segment store {str(reader.path)!r} has no flame_templates or flame_template")


class _VideoProgress:
    """`render_expression_video`'s progress as lines through `say`: one FrameProgress per video and stage."""

    def __init__(self, say: Progress, video: Path):
        self.say, self.video = say, video
        self.bar: FrameProgress | None = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.stage = stage
            self.bar = FrameProgress(f"{self.video.name} {stage}", total, self.say, tty=False)
        self.bar.update(done)


@dataclass
class EvaluationRenders:
    videos: list[Path]
    preview_png: Path | None  # first frame of the first video, for asset metadata
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def render_evaluation_videos(
    model: MotionModel,
    reader: SegmentReader,
    store: SequenceStore,
    out_dir: str | Path,
    *,
    dataset_root: str | Path | None = None,
    n_sequences: int = 2,
    split: str = "test",
    unseen_audio: Sequence[str | Path] = (),
    encoder_path: str | Path | None = None,
    head: str = "analytic",
    nphm_checkpoint: str | Path | None = None,
    identity_code: np.ndarray | None = None,
    resolution: int = 48,
    video_size: int = 256,
    render_config: RenderConfig | None = None,
    max_seconds: float = 10.0,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    cpu_threads: int | None = None,
    progress: Progress | None = None,
    facial_smoothing: FacialSmoothing | None = FacialSmoothing(),  # noqa: B008 - frozen dataclass
) -> EvaluationRenders:
    """MP4s with audio: ground truth beside generated for the first `n_sequences` held-out
    sequences and generated-only for every `unseen_audio` file, all cut to `max_seconds`.

    Ground truth is the stored `nphm_meshes` when present (read lazily; by reference from
    `dataset_root`, the data root the sequences were ingested from), else the ground-truth codes
    meshed with the same head. The unseen files are cleaned and encoded like `facetalk animate` does
    (`encoder_path` is then required, with the width the model was trained on); they are voiced
    by `identity_code` (default zeros). Generated codes get FaceTalk's `facial_smoothing` (None:
    raw); the ground truth is shown as tracked. `progress` gets a line per video and, while
    a video is made, a line every ~10% of its frames (or 10 s) with frames/s and ETA.
    Returns the videos and a preview PNG of the first one.
    """
    if model.config.data.variant != "nphm":
        raise EvaluationError(
            "render_evaluation_videos renders NPHM-variant models; use render_flame_evaluation_videos"
        )
    if unseen_audio and encoder_path is None:
        raise InferenceError(f"rendering unseen audio {[str(p) for p in unseen_audio]} needs encoder_path")
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = render_config or talking_head_render_config(video_size)
    head_model = load_head(head, nphm_checkpoint)
    fps = float(model.meta.fps)
    max_frames = max(1, round(max_seconds * fps))
    started = time.perf_counter()
    result = EvaluationRenders([], None)

    keys = [
        k
        for k in reader.sequence_names(split)
        if store.attrs(k, "nphm") is not None and store.attrs(k, "audio_features") is not None
    ]
    for number, key in enumerate(keys[:n_sequences]):
        clip = _load_clip(store, key, fps, max_frames)
        check_features(clip.features, model, f"sequence {key!r}")
        codes = model.generate(clip.features, steps=steps, guidance=guidance, seed=seed + number)
        identity = identity_for(head_model, clip.identity if identity_code is None else identity_code)
        if (ignored := ignored_identity(head_model, identity)) and not any("ignores" in n for n in result.notes):
            result.notes.append(f"identity of {key}: {ignored}")
        if store.attrs(key, "nphm_meshes") is not None:
            truth = stored_mesh_frames(store, key, dataset_root, len(codes))
        else:
            result.notes.append(f"{key}: no nphm_meshes stored; ground truth meshed from its codes")
            truth = expression_meshes(head_model, identity, clip.codes, resolution)
        path = out_dir / f"{split}_{key}.mp4"
        render_expression_video(
            head_model, identity, codes, path, audio_samples=clip.audio, sample_rate=clip.sample_rate,
            fps=fps, resolution=resolution, render_config=config, ground_truth=truth,
            preview_png=out_dir / "preview.png" if result.preview_png is None else None, cpu_threads=cpu_threads,
            smoothing=facial_smoothing, progress=_VideoProgress(say, path),
        )  # fmt: skip
        if result.preview_png is None:
            result.preview_png = out_dir / "preview.png"
        result.videos.append(path)
        say(f"rendered {path} ({len(codes)} frames)")

    if unseen_audio:
        encoder = load_encoder_for(model, "<evaluated model>", encoder_path, next(model.parameters()).device)
        identity = identity_for(head_model, identity_code)
        if identity_code is not None and (ignored := ignored_identity(head_model, identity)):
            result.notes.append(f"identity code for unseen audio: {ignored}")
        for number, audio_path in enumerate(unseen_audio):
            cleaned = clean_audio_file(audio_path)
            features = audio_features_for(cleaned, encoder, fps, max_seconds=max_seconds)
            codes = model.generate(features, steps=steps, guidance=guidance, seed=seed + number)
            path = out_dir / f"unseen_{Path(audio_path).stem}.mp4"
            render_expression_video(
                head_model, identity, codes, path, audio_samples=cleaned.samples, sample_rate=cleaned.sample_rate,
                fps=fps, resolution=resolution, render_config=config, cpu_threads=cpu_threads,
                preview_png=out_dir / "preview.png" if result.preview_png is None else None,
                smoothing=facial_smoothing, progress=_VideoProgress(say, path),
            )  # fmt: skip
            if result.preview_png is None:
                result.preview_png = out_dir / "preview.png"
            result.videos.append(path)
            say(f"rendered {path} ({len(codes)} frames)")
    result.seconds = time.perf_counter() - started
    return result


def render_flame_evaluation_videos(
    model: MotionModel,
    reader: SegmentReader,
    out_dir: str | Path,
    *,
    n_windows: int = 2,
    split: str = "test",
    video_size: int = 256,
    render_config: RenderConfig | None = None,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationRenders:
    """Ground truth beside generated for the first `n_windows` held-out FLAME windows (no audio:
    the segment store keeps features, not waveforms). Faces come from the store's `flame_faces`."""
    if model.config.data.variant != "flame":
        raise EvaluationError(
            f"render_flame_evaluation_videos needs a FLAME-variant model, got {model.config.data.variant!r}"
        )
    if not reader.has("flame_faces"):
        raise EvaluationError(f"segment store {str(reader.path)!r} has no flame_faces to render")
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = reader.static("flame_faces")
    config = render_config or talking_head_render_config(video_size)
    windows = non_overlapping_windows(reader, split, flame=True)[:n_windows]
    sequences = reader.manifest.column("sequence").to_pylist()
    starts = reader.manifest.column("start_frame").to_numpy()
    started = time.perf_counter()
    result = EvaluationRenders([], None)
    for number, index in enumerate(windows):
        audio = reader.read("audio_features", [index])[0]
        check_features(audio, model, f"segment store {str(reader.path)!r}")
        template = _templates(reader, np.array([index]))[0]
        generated = template + model.generate(audio, steps=steps, guidance=guidance, seed=seed + number)
        truth = template + reader.read("flame_offsets", [index])[0]
        path = out_dir / f"{split}_flame_{sequences[index]}_{int(starts[index])}.mp4"
        render_talking_head(
            generated, faces, out_mp4=path, fps=float(model.meta.fps), render_config=config, ground_truth=truth,
            ground_truth_faces=faces, preview_png=out_dir / "preview_flame.png" if result.preview_png is None else None,
        )  # fmt: skip
        if result.preview_png is None:
            result.preview_png = out_dir / "preview_flame.png"
        result.videos.append(path)
        say(f"rendered {path}")
    result.seconds = time.perf_counter() - started
    return result
