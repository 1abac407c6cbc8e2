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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ops.tracking.errors import TrackingError
from ops.tracking.frame_files import list_frames
from ops.tracking.ply import read_ply, read_ply_vertices, require_finite_vertices

__all__ = ["FLAME_MESHES_DIR", "FLAME_TEMPLATE", "FLAME_TRACKING_DIR", "FlameTracking", "read_flame_tracking"]

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


def read_flame_tracking(
    seq_dir: str | Path,
    verify_first_frame_faces: bool = True,
    workers: int = 1,
) -> FlameTracking:
    """Read the FLAME template and every frame of a sequence folder into one [T, V, 3] array.

    Each frame is read straight into its slice of the result, so no per-frame arrays are kept.
    `workers` > 1 reads frames on a thread pool: useful where file reads wait on storage (network
    filesystems); from a local page cache the reader is CPU-bound and threads do not help.
    """
    seq_dir = Path(seq_dir)
    template_path = seq_dir / FLAME_TEMPLATE
    if not template_path.is_file():
        raise TrackingError(template_path, "FLAME template is missing")
    template = read_ply(template_path)
    if template.faces is None or len(template.faces) == 0:
        raise TrackingError(template_path, "FLAME template has no faces")
    n_vertices = len(template.vertices)

    frames = list_frames(seq_dir / FLAME_MESHES_DIR, ".ply")
    if verify_first_frame_faces:
        _require_template_faces(frames[0][1], template.faces, n_vertices)

    vertices = np.empty((len(frames), n_vertices, 3), dtype=np.float32)

    def read_frame(row: int) -> None:
        path = frames[row][1]
        read_ply_vertices(path, expected_vertex_count=n_vertices, out=vertices[row], check_finite=False)

    if workers > 1 and len(frames) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(read_frame, range(len(frames))))  # list(): re-raises the first error
    else:
        for row in range(len(frames)):
            read_frame(row)
    if not np.isfinite(vertices).all():  # one pass over the block; find the frame only on failure
        bad_row = int(np.flatnonzero(~np.isfinite(vertices).reshape(len(frames), -1).all(axis=1))[0])
        require_finite_vertices(frames[bad_row][1], vertices[bad_row])

    return FlameTracking(
        vertices=vertices,
        template_vertices=template.vertices,
        faces=template.faces,
        frame_numbers=np.array([n for n, _ in frames], dtype=np.int64),
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
