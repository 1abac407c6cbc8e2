"""The `nphm_meshes` component: an index of the per-frame NPHM meshes, plus the meshes in copy mode.

NPHM meshes are ~97% of a sequence's raw bytes and only ground-truth renders read them, so by
default the store keeps a reference to each frame, not the frame (mode `reference`):

    frame_numbers [T]     source_paths (UTF-8, one path per line, relative to the sequence folder)
    file_sizes [T]        mtime_ns [T]          content_hashes [T, 16] (`sampled_hash`)
    n_vertices [T]        n_faces [T]           bounds [T, 2, 3] float32 (min, max per frame)

Renders read the frames from the dataset root through it (`ops.tracking.mesh_frames`). Mode
`copy` adds the meshes themselves, compactly (`storage.mesh_codec`), for a data root that goes
away: `vertices` [sum V, 3] uint16 deltas, `faces` [sum F, 3] int32 deltas, `quant_offset` and
`quant_scale` [T, 3]; the largest vertex error is in the attrs (`max_vertex_error`, measured, and
`vertex_error_bound`).

Either way frames are read and written one at a time, so memory does not grow with the length of
the sequence. Every frame is fully decoded at ingest (faces in range, no NaN), so a render
later fails only if the files changed since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ops.tracking.errors import TrackingError
from ops.tracking.ply import read_ply
from storage.fingerprint import sampled_hash
from storage.mesh_codec import (
    FACE_COMPRESSOR,
    VERTEX_COMPRESSOR,
    Quantization,
    axis_bounds,
    delta_vertices,
    dequantize,
    encode_faces,
    quantize,
)
from storage.streaming import GroupWriter

MESH_MODES = ("reference", "copy")
DEFAULT_MESH_MODE = "reference"
MODE_ATTR = "mode"


def require_mesh_mode(mode: str) -> str:
    if mode not in MESH_MODES:
        raise ValueError(
            f"nphm_meshes config `mode` must be one of {', '.join(MESH_MODES)} (got {mode!r}); "
            "'reference' indexes the dataset's meshes, 'copy' stores them compactly in the store"
        )
    return mode


@dataclass
class _Totals:
    frames: int = 0
    vertices: int = 0
    faces: int = 0
    raw_bytes: int = 0
    max_vertex_error: float = 0.0
    vertex_error_bound: float = 0.0
    low: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    high: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))


def write_mesh_frames(
    frames: list[tuple[int, Path]], seq_dir: Path, writer: GroupWriter, mode: str = DEFAULT_MESH_MODE
) -> dict[str, Any]:
    """Index (and in copy mode store) each frame `(number, path)`, one at a time; returns the summary."""
    require_mesh_mode(mode)
    totals = _Totals()
    for number, path in frames:
        mesh = read_ply(path)  # validates the whole file: faces in range, no NaN/Inf
        if mesh.faces is None or len(mesh.faces) == 0:
            raise TrackingError(path, "NPHM mesh has no faces")
        stat = os.stat(path)
        low, high = axis_bounds(mesh.vertices)
        writer.append("frame_numbers", np.array([number], np.int64))
        writer.append("source_paths", np.frombuffer(_relative(path, seq_dir).encode() + b"\n", np.uint8))
        writer.append("file_sizes", np.array([stat.st_size], np.int64))
        writer.append("mtime_ns", np.array([stat.st_mtime_ns], np.int64))
        writer.append("content_hashes", np.frombuffer(bytes.fromhex(sampled_hash(path)), np.uint8)[None])
        writer.append("n_vertices", np.array([len(mesh.vertices)], np.int64))
        writer.append("n_faces", np.array([len(mesh.faces)], np.int64))
        writer.append("bounds", np.stack([low, high])[None].astype(np.float32))
        if mode == "copy":
            quantization = Quantization.of(low, high)
            _append_copy(writer, mesh.vertices, mesh.faces, quantization, totals)
            totals.vertex_error_bound = max(totals.vertex_error_bound, quantization.error_bound(low, high))
        totals.frames += 1
        totals.vertices += len(mesh.vertices)
        totals.faces += len(mesh.faces)
        totals.raw_bytes += stat.st_size
        totals.low, totals.high = np.minimum(totals.low, low), np.maximum(totals.high, high)
    summary: dict[str, Any] = {
        MODE_ATTR: mode,
        "n_frames": totals.frames,
        "total_vertices": totals.vertices,
        "total_faces": totals.faces,
        "mean_vertices_per_frame": round(totals.vertices / max(totals.frames, 1), 1),
        "raw_bytes": totals.raw_bytes,
        "bounds_min": totals.low.tolist(),
        "bounds_max": totals.high.tolist(),
    }
    if mode == "copy":
        summary["max_vertex_error"] = totals.max_vertex_error
        summary["vertex_error_bound"] = totals.vertex_error_bound
    return summary


def _append_copy(
    writer: GroupWriter, vertices: np.ndarray, faces: np.ndarray, quantization: Quantization, totals: _Totals
) -> None:
    q = quantize(vertices, quantization)
    decoded = dequantize(q, quantization.offset, quantization.scale)  # what a reader will get
    totals.max_vertex_error = max(totals.max_vertex_error, float(np.abs(decoded - vertices).max()))
    writer.append("vertices", delta_vertices(q), VERTEX_COMPRESSOR)
    writer.append("faces", encode_faces(faces), FACE_COMPRESSOR)
    writer.append("quant_offset", quantization.offset[None])
    writer.append("quant_scale", quantization.scale[None])


def _relative(path: Path, seq_dir: Path) -> str:
    relative = Path(path).relative_to(seq_dir).as_posix()
    if "\n" in relative:
        raise TrackingError(path, "file name contains a newline; rename it")
    return relative
