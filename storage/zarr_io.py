"""Small helpers over zarr 3: time-chunked arrays of about 1 MB, written whole, on a local or remote store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
from upath import UPath
from zarr.abc.store import Store
from zarr.codecs import BloscCodec

from storage.location import StorePath, is_remote

TARGET_CHUNK_BYTES = 1 << 20

# lz4 decodes at memory speed; zstd (zarr's default) costs more CPU than it saves on float data.
FAST_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def rows_per_chunk(shape: tuple[int, ...], itemsize: int, target_bytes: int = TARGET_CHUNK_BYTES) -> int:
    """How many leading-axis rows make a chunk of about `target_bytes`."""
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else itemsize
    return max(1, min(max(shape[0], 1), target_bytes // max(row_bytes, 1)))


def time_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    return (rows_per_chunk(shape, itemsize), *shape[1:])


def zarr_store(path: StorePath, read_only: bool = False) -> Store:
    """The zarr store rooted at `path`: a directory, or a prefix on an fsspec (async) filesystem."""
    if is_remote(path):
        return zarr.storage.FsspecStore.from_url(
            str(path), storage_options=dict(path.storage_options), read_only=read_only
        )
    return zarr.storage.LocalStore(str(path), read_only=read_only)


def write_group(path: StorePath, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> zarr.Group:
    """Create a zarr group at `path` holding `arrays` (chunked along axis 0) and `attrs`."""
    group = zarr.open_group(zarr_store(path), mode="w", attributes=to_json(attrs))
    for name, data in arrays.items():
        write_array(group, name, data)
    return group


def write_array(group: zarr.Group, name: str, data: np.ndarray) -> zarr.Array:
    """One whole array in `group`, chunked along axis 0 (about 1 MB per chunk), lz4-compressed."""
    data = np.ascontiguousarray(data)
    return group.create_array(
        name,
        data=data,
        chunks=time_chunks(data.shape, data.dtype.itemsize) if data.ndim else (),
        compressors=FAST_COMPRESSOR if data.size else None,
    )


def open_group_readonly(path: StorePath) -> zarr.Group:
    # zarr_format=3: without it zarr also probes for v2 metadata, a wasted request per open on S3.
    return zarr.open_group(zarr_store(path, read_only=True), mode="r", zarr_format=3)


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
    if isinstance(value, (Path, UPath)):
        return str(value)
    return value
