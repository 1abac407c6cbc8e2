"""Consolidated frame arrays: every included sequence's frames once, back to back, chunked along time.

```
<store>/segments/frames/<key>/frames.zarr   expression [T, D] f32, audio_features [T, A] f32 (~1 MB chunks
                                            along time, lz4), identity [S, 1344] f32; for the sequences
                                            with FLAME: flame_offsets [TF, V, 3] f16 (vertices minus the
                                            sequence's template), flame_templates [SF, V, 3] f32,
                                            flame_template [V, 3] (their mean), flame_faces [F, 3] i32
<store>/segments/frames/<key>/sequences.parquet  one row per sequence: where its rows start
<store>/segments/frames/<key>/frames.json        summary written last (stats, bytes, left-out sequences)
```
`<key>` is a fingerprint of the sequences the data was made from, so segment versions that differ
only in window length, stride or split share one copy (see `storage.segments`). The writer streams:
it holds one sequence and one chunk buffer per array, never the whole data set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from storage.atomic import atomic_directory, is_published, recover_interrupted
from storage.location import StorePath, is_remote, store_path
from storage.zarr_io import FAST_COMPRESSOR, open_group_readonly, rows_per_chunk, to_json, zarr_store

FRAMES_ZARR = "frames.zarr"
SEQUENCES = "sequences.parquet"
SUMMARY = "frames.json"
FLAME_DTYPE = np.float16  # offsets of a few cm: float16 keeps them to ~1e-5 of their size, half the bytes

SEQUENCES_SCHEMA = pa.schema(
    [
        ("sequence", pa.string()),
        ("identity", pa.string()),
        ("sequence_index", pa.int64()),  # row in `identity`
        ("frame_offset", pa.int64()),  # first row in expression / audio_features
        ("n_frames", pa.int64()),
        ("has_flame", pa.bool_()),
        ("flame_index", pa.int64()),  # row in flame_templates, -1 without FLAME
        ("flame_offset", pa.int64()),  # first row in flame_offsets, -1 without FLAME
    ]
)

_reads = [0]  # frame-data reads through FrameStore in this process (a test counts them)


def frame_data_reads() -> int:
    """How many frame-data reads `FrameStore` made in this process so far."""
    return _reads[0]


class FrameStoreError(ValueError):
    """Frame data that is missing, incomplete or does not fit what is written into it."""


@dataclass(frozen=True)
class FrameLayout:
    """Shapes fixed before writing: frame counts come from the arrays' metadata, not their data."""

    total_frames: int
    n_sequences: int
    motion_dim: int
    audio_dim: int
    identity_dim: int
    total_flame_frames: int = 0
    n_flame_sequences: int = 0
    n_vertices: int = 0
    n_faces: int = 0


class _ChunkAppender:
    """Appends rows to a zarr array through one chunk-sized buffer, writing whole chunks only."""

    def __init__(self, array: zarr.Array):
        self.array = array
        self.rows = array.chunks[0]
        self.buffer = np.empty((self.rows, *array.shape[1:]), dtype=array.dtype)
        self.filled = 0
        self.written = 0

    def append(self, block: np.ndarray) -> None:
        if self.written + self.filled + len(block) > self.array.shape[0]:
            raise FrameStoreError(f"{self.array.path}: {len(block)} more rows than the {self.array.shape[0]} planned")
        while len(block):
            take = min(len(block), self.rows - self.filled)
            self.buffer[self.filled : self.filled + take] = block[:take]
            self.filled += take
            block = block[take:]
            if self.filled == self.rows:
                self.flush()

    def flush(self) -> None:
        if self.filled:
            self.array[self.written : self.written + self.filled] = self.buffer[: self.filled]
            self.written += self.filled
            self.filled = 0


@dataclass
class _Stats:
    non_finite: dict[str, int] = field(default_factory=dict)
    flame_max_abs_error: float = 0.0
    flame_max_abs_offset: float = 0.0

    def count(self, name: str, block: np.ndarray) -> None:
        self.non_finite[name] = self.non_finite.get(name, 0) + int(block.size - np.count_nonzero(np.isfinite(block)))


class FrameStoreWriter:
    """Fills the frame arrays sequence by sequence; see `write_frame_store`."""

    def __init__(self, group: zarr.Group, layout: FrameLayout):
        self.layout = layout
        self.group = group
        self.stats = _Stats()
        self._rows: list[dict[str, Any]] = []
        self._templates: list[np.ndarray] = []
        self._faces: np.ndarray | None = None
        self._identity = self._create("identity", (layout.n_sequences, layout.identity_dim), np.float32, whole=True)
        self._appenders = {
            "expression": _ChunkAppender(self._create("expression", (layout.total_frames, layout.motion_dim))),
            "audio_features": _ChunkAppender(self._create("audio_features", (layout.total_frames, layout.audio_dim))),
        }
        if layout.n_flame_sequences:
            shape = (layout.total_flame_frames, layout.n_vertices, 3)
            self._appenders["flame_offsets"] = _ChunkAppender(self._create("flame_offsets", shape, FLAME_DTYPE))
        self._frames = self._flame_frames = 0

    def _create(self, name: str, shape: tuple[int, ...], dtype=np.float32, whole: bool = False) -> zarr.Array:
        rows = shape[0] if whole else rows_per_chunk(shape, np.dtype(dtype).itemsize)
        return self.group.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=(max(rows, 1), *shape[1:]),
            compressors=FAST_COMPRESSOR,
            fill_value=0,
        )

    def append_sequence(
        self,
        key: str,
        identity_name: str,
        expression: np.ndarray,
        audio_features: np.ndarray,
        identity_code: np.ndarray,
        flame_offsets: np.ndarray | None = None,
        flame_template: np.ndarray | None = None,
        flame_faces: np.ndarray | None = None,
    ) -> None:
        """Append one sequence's frames (and FLAME offsets from its template, when given)."""
        n = len(expression)
        if len(audio_features) != n or (flame_offsets is not None and len(flame_offsets) != n):
            raise FrameStoreError(f"sequence {key!r}: components of different lengths reached the frame writer")
        index = len(self._rows)
        self._identity[index] = np.asarray(identity_code, dtype=np.float32)
        for name, block in (("expression", expression), ("audio_features", audio_features)):
            block = np.asarray(block, dtype=np.float32)
            self.stats.count(name, block)
            self._appenders[name].append(block)
        row = {
            "sequence": key,
            "identity": identity_name,
            "sequence_index": index,
            "frame_offset": self._frames,
            "n_frames": n,
            "has_flame": flame_offsets is not None,
            "flame_index": -1,
            "flame_offset": -1,
        }
        if flame_offsets is not None:
            row.update(flame_index=len(self._templates), flame_offset=self._flame_frames)
            stored = np.asarray(flame_offsets, dtype=np.float32).astype(FLAME_DTYPE)
            error = np.abs(stored.astype(np.float32) - flame_offsets)
            self.stats.flame_max_abs_error = max(self.stats.flame_max_abs_error, float(error.max(initial=0.0)))
            self.stats.flame_max_abs_offset = max(
                self.stats.flame_max_abs_offset, float(np.abs(flame_offsets).max(initial=0.0))
            )
            self.stats.count("flame_offsets", stored)  # float16 overflows past 65504: counted as non-finite
            self._appenders["flame_offsets"].append(stored)
            self._templates.append(np.asarray(flame_template, dtype=np.float32))
            if self._faces is None and flame_faces is not None:
                self._faces = np.asarray(flame_faces, dtype=np.int32)
            self._flame_frames += n
        self._frames += n
        self._rows.append(row)

    def finish(self) -> pa.Table:
        for appender in self._appenders.values():
            appender.flush()
        if self._frames != self.layout.total_frames or self._flame_frames != self.layout.total_flame_frames:
            raise FrameStoreError(
                f"wrote {self._frames} frames ({self._flame_frames} with FLAME), planned "
                f"{self.layout.total_frames} ({self.layout.total_flame_frames})"
            )
        if self._templates:
            templates = np.stack(self._templates)
            self.group.create_array("flame_templates", data=templates, compressors=FAST_COMPRESSOR)
            self.group.create_array("flame_template", data=templates.mean(axis=0), compressors=None)
            faces = self._faces if self._faces is not None else np.zeros((0, 3), np.int32)
            self.group.create_array("flame_faces", data=faces, compressors=None)
        columns = {name: [row[name] for row in self._rows] for name in SEQUENCES_SCHEMA.names}
        return pa.table(columns, schema=SEQUENCES_SCHEMA)


def tree_bytes(path: StorePath) -> int:
    """Bytes of every file at and below `path`."""
    path = store_path(path)
    if is_remote(path):
        return int(path.fs.du(path.path, total=True))
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def write_frame_store(
    final_dir: str | StorePath, layout: FrameLayout, summary: dict[str, Any]
) -> Iterator[FrameStoreWriter]:
    """Create frame data that appears under `final_dir` only once the block completes.

    `summary` goes into frames.json, with the writer's stats and the bytes on disk added."""
    with atomic_directory(store_path(final_dir)) as tmp:
        group = zarr.open_group(zarr_store(tmp / FRAMES_ZARR), mode="w", attributes=to_json(summary))
        writer = FrameStoreWriter(group, layout)
        yield writer
        table = writer.finish()
        with (tmp / SEQUENCES).open("wb") as handle:
            pq.write_table(table, handle)
        float32_bytes = 4 * (
            layout.total_frames * (layout.motion_dim + layout.audio_dim)
            + layout.n_sequences * layout.identity_dim
            + writer._flame_frames * layout.n_vertices * 3
            + len(writer._templates) * layout.n_vertices * 3
        )
        stats = writer.stats
        full = {
            **summary,
            "total_frames": layout.total_frames,
            "total_flame_frames": layout.total_flame_frames,
            "n_sequences": layout.n_sequences,
            "n_flame_sequences": layout.n_flame_sequences,
            "n_vertices": layout.n_vertices,
            "non_finite": stats.non_finite,
            "flame_dtype": np.dtype(FLAME_DTYPE).name,
            "flame_max_abs_error": stats.flame_max_abs_error,
            "flame_max_abs_offset": stats.flame_max_abs_offset,
            "float32_bytes": float32_bytes,
            "stored_bytes": tree_bytes(tmp),
        }
        (tmp / SUMMARY).write_text(json.dumps(to_json(full), indent=1))


def is_frame_store(path: str | StorePath) -> bool:
    path = store_path(path)
    recover_interrupted(path)
    return is_published(path, SUMMARY, SEQUENCES, f"{FRAMES_ZARR}/zarr.json")


def read_frame_summary(path: str | StorePath) -> dict[str, Any]:
    """frames.json: what the frame data holds, without reading it."""
    path = store_path(path)
    try:
        return json.loads((path / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise FrameStoreError(f"{str(path / SUMMARY)!r}: unreadable frame-data summary ({error})") from error


class FrameStore:
    """Read access to the frame arrays; whole arrays up to `cache_bytes` are kept in RAM after first use."""

    def __init__(self, path: str | StorePath, cache_bytes: int = 0):
        self.path = store_path(path)
        if not is_frame_store(self.path):
            raise FrameStoreError(f"{str(self.path)!r} is not complete frame data (no {SUMMARY} or {FRAMES_ZARR})")
        self.summary = read_frame_summary(self.path)
        try:
            self.sequences = pq.read_table(pa.BufferReader((self.path / SEQUENCES).read_bytes()))
        except (pa.ArrowInvalid, OSError) as error:
            raise FrameStoreError(f"{str(self.path / SEQUENCES)!r}: unreadable ({error})") from error
        self.group = open_group_readonly(self.path / FRAMES_ZARR)
        self.cache_bytes = cache_bytes
        self._cached: dict[str, np.ndarray] = {}
        self._arrays: dict[str, zarr.Array] = {}

    def _array(self, name: str) -> zarr.Array:
        # Opening an array reads its metadata (a millisecond or more; a request on S3): once per name.
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def has(self, name: str) -> bool:
        return name in self.group

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    def whole(self, name: str) -> np.ndarray:
        """The whole array (cached when it fits the budget)."""
        if name in self._cached:
            return self._cached[name]
        with self._reading(name):
            data = self._array(name)[...]
        if data.nbytes <= self.cache_bytes - sum(a.nbytes for a in self._cached.values()):
            self._cached[name] = data
        return data

    def rows(self, name: str, rows: np.ndarray, cache: bool = True) -> np.ndarray:
        """Rows `rows` (any shape of indices, repeats allowed) -> [*rows.shape, *row_shape].

        With `cache`, an array that fits the remaining budget is read whole once and kept."""
        rows = np.asarray(rows, dtype=np.int64)
        array = self._array(name)
        if rows.size and (rows.min() < 0 or rows.max() >= array.shape[0]):
            raise IndexError(f"{str(self.path)!r}/{name}: rows outside [0, {array.shape[0]})")
        if name in self._cached:
            return self._cached[name][rows]
        fits = array.nbytes <= self.cache_bytes - sum(a.nbytes for a in self._cached.values())
        if cache and fits:
            return self.whole(name)[rows]
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        with self._reading(name):
            data = array.get_orthogonal_selection((unique,))  # zarr fetches the touched chunks concurrently
        return data[inverse].reshape(*rows.shape, *array.shape[1:])

    def block(self, name: str, start: int, stop: int) -> np.ndarray:
        """Contiguous rows [start, stop)."""
        if name in self._cached:
            return self._cached[name][start:stop]
        with self._reading(name):
            return self._array(name)[start:stop]

    @contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """Count a frame-data read; a damaged chunk becomes an error naming the array."""
        _reads[0] += 1
        try:
            yield
        except (IndexError, KeyError):
            raise
        except Exception as error:  # codec errors (a truncated or corrupt chunk) come in many types
            where = f"{self.path}/{FRAMES_ZARR}/{name}"
            raise FrameStoreError(f"{where!r}: cannot read ({type(error).__name__}: {error})") from error
