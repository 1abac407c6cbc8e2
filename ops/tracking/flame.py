"""Reader for FLAME tracking output: a template mesh and one fixed-topology mesh per frame.

Layout inside a sequence folder:

    flame_2023_tracking/flame_2023_template.ply           template: vertices and faces
    flame_2023_tracking/flame_meshes/frame_<n>.ply        per frame: same vertex count and faces

Every frame shares the template's topology, so only frame vertices are decoded; the faces are
taken from the template and not re-read per frame (they are trusted). By default the first
frame's faces are compared with the template's once, which catches a sequence tracked on another
template at the cost of one full read. A frame with a different vertex count is an error naming
the frame, the expected and the found count.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ops.tracking.errors import TrackingError
from ops.tracking.frame_files import list_frames
from ops.tracking.ply import read_ply, read_ply_vertices, require_finite_vertices

__all__ = [
    "FLAME_MESHES_DIR",
    "FLAME_TEMPLATE",
    "FLAME_TRACKING_DIR",
    "FlameFrames",
    "FlameTracking",
    "open_flame_tracking",
    "read_flame_tracking",
]

FLAME_TRACKING_DIR = Path("flame_2023_tracking")
FLAME_TEMPLATE = FLAME_TRACKING_DIR / "flame_2023_template.ply"
FLAME_MESHES_DIR = FLAME_TRACKING_DIR / "flame_meshes"


@dataclass(frozen=True)
class FlameTracking:
    vertices: np.ndarray  # [T, V, 3] float32
    template_vertices: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int32, the template's
    frame_numbers: np.ndarray  # [T] int64, consecutive

    def __len__(self) -> int:
        return len(self.vertices)


@dataclass(frozen=True)
class FlameFrames:
    """A FLAME sequence opened but not read: the template, its faces and the frame files."""

    template_vertices: np.ndarray  # [V, 3] float32
    faces: np.ndarray  # [F, 3] int32
    frames: list[tuple[int, Path]]  # (frame number, path), consecutive

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def n_vertices(self) -> int:
        return len(self.template_vertices)

    @property
    def frame_numbers(self) -> np.ndarray:
        return np.array([n for n, _ in self.frames], dtype=np.int64)

    def read_into(self, rows: range, out: np.ndarray, workers: int = 1) -> np.ndarray:
        """Vertices of frames `rows` into out [len(rows), V, 3]; NaN/Inf raise naming the frame."""

        def read_frame(k: int) -> None:
            path = self.frames[rows[k]][1]
            read_ply_vertices(path, expected_vertex_count=self.n_vertices, out=out[k], check_finite=False)

        if workers > 1 and len(rows) > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(read_frame, range(len(rows))))  # list(): re-raises the first error
        else:
            for k in range(len(rows)):
                read_frame(k)
        if not np.isfinite(out).all():  # one pass over the block; find the frame only on failure
            bad = int(np.flatnonzero(~np.isfinite(out).reshape(len(rows), -1).all(axis=1))[0])
            require_finite_vertices(self.frames[rows[bad]][1], out[bad])
        return out

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """Vertices [<= block_frames, V, 3] block after block, in one reused buffer (copy to keep)."""
        buffer = np.empty((min(block_frames, max(len(self), 1)), self.n_vertices, 3), dtype=np.float32)
        for start in range(0, len(self), block_frames):
            rows = range(start, min(start + block_frames, len(self)))
            yield self.read_into(rows, buffer[: len(rows)])


def open_flame_tracking(seq_dir: str | Path, verify_first_frame_faces: bool = True) -> FlameFrames:
    """Read the FLAME template and list the frames; the frames' vertices are read on demand."""
    seq_dir = Path(seq_dir)
    template_path = seq_dir / FLAME_TEMPLATE
    if not template_path.is_file():
        raise TrackingError(template_path, "FLAME template is missing")
    template = read_ply(template_path)
    if template.faces is None or len(template.faces) == 0:
        raise TrackingError(template_path, "FLAME template has no faces")
    frames = list_frames(seq_dir / FLAME_MESHES_DIR, ".ply")
    if verify_first_frame_faces:
        _require_template_faces(frames[0][1], template.faces, len(template.vertices))
    return FlameFrames(template.vertices, template.faces, frames)


def read_flame_tracking(
    seq_dir: str | Path,
    verify_first_frame_faces: bool = True,
    workers: int = 1,
) -> FlameTracking:
    """Read the FLAME template and every frame of a sequence folder into one [T, V, 3] array.

    Each frame is read straight into its slice of the result, so no per-frame arrays are kept.
    `workers` > 1 reads frames on a thread pool: useful where file reads wait on storage (network
    filesystems); from a local page cache the reader is CPU-bound and threads do not help.
    Ingestion streams instead (`open_flame_tracking(...).blocks`).
    """
    flame = open_flame_tracking(seq_dir, verify_first_frame_faces)
    vertices = np.empty((len(flame), flame.n_vertices, 3), dtype=np.float32)
    flame.read_into(range(len(flame)), vertices, workers)
    return FlameTracking(
        vertices=vertices,
        template_vertices=flame.template_vertices,
        faces=flame.faces,
        frame_numbers=flame.frame_numbers,
    )


def _require_template_faces(path: Path, template_faces: np.ndarray, n_vertices: int) -> None:
    mesh = read_ply(path)
    if len(mesh.vertices) != n_vertices:
        raise TrackingError(path, f"has {len(mesh.vertices)} vertices, expected {n_vertices} (the template's)")
    # A frame written without faces is fine (vertices-only export); different faces are not.
    if mesh.faces is not None and not np.array_equal(mesh.faces, template_faces):
        raise TrackingError(
            path,
            f"faces differ from the FLAME template's ({len(mesh.faces)} faces, template has "
            f"{len(template_faces)}); frames must share the template topology",
        )
