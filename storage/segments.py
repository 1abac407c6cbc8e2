"""The segment store: fixed-length training windows, one chunk per segment, plus a Parquet manifest.

```
<store>/segments/<version>/segments.zarr   expression [N, L, 200], audio_features [N, L, A],
                                           identity [N, 1344], flame_offsets [N, L, V, 3] (optional),
                                           flame_template [V, 3], flame_faces [F, 3] (optional)
<store>/segments/<version>/manifest.parquet  segment, sequence, identity, start_frame, n_frames, split
<store>/segments/CURRENT                     name of the version the latest materialization published
```
Per-segment arrays are stored without compression, one chunk per segment, so that a reader
can fetch a segment with one file read: zarr 3 spends ~0.5 ms of Python per chunk, which
would cap loading far below what training needs. `SegmentReader` takes that direct path when
the array's metadata allows it and falls back to zarr's own reader otherwise. On an object
store the direct path fetches a batch's chunks with one concurrent `cat` of many keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import BytesCodec

from storage.atomic import atomic_directory, atomic_write_bytes, is_published, recover_interrupted
from storage.location import StorePath, is_remote, store_path
from storage.zarr_io import open_group_readonly, to_json, zarr_store

SEGMENTS_ZARR = "segments.zarr"
MANIFEST = "manifest.parquet"
CURRENT = "CURRENT"
SPLITS = ("train", "val", "test")
REMOTE_PUT_BYTES = 64 * 2**20  # chunks sent to an object store per concurrent batch

MANIFEST_SCHEMA = pa.schema(
    [
        ("segment", pa.int64()),
        ("sequence", pa.string()),
        ("identity", pa.string()),
        ("start_frame", pa.int64()),
        ("n_frames", pa.int64()),
        ("split", pa.string()),
        ("sequence_index", pa.int64()),  # row of per-sequence statics such as flame_templates
    ]
)


class SegmentStoreError(ValueError):
    """A segment store that is missing, empty or malformed."""


def segments_root(store_root: str | StorePath) -> StorePath:
    return store_path(store_root) / "segments"


def current_segments_dir(store_root: str | StorePath) -> StorePath:
    """The segment store the latest `training_segments` run published."""
    pointer = segments_root(store_root) / CURRENT
    if not pointer.is_file():
        raise SegmentStoreError(
            f"no segment store under {str(segments_root(store_root))!r}: materialize `training_segments` first"
        )
    path = segments_root(store_root) / pointer.read_text().strip()
    if not is_published(path, MANIFEST):
        raise SegmentStoreError(f"segment store {str(path)!r} named by {str(pointer)!r} is missing or incomplete")
    return path


def publish_current(store_root: str | StorePath, version: str) -> None:
    atomic_write_bytes(segments_root(store_root) / CURRENT, version.encode())


@dataclass(frozen=True)
class FieldSpec:
    """A per-segment array: each segment holds one item of `shape`."""

    shape: tuple[int, ...]
    dtype: str = "float32"


class SegmentStoreWriter:
    """Fills a new segment store block by block; see `write_segment_store`."""

    def __init__(self, group: zarr.Group, root: StorePath, n_segments: int, fields: dict[str, FieldSpec]):
        self.n_segments = n_segments
        self._roots = {name: store_path(root) / name for name in fields}
        self.arrays = {
            name: group.create_array(
                name,
                shape=(n_segments, *spec.shape),
                dtype=spec.dtype,
                chunks=(1, *spec.shape),
                compressors=None,
                fill_value=0,
            )
            for name, spec in fields.items()
        }
        self.group = group

    def write(self, field: str, start: int, block: np.ndarray) -> None:
        """Write segments `[start, start + len(block))` of `field` (whole chunks, as zarr 3 wants)."""
        array = self.arrays[field]
        if block.shape[1:] != array.shape[1:]:
            raise SegmentStoreError(f"{field}: block of shape {block.shape} does not fit segments of {array.shape[1:]}")
        if start < 0 or start + len(block) > self.n_segments:
            raise SegmentStoreError(
                f"{field}: segments [{start}, {start + len(block)}) out of range [0, {self.n_segments})"
            )
        # The chunk files are written directly in zarr's own format (uncompressed, default keys):
        # zarr 3's per-chunk write path costs milliseconds per segment.
        block = np.ascontiguousarray(block, dtype=np.dtype(array.dtype).newbyteorder("<"))
        root = self._roots[field]
        suffix = "/".join(["0"] * (array.ndim - 1))
        if is_remote(root):
            _put_chunks(root, start, suffix, block)
            return
        for offset, item in enumerate(block):
            chunk_dir = root / "c" / str(start + offset)
            chunk_path = chunk_dir / suffix
            chunk_path.parent.mkdir(parents=True, exist_ok=True)
            with open(chunk_path, "wb") as handle:
                handle.write(item.tobytes())

    def write_static(self, name: str, data: np.ndarray) -> None:
        self.group.create_array(name, data=np.ascontiguousarray(data), compressors=None)


def _put_chunks(root: StorePath, start: int, suffix: str, block: np.ndarray) -> None:
    """Upload one object per segment, many at a time (fsspec `pipe` sends a dict concurrently)."""
    per_batch = max(1, REMOTE_PUT_BYTES // max(block[0].nbytes, 1)) if len(block) else 1
    for first in range(0, len(block), per_batch):
        items = block[first : first + per_batch]
        root.fs.pipe({f"{root.path}/c/{start + first + i}/{suffix}": item.tobytes() for i, item in enumerate(items)})


@contextmanager
def write_segment_store(
    final_dir: str | StorePath,
    n_segments: int,
    fields: dict[str, FieldSpec],
    manifest: pa.Table,
    attrs: dict[str, Any],
) -> Iterator[SegmentStoreWriter]:
    """Create a segment store that appears under `final_dir` only once the block completes."""
    if manifest.num_rows != n_segments:
        raise SegmentStoreError(f"manifest has {manifest.num_rows} rows for {n_segments} segments")
    with atomic_directory(store_path(final_dir)) as tmp:
        zarr_path = tmp / SEGMENTS_ZARR
        group = zarr.open_group(
            zarr_store(zarr_path),
            mode="w",
            attributes=to_json({**attrs, "n_segments": n_segments}),
        )
        yield SegmentStoreWriter(group, zarr_path, n_segments, fields)
        with (tmp / MANIFEST).open("wb") as handle:
            pq.write_table(manifest.cast(MANIFEST_SCHEMA), handle)


class SegmentReader:
    """Batched random access to a segment store. Open one per process (it holds file paths only)."""

    def __init__(self, segments_dir: str | StorePath):
        self.path = store_path(segments_dir)
        recover_interrupted(self.path)
        manifest_path = self.path / MANIFEST
        if not is_published(self.path, MANIFEST, f"{SEGMENTS_ZARR}/zarr.json"):
            raise SegmentStoreError(
                f"{str(self.path)!r} is not a complete segment store (no {MANIFEST} or {SEGMENTS_ZARR})"
            )
        try:
            self.manifest = pq.read_table(pa.BufferReader(manifest_path.read_bytes()))
        except (pa.ArrowInvalid, OSError) as error:
            raise SegmentStoreError(f"{str(manifest_path)!r}: unreadable manifest ({error})") from error
        self.group = open_group_readonly(self.path / SEGMENTS_ZARR)
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        self._splits = np.asarray(self.manifest.column("split").to_numpy(zero_copy_only=False)).astype(str)
        self._direct: dict[str, _DirectChunks | None] = {}

    def __len__(self) -> int:
        return self.manifest.num_rows

    @property
    def fields(self) -> list[str]:
        return sorted(name for name, arr in self.group.arrays() if arr.shape[:1] == (len(self),) and arr.ndim >= 2)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Segment indices of one split (all when None)."""
        if split is None:
            return np.arange(len(self))
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self._splits == split)

    def static(self, name: str) -> np.ndarray:
        return self.group[name][...]

    def has(self, name: str) -> bool:
        return name in self.group

    def read(self, field: str, indices: np.ndarray) -> np.ndarray:
        """Segments `indices` (any order, repeats allowed) of `field` -> [len(indices), ...]."""
        indices = np.asarray(indices, dtype=np.int64)
        if field not in self._direct:
            self._direct[field] = _DirectChunks.open(self.path / SEGMENTS_ZARR / field, self.group[field])
        direct = self._direct[field]
        if direct is not None:
            return direct.read(indices)
        array = self.group[field]
        unique, inverse = np.unique(indices, return_inverse=True)
        return array.get_orthogonal_selection((unique,))[inverse]


@dataclass
class _DirectChunks:
    """Reads uncompressed one-segment chunks straight from their files (zarr v3 default key encoding)."""

    root: StorePath
    item_shape: tuple[int, ...]
    dtype: np.dtype
    n: int
    suffix: str

    @classmethod
    def open(cls, root: StorePath, array: zarr.Array) -> _DirectChunks | None:
        meta = json.loads((root / "zarr.json").read_text())
        codecs = meta.get("codecs", [])
        encoding = meta.get("chunk_key_encoding", {})
        plain_bytes = (
            len(codecs) == 1
            and codecs[0].get("name") == "bytes"
            and codecs[0].get("configuration", {}).get("endian", "little") == "little"
        )
        one_per_segment = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]) == (1, *array.shape[1:])
        default_keys = (
            encoding.get("name") == "default" and encoding.get("configuration", {}).get("separator", "/") == "/"
        )
        if not (plain_bytes and one_per_segment and default_keys and isinstance(array.metadata.codecs[0], BytesCodec)):
            return None
        suffix = "/".join(["0"] * (array.ndim - 1))
        return cls(root, tuple(array.shape[1:]), np.dtype(array.dtype).newbyteorder("<"), array.shape[0], suffix)

    def read(self, indices: np.ndarray) -> np.ndarray:
        out = np.zeros((len(indices), *self.item_shape), dtype=self.dtype)
        nbytes = out[0].nbytes if len(out) else 0
        if is_remote(self.root):
            return self._read_remote(indices, out, nbytes)
        for row, index in enumerate(indices):
            if not 0 <= index < self.n:
                raise IndexError(f"segment {index} out of range [0, {self.n})")
            path = f"{self.root}/c/{index}/{self.suffix}"
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # an unwritten chunk reads as the fill value, as in zarr
            try:
                view = memoryview(out[row]).cast("B")
                got = os.readv(fd, [view])
            finally:
                os.close(fd)
            if got != nbytes:
                raise SegmentStoreError(f"{path}: chunk has {got} bytes, expected {nbytes} (truncated store?)")
        return out

    def _read_remote(self, indices: np.ndarray, out: np.ndarray, nbytes: int) -> np.ndarray:
        if len(indices) and not (indices.min() >= 0 and indices.max() < self.n):
            bad = int(indices[(indices < 0) | (indices >= self.n)][0])
            raise IndexError(f"segment {bad} out of range [0, {self.n})")
        keys = [f"{self.root.path}/c/{index}/{self.suffix}" for index in indices]
        fetched = self.root.fs.cat(sorted(set(keys)), on_error="return") if keys else {}
        for row, key in enumerate(keys):
            data = fetched[key]
            if isinstance(data, FileNotFoundError):
                continue  # an unwritten chunk reads as the fill value, as in zarr
            where = f"{self.root.protocol}://{key}"
            if isinstance(data, BaseException):
                raise SegmentStoreError(f"{where}: cannot read chunk ({data})") from data
            if len(data) != nbytes:
                raise SegmentStoreError(f"{where}: chunk has {len(data)} bytes, expected {nbytes} (truncated store?)")
            out[row] = np.frombuffer(data, dtype=self.dtype).reshape(self.item_shape)
        return out
