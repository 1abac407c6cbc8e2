"""Read the frames of a stored `nphm_meshes` component lazily, one (vertices, faces) pair at a time.

`stored_mesh_frames` picks the reader from the component's mode (see `ops.tracking.mesh_index`):
reference mode reads each frame's PLY from the dataset root, after checking that the file is the
one that was indexed; copy mode decodes the frame's slice of the store. Both know every frame's
bounding box without reading it (`bounds()`), so a renderer fits its camera without a pass.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from ops.tracking.errors import TrackingError
from ops.tracking.mesh_index import MODE_ATTR
from ops.tracking.ply import read_ply
from storage.fingerprint import sampled_hash
from storage.mesh_codec import decode_faces, decode_vertices
from storage.sequence_store import SequenceStore

MeshFrame = tuple[np.ndarray, np.ndarray]  # vertices [V, 3] float32, faces [F, 3] int32


class _IndexedFrames(Sequence[MeshFrame]):
    """What both modes share: the index arrays, the frame count (optionally cut), slicing, bounds."""

    def __init__(self, group: zarr.Group, key: str, n_frames: int | None) -> None:
        self.group, self.key = group, key
        self.frame_bounds = group["bounds"][...]  # [T, 2, 3]
        available = len(self.frame_bounds)
        self.n = available if n_frames is None else min(n_frames, available)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, frame):  # type: ignore[override]
        if isinstance(frame, slice):
            return [self[i] for i in range(*frame.indices(self.n))]
        if not 0 <= frame < self.n:
            raise IndexError(f"frame {frame} out of range [0, {self.n})")
        return self._read(frame)

    @abstractmethod
    def _read(self, frame: int) -> MeshFrame:
        """One frame's (vertices, faces), from wherever this kind of index keeps them."""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min [3], max [3]) over the first `len(self)` frames, from the index."""
        window = self.frame_bounds[: self.n].astype(np.float64)
        return window[:, 0].min(axis=0), window[:, 1].max(axis=0)


class ReferencedMeshFrames(_IndexedFrames):
    """Frames read from the dataset's PLY files, each checked against its index entry first."""

    def __init__(self, group: zarr.Group, key: str, seq_dir: str | Path, n_frames: int | None = None) -> None:
        super().__init__(group, key, n_frames)
        self.seq_dir = Path(seq_dir)
        self.paths = bytes(group["source_paths"][...]).decode().splitlines()
        self.sizes = group["file_sizes"][...]
        self.mtimes = group["mtime_ns"][...]
        self.hashes = group["content_hashes"][...]
        self.n_vertices = group["n_vertices"][...]
        self.n_faces = group["n_faces"][...]

    def _read(self, frame: int) -> MeshFrame:
        path = self.seq_dir / self.paths[frame]
        self._require_unchanged(frame, path)
        mesh = read_ply(path)
        if len(mesh.vertices) != self.n_vertices[frame] or len(mesh.faces) != self.n_faces[frame]:
            raise self._changed(path, "its vertex or face count differs from the indexed one")
        return mesh.vertices, mesh.faces

    def _require_unchanged(self, frame: int, path: Path) -> None:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise self._changed(path, "the file is missing") from None
        if stat.st_size != self.sizes[frame]:
            raise self._changed(path, f"its size is {stat.st_size} bytes, {self.sizes[frame]} when indexed")
        if stat.st_mtime_ns != self.mtimes[frame] and sampled_hash(path) != bytes(self.hashes[frame]).hex():
            raise self._changed(path, "its content differs from the indexed file")  # touched alone is fine

    def _changed(self, path: Path, why: str) -> TrackingError:
        return TrackingError(
            path,
            f"NPHM mesh changed since sequence {self.key!r} was ingested ({why}); re-ingest it "
            f"(materialize nphm_meshes for partition {self.key!r}), or ingest with nphm_meshes "
            "config `mode: copy` to keep the meshes in the store",
        )


class CopiedMeshFrames(_IndexedFrames):
    """Frames decoded from the store (copy mode): quantized vertices, delta-coded faces."""

    def __init__(self, group: zarr.Group, key: str, n_frames: int | None = None) -> None:
        super().__init__(group, key, n_frames)
        self.vertex_offsets = np.concatenate([[0], np.cumsum(group["n_vertices"][...])])
        self.face_offsets = np.concatenate([[0], np.cumsum(group["n_faces"][...])])
        self.offsets = group["quant_offset"][...]
        self.scales = group["quant_scale"][...]

    def _read(self, frame: int) -> MeshFrame:
        v0, v1 = self.vertex_offsets[frame : frame + 2]
        f0, f1 = self.face_offsets[frame : frame + 2]
        vertices = decode_vertices(self.group["vertices"][v0:v1], self.offsets[frame], self.scales[frame])
        return vertices, decode_faces(self.group["faces"][f0:f1])


def stored_mesh_frames(
    store: SequenceStore, key: str, dataset_root: str | Path | None, n_frames: int | None = None
) -> _IndexedFrames:
    """The `nphm_meshes` of sequence `key` as a lazy sequence of (vertices, faces) frames.

    Reference mode needs `dataset_root` (the data root the sequence was ingested from)."""
    attrs = store.attrs(key, "nphm_meshes") or {}
    group = store.open_component(key, "nphm_meshes")  # raises ComponentMissing when absent
    mode = attrs.get(MODE_ATTR)
    if mode == "copy":
        return CopiedMeshFrames(group, key, n_frames)
    if mode == "reference":
        if dataset_root is None:
            raise ValueError(
                f"sequence {key!r}: its nphm_meshes are stored by reference; reading them needs the dataset root"
            )
        return ReferencedMeshFrames(group, key, Path(dataset_root) / key, n_frames)
    raise ValueError(
        f"sequence {key!r}: nphm_meshes in {str(store.component_path(key, 'nphm_meshes'))!r} were written by an "
        f"older version (mode {mode!r}); re-ingest it (materialize nphm_meshes for partition {key!r})"
    )
