"""Expression codes -> per-frame head meshes -> shaded frames -> an MP4 with the speech muxed in.

Camera: one `Renderer` and one camera for the whole clip, fitted to the bounds of every frame (and
of the ground truth, when shown beside it), so the head neither jumps nor breathes in size.
NPHM's canonical axes (models/heads/analytic.py, the same for NPHM and FLAME): y up, the face looks
toward +z, so the camera sits on +z looking down -z with y up.

Memory: a marching-cubes mesh at resolution 64 is ~250 kB; ten minutes of speech at 24 fps would
be 3.6 GB of meshes. `render_expression_video` therefore writes each mesh to a PLY as soon as it
is made (into the requested meshes folder, or a temporary one beside the video) while tracking
the sequence bounds, and the render pass reads the frames back one at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from models.heads.base import HeadModel
from ops.geometry.facial_smoothing import FacialSmoothing, smoothing_heads
from ops.geometry.mesh_stream import MeshStream, head_device
from ops.geometry.meshing import NPHM_BOUNDS, Bounds, Mesh, extract_mesh
from ops.geometry.render import MeshFrame, RenderConfig, Renderer, sequence_bounds, side_by_side
from ops.geometry.video import Mp4Writer, VideoConfig
from ops.tracking.ply import read_ply, write_ply

FrameProgress = Callable[[int, int], None]  # (frames done, frames total)
StageProgress = Callable[[str, int, int], None]  # (stage "meshing" | "rendering", done, total)

# From the subject toward the camera, and up: NPHM canonical space (face toward +z, y up).
HEAD_VIEW_DIRECTION = (0.0, 0.0, 1.0)
HEAD_UP = (0.0, 1.0, 0.0)


def talking_head_render_config(size: int = 512, **overrides) -> RenderConfig:
    """A square frontal portrait of a head in NPHM canonical axes."""
    return RenderConfig(width=size, height=size, view_direction=HEAD_VIEW_DIRECTION, up=HEAD_UP, **overrides)


# ----------------------------------------------------------------------------- meshing


def iter_expression_meshes(
    head: HeadModel,
    identity: np.ndarray,
    codes: np.ndarray,
    resolution: int = 64,
    method: str = "coarse_to_fine",
    bounds: Bounds = NPHM_BOUNDS,
    smoothing: FacialSmoothing | None = None,
) -> Iterator[Mesh]:
    """One marching-cubes mesh per frame of codes [T, 200], made lazily; with `smoothing`, the
    facial smoothing of `ops.geometry.facial_smoothing` (mouth motion kept, the rest smoothed)."""
    identity, codes = checked_codes(head, identity, codes)
    for frame, (frame_head, code) in enumerate(zip(smoothing_heads(head, codes, smoothing), codes, strict=True)):
        try:
            yield extract_mesh(frame_head, identity, code, resolution=resolution, method=method, bounds=bounds)
        except ValueError as error:
            raise ValueError(f"frame {frame}: {error}") from error


def checked_codes(head: HeadModel, identity: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(identity [identity_dim], codes [T>0, expression_dim]) as float32, or ValueError saying what is wrong."""
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[1] != head.expression_dim or len(codes) == 0:
        raise ValueError(f"expression codes must be [T>0, {head.expression_dim}], got {codes.shape}")
    identity = np.asarray(identity, dtype=np.float32)
    if identity.shape != (head.identity_dim,):
        raise ValueError(f"identity code must be [{head.identity_dim}], got {identity.shape}")
    return identity, codes


def expression_meshes(
    head: HeadModel,
    identity: np.ndarray,
    codes: np.ndarray,
    resolution: int = 64,
    method: str = "coarse_to_fine",
    progress: FrameProgress | None = None,
    bounds: Bounds = NPHM_BOUNDS,
    smoothing: FacialSmoothing | None = None,
) -> list[Mesh]:
    """Per-frame meshes of identity [1344] + codes [T, 200], all in memory (short clips)."""
    meshes = []
    for mesh in iter_expression_meshes(head, identity, codes, resolution, method, bounds, smoothing):
        meshes.append(mesh)
        if progress is not None:
            progress(len(meshes), len(codes))
    return meshes


def frame_file(folder: Path, frame: int) -> Path:
    return Path(folder) / f"frame_{frame:05d}.ply"


def write_meshes_ply(meshes: Sequence[Mesh | MeshFrame], folder: str | Path) -> list[Path]:
    """Write frame_00000.ply, frame_00001.ply, ... into `folder` (created); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame, (vertices, faces) in enumerate(mesh_frames(meshes)):
        path = frame_file(folder, frame)
        write_ply(path, vertices, faces)
        paths.append(path)
    return paths


class PlyMeshSequence(Sequence[MeshFrame]):
    """Frames stored as PLY files, read one at a time when indexed (bounded memory)."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return PlyMeshSequence(self.paths[index])
        mesh = read_ply(self.paths[index])
        return mesh.vertices, mesh.faces


# ----------------------------------------------------------------------------- frames


def mesh_frames(meshes_or_vertex_sequence, faces: np.ndarray | None = None) -> Sequence[MeshFrame]:
    """Any of: vertices [T, V, 3] (+ `faces` [F, 3]), a sequence of `Mesh`, or of (vertices, faces)
    -> a re-iterable sequence of (vertices, faces) frames."""
    if isinstance(meshes_or_vertex_sequence, np.ndarray):
        vertices = meshes_or_vertex_sequence
        if vertices.ndim != 3 or vertices.shape[2] != 3 or len(vertices) == 0:
            raise ValueError(f"a vertex sequence must be [T>0, V, 3], got {vertices.shape}")
        if faces is None:
            raise ValueError("a vertex sequence [T, V, 3] needs `faces` [F, 3]")
        faces = np.asarray(faces)
        return [(frame, faces) for frame in vertices]
    if faces is not None:
        raise ValueError("`faces` goes with a vertex array [T, V, 3]; meshes carry their own faces")
    if isinstance(meshes_or_vertex_sequence, Sequence) and not isinstance(meshes_or_vertex_sequence, (list, tuple)):
        return meshes_or_vertex_sequence  # a lazy sequence (PLY files, a stored component): read per frame
    frames = [(m.vertices, m.faces) if isinstance(m, Mesh) else (m[0], m[1]) for m in meshes_or_vertex_sequence]
    if not frames:
        raise ValueError("no frames to render")
    return frames


def _union(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])


def _trimmed_audio(samples: np.ndarray | None, sample_rate: int | None, n_frames: int, fps: float):
    """The audio cut to the video's length (n_frames / fps), so both streams end together."""
    if samples is None:
        return None
    samples = np.asarray(samples, dtype=np.float32)
    if sample_rate is None or sample_rate <= 0:
        raise ValueError(f"audio samples need a positive sample_rate, got {sample_rate}")
    keep = round(n_frames / fps * sample_rate)
    return samples[:keep] if len(samples) > keep else samples


def save_png(path: str | Path, frame: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(frame).save(path)
    return Path(path)


def render_talking_head(
    meshes_or_vertex_sequence,
    faces: np.ndarray | None = None,
    *,
    out_mp4: str | Path,
    audio_samples: np.ndarray | None = None,
    sample_rate: int | None = None,
    audio_file: str | Path | None = None,
    fps: float,
    render_config: RenderConfig | None = None,
    ground_truth=None,
    ground_truth_faces: np.ndarray | None = None,
    labels: tuple[str, str] = ("ground truth", "generated"),
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    preview_png: str | Path | None = None,
    video_config: VideoConfig | None = None,
    progress: FrameProgress | None = None,
) -> Path:
    """Render a head sequence into an H.264 MP4 with the audio muxed; returns the MP4's path.

    meshes_or_vertex_sequence: see `mesh_frames`. With `ground_truth` (same forms), each frame is
    ground truth (left) beside generated (right) under one camera, paired up to the shorter one.
    The audio, mono float samples or `audio_file` (any file ffmpeg reads, muxed at its own rate and
    channels), is cut to the video's length. `bounds` (min [3], max [3]) skips
    the pass over all frames that fitting the camera otherwise needs (the ground truth's bounds are
    still added). `preview_png` saves the first frame.
    """
    generated = mesh_frames(meshes_or_vertex_sequence, faces)
    if bounds is None:
        bounds = sequence_bounds(vertices for vertices, _ in generated)
    return _encode_frames(
        (generated[frame] for frame in range(len(generated))), len(generated), out_mp4=out_mp4,
        audio_samples=audio_samples, sample_rate=sample_rate, audio_file=audio_file, fps=fps,
        render_config=render_config, ground_truth=ground_truth, ground_truth_faces=ground_truth_faces, labels=labels,
        bounds=bounds, preview_png=preview_png, video_config=video_config, progress=progress,
    )  # fmt: skip


def _encode_frames(
    generated: Iterable[MeshFrame],
    n_generated: int,
    *,
    out_mp4: str | Path,
    audio_samples: np.ndarray | None,
    sample_rate: int | None,
    audio_file: str | Path | None,
    fps: float,
    render_config: RenderConfig | None,
    ground_truth,
    ground_truth_faces: np.ndarray | None,
    labels: tuple[str, str],
    bounds: tuple[np.ndarray, np.ndarray],
    preview_png: str | Path | None,
    video_config: VideoConfig | None,
    progress: FrameProgress | None,
) -> Path:
    """Render frames as they come (an iterator: they may still be in the making) into the MP4."""
    config = render_config or talking_head_render_config()
    reference = None
    n_frames = n_generated
    if ground_truth is not None:
        reference = mesh_frames(ground_truth, ground_truth_faces)
        known = getattr(reference, "bounds", None)  # stored meshes know theirs: no pass over the frames
        bounds = _union(bounds, known() if callable(known) else sequence_bounds(v for v, _ in reference))
        n_frames = min(n_frames, len(reference))
    if audio_file is not None and audio_samples is not None:
        raise ValueError("pass the audio as samples or as a file, not both")
    audio = _trimmed_audio(audio_samples, sample_rate, n_frames, fps) if audio_file is None else Path(audio_file)
    out_mp4 = Path(out_mp4)
    width = config.width * (2 if reference is not None else 1)
    with Renderer(config) as renderer:
        renderer.fit_camera(*bounds)
        with Mp4Writer(
            out_mp4, width, config.height, video_config or VideoConfig(fps=fps), audio, sample_rate,
            audio_seconds=n_frames / fps if audio_file is not None else None,
        ) as writer:  # fmt: skip
            for frame, mesh in zip(range(n_frames), generated):
                image = renderer.render(*mesh)
                if reference is not None:
                    image = side_by_side(renderer.render(*reference[frame]), image, labels)
                if frame == 0 and preview_png is not None:
                    save_png(preview_png, image)
                writer.write(image)
                if progress is not None:
                    progress(frame + 1, n_frames)
    return out_mp4


# ----------------------------------------------------------------------------- codes -> video


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with n torch intra-op threads (None: leave as is), restoring them after.

    Meshing the analytic head evaluates ~10-30k points per call: too little work to share, and on
    a busy machine two spinning OpenMP threads made it ~15x slower than one (measured, 2 cores).
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def estimated_bounds(
    head: HeadModel,
    identity: np.ndarray,
    codes: np.ndarray,
    *,
    smoothing: FacialSmoothing | None = None,
    bounds: Bounds = NPHM_BOUNDS,
    resolution: int = 32,
    samples: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """The clip's bounding box before its frames are meshed, so rendering can start with frame 0.

    Coarse meshes (`resolution`^3, ~1/8 of a 64^3 frame's work) of `samples` frames spread over
    the clip plus the frame farthest from the mean code, padded by one coarse voxel (a coarse
    surface is within a voxel of the fine one). Frames in between move little from their
    neighbours, and the camera's framing margin covers the rest.
    """
    codes = np.asarray(codes, dtype=np.float32)
    picks = set(np.linspace(0, len(codes) - 1, min(samples, len(codes))).round().astype(int).tolist())
    picks.add(int(np.linalg.norm(codes - codes.mean(axis=0), axis=1).argmax()))
    heads = smoothing_heads(head, codes, smoothing)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for frame in sorted(picks):
        mesh = extract_mesh(heads[frame], identity, codes[frame], resolution=resolution, bounds=bounds)
        lo, hi = np.minimum(lo, mesh.vertices.min(axis=0)), np.maximum(hi, mesh.vertices.max(axis=0))
    voxel = (np.asarray(bounds[1]) - np.asarray(bounds[0])) / (resolution - 1)
    return np.maximum(lo - voxel, bounds[0]), np.minimum(hi + voxel, bounds[1])


def render_expression_video(
    head: HeadModel,
    identity: np.ndarray,
    codes: np.ndarray,
    out_mp4: str | Path,
    *,
    audio_samples: np.ndarray | None,
    sample_rate: int | None,
    fps: float,
    audio_file: str | Path | None = None,
    resolution: int = 64,
    method: str = "coarse_to_fine",
    meshes_dir: str | Path | None = None,
    render_config: RenderConfig | None = None,
    ground_truth=None,
    preview_png: str | Path | None = None,
    cpu_threads: int | None = None,
    progress: StageProgress | None = None,
    smoothing: FacialSmoothing | None = None,
    overlap: bool = True,
    mesh_workers: int | None = None,
    video_config: VideoConfig | None = None,
) -> Path:
    """Mesh every frame of codes [T, 200] and render them with the audio, in bounded memory.

    `overlap` (default): frame t+1 is meshed on a worker thread while frame t is rendered and
    encoded (`MeshStream`, `mesh_workers` threads, default `default_mesh_workers()`); the camera is fitted to `estimated_bounds`; progress reports stage
    "frames" (meshed and rendered). Without it, two passes: every mesh is written to a PLY while
    the exact bounds are tracked, then the frames are read back and rendered (stages "meshing",
    "rendering"). Meshes go to `meshes_dir` as frame_NNNNN.ply when given (kept); the two-pass
    way spills them to a temporary folder beside the video otherwise (removed afterwards).
    `smoothing`: facial smoothing (`ops.geometry.facial_smoothing`), None for the raw codes.
    The audio: samples, or `audio_file` (see `render_talking_head`). `cpu_threads` sets torch's
    intra-op threads while meshing (see `torch_threads`).
    """
    out_mp4 = Path(out_mp4)
    if not out_mp4.parent.is_dir():
        raise FileNotFoundError(f"{out_mp4}: output folder {out_mp4.parent} does not exist")
    identity, codes = checked_codes(head, identity, codes)
    encode = dict(
        out_mp4=out_mp4, audio_samples=audio_samples, sample_rate=sample_rate, audio_file=audio_file, fps=fps,
        render_config=render_config, ground_truth=ground_truth, ground_truth_faces=None,
        labels=("ground truth", "generated"), preview_png=preview_png, video_config=video_config,
    )  # fmt: skip
    if overlap:
        return _overlapped(
            head,
            identity,
            codes,
            resolution,
            method,
            meshes_dir,
            cpu_threads,
            progress,
            smoothing,
            encode,
            mesh_workers,
        )
    spill = (
        Path(meshes_dir)
        if meshes_dir is not None
        else Path(tempfile.mkdtemp(prefix=f".{out_mp4.stem}-meshes-", dir=out_mp4.parent))
    )
    spill.mkdir(parents=True, exist_ok=True)
    try:
        paths: list[Path] = []
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        with torch_threads(cpu_threads):
            meshes = iter_expression_meshes(head, identity, codes, resolution, method, smoothing=smoothing)
            for frame, mesh in enumerate(meshes):
                path = frame_file(spill, frame)
                write_ply(path, mesh.vertices, mesh.faces)
                paths.append(path)
                lo, hi = np.minimum(lo, mesh.vertices.min(axis=0)), np.maximum(hi, mesh.vertices.max(axis=0))
                if progress is not None:
                    progress("meshing", frame + 1, len(codes))
        report = (lambda done, total: progress("rendering", done, total)) if progress is not None else None
        frames = PlyMeshSequence(paths)
        return _encode_frames(iter(frames), len(frames), bounds=(lo, hi), progress=report, **encode)
    finally:
        if meshes_dir is None:
            shutil.rmtree(spill, ignore_errors=True)


def default_mesh_workers() -> int:
    """Meshing threads beside the render thread: two on a machine with 2+ cores (measured on 2 cores:
    one meshes while the other renders and encodes, and meshing is the slower stage), else one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def _overlapped(
    head, identity, codes, resolution, method, meshes_dir, cpu_threads, progress, smoothing, encode, workers
):
    """`render_expression_video` with meshing on worker threads, ahead of rendering."""
    folder = Path(meshes_dir) if meshes_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    heads = smoothing_heads(head, codes, smoothing)

    def make(frame: int) -> Mesh:
        try:
            return extract_mesh(heads[frame], identity, codes[frame], resolution=resolution, method=method)
        except ValueError as error:
            raise ValueError(f"frame {frame}: {error}") from error

    def keep(frame: int, mesh: Mesh) -> None:
        if folder is not None:
            write_ply(frame_file(folder, frame), mesh.vertices, mesh.faces)

    report = (lambda done, total: progress("frames", done, total)) if progress is not None else None
    with torch_threads(cpu_threads):
        bounds = estimated_bounds(head, identity, codes, smoothing=smoothing)
        stream = MeshStream(make, len(codes), workers=workers or default_mesh_workers(), device=head_device(head),
                            on_mesh=keep)  # fmt: skip
        with stream:
            frames = ((mesh.vertices, mesh.faces) for mesh in stream)
            return _encode_frames(frames, len(codes), bounds=bounds, progress=report, **encode)
