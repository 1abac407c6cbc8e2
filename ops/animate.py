"""`facetalk animate`: one audio file + a trained motion model -> a talking-head MP4 (with the audio).

Steps: clean the audio (16 kHz mono, loudness-normalized) -> frozen Wav2Vec2 features aligned to
the model's frame rate -> sample expression codes with the diffusion model -> mesh each frame with
the head model (the analytic demo head, or NPHM weights) -> render with one camera -> H.264 + AAC.

Identity: `identity_code=None` means zeros. For the analytic head that is the average head; for
NPHM it is the prior's mean, within 0.01 per dimension of the released NPHM identity mean
(`assets/nphm_lat_mean.npy`); pass that array (or any fitted identity code) for a specific person.

A FLAME-variant checkpoint generates vertex offsets instead of codes; the checkpoint holds no
template or faces, so it renders only with `flame_template=` a PLY of the template mesh (its vertex
count must match the model's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.checkpoint import CheckpointError, load_motion_model
from models.motion_model import MotionModel
from ops.audio.cleaning import (
    TARGET_RATE,
    CleanedAudio,
    SilentAudioError,
    clean_audio,
    load_audio,
)
from ops.audio.features import frame_count
from ops.geometry.facial_smoothing import FacialSmoothing
from ops.geometry.render import RenderConfig
from ops.geometry.talking_head import (
    render_expression_video,
    render_talking_head,
    talking_head_render_config,
    torch_threads,
    write_meshes_ply,
)
from ops.geometry.video import VideoConfig
from ops.inference import (
    HEADS,
    EncoderMismatchError,
    InferenceError,
    audio_features_for,
    identity_for,
    ignored_identity,
    load_encoder_for,
    load_head,
    resolve_device,
)
from ops.progress import FrameProgress, format_seconds
from ops.tracking.ply import read_ply
from storage.atomic import atomic_file

Progress = Callable[[str], None]
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_VIDEO_SIZE = 512


AnimationError = InferenceError  # the CLI's name for the same family of input errors
AUDIO_TRACKS = ("original", "cleaned")  # what the MP4 carries: the file as given, or what the model heard


@dataclass
class AnimationResult:
    video: Path
    codes: Path | None  # OUT.npz: expression [T, 200] (or vertex_offsets [T, V, 3]), fps, audio_duration_s
    meshes_dir: Path | None  # OUT_meshes/frame_NNNNN.ply when requested
    n_frames: int
    fps: float
    audio_duration_s: float
    device: str
    variant: str  # "nphm" | "flame"
    encoder_random_weights: bool  # True: features (and so the motion) carry no speech content
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step and "total"


def _flame_template(path: str | Path | None, model: MotionModel, checkpoint: str | Path):
    if path is None:
        raise AnimationError(
            f"checkpoint {str(checkpoint)!r} is a FLAME-variant model (it generates vertex offsets for a "
            f"{model.meta.n_vertices}-vertex template, which the checkpoint does not contain); pass "
            "flame_template=<template .ply>, or use an NPHM-variant checkpoint"
        )
    mesh = read_ply(path)
    if len(mesh.vertices) != model.meta.n_vertices:
        raise AnimationError(
            f"FLAME template {str(path)!r} has {len(mesh.vertices)} vertices, the model {str(checkpoint)!r} "
            f"generates offsets for {model.meta.n_vertices}"
        )
    if mesh.faces is None or len(mesh.faces) == 0:
        raise AnimationError(f"FLAME template {str(path)!r} has no faces to render")
    return mesh


_STAGE_NAMES = {"frames": "meshing + rendering"}


class _Bars:
    """Progress per stage ("frames" when meshing and rendering overlap; "meshing", "rendering" otherwise):
    a bar with frames/s and ETA on a terminal, a line every ~10% or 10 s through `say` otherwise."""

    def __init__(self, say: Progress | None):
        self.say = say
        self.bar: FrameProgress | None = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.say is None:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = FrameProgress(_STAGE_NAMES.get(stage, stage), total, self.say)
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cleaned_or_silent(audio_path: str | Path, max_duration_s: float) -> tuple[CleanedAudio | None, float]:
    """(cleaned audio, duration); (None, duration) for a silent file: it gets a neutral, idle face."""
    waveform, rate = load_audio(audio_path, max_duration_s=max_duration_s)
    try:
        cleaned = clean_audio(waveform, rate, max_duration_s=max_duration_s, source=audio_path)
    except SilentAudioError:
        return None, len(waveform) / rate
    return cleaned, cleaned.stats.duration_s


def _save_npz(path: Path, **arrays) -> Path:
    with atomic_file(path, suffix=".npz") as partial:
        np.savez(partial, **arrays)
    return path


def animate_audio(
    audio_path: str | Path,
    checkpoint: str | Path,
    out_mp4: str | Path,
    *,
    encoder_path: str | Path,
    identity_code: np.ndarray | None = None,
    head: str = "analytic",
    nphm_checkpoint: str | Path | None = None,
    flame_template: str | Path | None = None,
    resolution: int = 64,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    device: str = "auto",
    cpu_threads: int | None = None,
    video_size: int = DEFAULT_VIDEO_SIZE,
    render_config: RenderConfig | None = None,
    write_codes: bool = True,
    write_meshes: bool = False,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    audio_track: str = "original",
    progress: Progress | None = None,
    facial_smoothing: FacialSmoothing | None = FacialSmoothing(),  # noqa: B008 - frozen dataclass
    overlap: bool = True,
    mesh_workers: int | None = None,
    video_config: VideoConfig | None = None,
    identity_source: str | None = None,
) -> AnimationResult:
    """Make `out_mp4` (plus OUT.npz with the codes, OUT_meshes/ with PLYs when asked) from speech.

    Raises, each naming the file: AudioError (unreadable, empty, silent or longer than
    max_duration_s audio), CheckpointError (missing, unreadable or incompatible model),
    AudioEncoderLoadError / EncoderMismatchError (encoder weights, or a width != model.audio_dim),
    AnimationError (NPHM head without weights, FLAME model without a template).
    `audio_track`: "original" muxes `audio_path` itself (AAC at its own rate and channels), "cleaned"
    the 16 kHz mono track the model heard; both cut to the video's length.
    `cpu_threads`: torch intra-op threads for every step (1 is fastest on a busy CPU, and lets
    meshing run beside rendering and encoding; None keeps torch's default).
    `facial_smoothing`: FaceTalk's post-processing (ops/geometry/facial_smoothing.py), on by
    default; None meshes the raw codes. `overlap`: mesh frame t+1 while frame t is rendered, on
    `mesh_workers` threads (default: 2 with 2+ cores). `video_config`: x264 settings (default
    VideoConfig at the model's fps).
    Silent audio (nothing above -70 dBFS) gives a neutral, idle face for its duration instead of
    an error. `identity_source` names the identity code in the warning given when the head
    ignores part of it.
    """
    # Every step on `cpu_threads` torch threads: on a busy 2-core CPU, two spinning threads made
    # sampling 6-20x slower than one (bench.animate).
    with torch_threads(cpu_threads):
        say = progress or (lambda message: None)
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        out_mp4 = Path(out_mp4)
        if not out_mp4.parent.is_dir():
            raise FileNotFoundError(f"{out_mp4}: output folder {out_mp4.parent} does not exist")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if audio_track not in AUDIO_TRACKS:
            raise ValueError(f"audio_track must be one of {AUDIO_TRACKS}, got {audio_track!r}")
        if head == "nphm" and nphm_checkpoint is None:
            raise AnimationError("head 'nphm' needs nphm_checkpoint (the NPHM weights); none was given")
        torch_device = resolve_device(device)

        model = load_motion_model(checkpoint, map_location=torch_device)
        variant = model.config.data.variant
        template = _flame_template(flame_template, model, checkpoint) if variant == "flame" else None
        head_model = load_head(head, nphm_checkpoint, torch_device) if variant == "nphm" else None
        identity = identity_for(head_model, identity_code) if head_model is not None else None
        if identity_code is not None and (ignored := ignored_identity(head_model, identity)):
            say(f"warning: identity code {identity_source or '(given)'}: {ignored}")
        say(f"motion model {checkpoint}: {variant} variant, {model.meta.fps} fps, on {torch_device}")

        t = time.perf_counter()
        cleaned, duration = _cleaned_or_silent(audio_path, max_duration_s)
        seconds["audio"] = time.perf_counter() - t
        random_weights = False
        if cleaned is None:
            n_frames = frame_count(duration, model.meta.fps)
            shape = (
                (n_frames, model.meta.n_vertices, 3)
                if variant == "flame"
                else (n_frames, model.config.model.motion_dim)
            )
            motion = np.zeros(shape, dtype=np.float32)  # the neutral code (zero offsets): an idle face
            say(f"audio {audio_path}: {duration:.2f} s of silence: a neutral, idle face for {n_frames} frames")
        else:
            say(f"audio {audio_path}: {duration:.2f} s")
            t = time.perf_counter()
            encoder = load_encoder_for(model, checkpoint, encoder_path, torch_device)
            if encoder.random_init:
                say(f"note: audio encoder {encoder_path} has random weights; the motion will not follow the speech")
            random_weights = encoder.random_init
            features = audio_features_for(cleaned, encoder, model.meta.fps)
            del encoder
            seconds["features"] = time.perf_counter() - t
            n_frames = len(features)

            t = time.perf_counter()
            motion = model.generate(features, steps=steps, guidance=guidance, seed=seed)
            seconds["generation"] = time.perf_counter() - t
            say(f"generated {n_frames} frames ({steps} sampling steps)")

        codes_path = out_mp4.with_suffix(".npz") if write_codes else None
        meshes_dir = out_mp4.with_name(f"{out_mp4.stem}_meshes") if write_meshes else None
        if codes_path is not None:
            name = "expression" if variant == "nphm" else "vertex_offsets"
            _save_npz(codes_path, **{name: motion.astype(np.float32)}, fps=np.float32(model.meta.fps),
                      audio_duration_s=np.float32(duration), seed=np.int64(seed), steps=np.int64(steps))  # fmt: skip

        config = render_config or talking_head_render_config(video_size)
        if audio_track == "original":
            sound = dict(audio_samples=None, sample_rate=None, audio_file=Path(audio_path))
        elif cleaned is None:  # silence: what the model "heard"
            sound = dict(audio_samples=np.zeros(round(duration * TARGET_RATE), np.float32), sample_rate=TARGET_RATE,
                         audio_file=None)  # fmt: skip
        else:
            sound = dict(audio_samples=cleaned.samples, sample_rate=cleaned.sample_rate, audio_file=None)
        bars = _Bars(progress)
        t = time.perf_counter()
        try:
            if variant == "nphm":
                render_expression_video(
                    head_model, identity, motion, out_mp4, **sound, fps=model.meta.fps, resolution=resolution,
                    meshes_dir=meshes_dir, render_config=config, cpu_threads=cpu_threads, progress=bars,
                    smoothing=facial_smoothing, overlap=overlap, mesh_workers=mesh_workers, video_config=video_config,
                )  # fmt: skip
            else:
                vertices = template.vertices[None] + motion  # [T, V, 3]
                if meshes_dir is not None:
                    write_meshes_ply([(frame, template.faces) for frame in vertices], meshes_dir)
                render_talking_head(
                    vertices, template.faces, out_mp4=out_mp4, **sound, fps=model.meta.fps, render_config=config,
                    progress=lambda done, total: bars("rendering", done, total),
                )  # fmt: skip
        finally:
            bars.close()
        seconds["meshing_and_rendering"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - started
        say(
            f"wrote {out_mp4}: {n_frames / model.meta.fps:.2f} s of video ({n_frames} frames at {model.meta.fps:g} fps) "
            f"in {format_seconds(seconds['total'])} elapsed"
        )
        return AnimationResult(
            video=out_mp4, codes=codes_path, meshes_dir=meshes_dir, n_frames=n_frames, fps=float(model.meta.fps),
            audio_duration_s=duration, device=str(torch_device), variant=variant,
            encoder_random_weights=random_weights, seconds=seconds,
        )  # fmt: skip


__all__ = [
    "AnimationError",
    "AnimationResult",
    "CheckpointError",
    "EncoderMismatchError",
    "animate_audio",
    "load_head",
    "resolve_device",
]
