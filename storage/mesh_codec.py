"""Compact mesh frames: vertices quantized to uint16 per axis, both vertices and faces delta-coded.

Marching-cubes meshes list vertices and faces in scan order, so neighbours in the arrays are
neighbours in space: after a delta along the array most values are small, and zstd with a byte
shuffle stores a ~157k-vertex NPHM frame in ~18% of its PLY bytes (measured; float32 + int32
with lz4 was ~46%).

- Vertices: `offset + q * scale` with q in [0, 65535] over the frame's bounding box; the error of
  a coordinate is at most scale / 2 plus the float32 rounding of the result (`error_bound`).
  Stored as uint16 deltas from the previous vertex of the frame (wrapping: uint16 arithmetic).
- Faces: frame-local int32 indices, flattened, as deltas from the previous index of the frame.

Each frame is coded on its own, so one frame decodes from its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from zarr.codecs import BloscCodec

LEVELS = 65535  # uint16
VERTEX_COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
FACE_COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
_FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Quantization:
    offset: np.ndarray  # [3] float64, the frame's bounding-box minimum
    scale: np.ndarray  # [3] float64, size of one step per axis

    @classmethod
    def of(cls, vertices: np.ndarray) -> Quantization:
        low = vertices.min(axis=0).astype(np.float64)
        extent = vertices.max(axis=0).astype(np.float64) - low
        return cls(low, np.where(extent > 0, extent / LEVELS, 1.0))  # a flat axis: every q is 0

    def error_bound(self, vertices: np.ndarray) -> float:
        """Largest |v - decode(encode(v))| possible: half a step, plus rounding to float32."""
        largest = float(np.abs(vertices).max()) + float(self.scale.max()) / 2
        return float(self.scale.max()) / 2 + largest * _FLOAT32_EPS


def encode_vertices(vertices: np.ndarray, quantization: Quantization) -> np.ndarray:
    """[V, 3] float -> [V, 3] uint16 deltas of the quantized coordinates."""
    q = np.rint((vertices - quantization.offset) / quantization.scale)
    q = np.clip(q, 0, LEVELS).astype(np.uint16)
    deltas = q.copy()
    np.subtract(q[1:], q[:-1], out=deltas[1:])  # wraps modulo 2^16; the cumulative sum undoes it
    return deltas


def decode_vertices(deltas: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of `encode_vertices`: [V, 3] float32."""
    q = np.cumsum(deltas, axis=0, dtype=np.uint16)
    return (offset + q * scale).astype(np.float32)


def encode_faces(faces: np.ndarray) -> np.ndarray:
    """[F, 3] frame-local indices -> [F, 3] int32 deltas along the flattened index order."""
    flat = np.ascontiguousarray(faces, dtype=np.int32).ravel()
    deltas = flat.copy()
    np.subtract(flat[1:], flat[:-1], out=deltas[1:])
    return deltas.reshape(-1, 3)


def decode_faces(deltas: np.ndarray) -> np.ndarray:
    """Inverse of `encode_faces`: [F, 3] int32."""
    return np.cumsum(deltas.ravel(), dtype=np.int64).astype(np.int32).reshape(-1, 3)
