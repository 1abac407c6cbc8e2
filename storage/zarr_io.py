"""Small helpers over zarr 3: time-chunked arrays of about 1 MB, written whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

TARGET_CHUNK_BYTES = 1 << 20

# lz4 decodes at memory speed; zstd (zarr's default) costs more CPU than it saves on float data.
FAST_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def rows_per_chunk(shape: tuple[int, ...], itemsize: int, target_bytes: int = TARGET_CHUNK_BYTES) -> int:
    """How many leading-axis rows make a chunk of about `target_bytes`."""
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    return max(1, min(max(shape[0], 1), target_bytes // max(row_bytes, 1)))


def time_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    return (rows_per_chunk(shape, itemsize), *shape[1:])


def write_group(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> zarr.Group:
    """Create a zarr group at `path` holding `arrays` (chunked along axis 0) and `attrs`."""
    group = zarr.open_group(zarr.storage.LocalStore(str(path)), mode="w", attributes=to_json(attrs))
    for name, data in arrays.items():
        data = np.ascontiguousarray(data)
        group.create_array(
            name,
            data=data,
            chunks=time_chunks(data.shape, data.dtype.itemsize) if data.ndim else (),
            compressors=FAST_COMPRESSOR if data.size else None,
        )
    return group


def open_group_readonly(path: Path) -> zarr.Group:
    return zarr.open_group(zarr.storage.LocalStore(str(path), read_only=True), mode="r")


def to_json(value: Any) -> Any:
    """Attrs must be JSON: turn numpy scalars/arrays and paths into plain values."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
