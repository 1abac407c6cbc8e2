"""Fill a zarr group block by block: arrays grow along axis 0 and are written one whole chunk at a time.

A writer that appends frames as it reads them holds one chunk per array (about 1 MB), whatever the
sequence length. Chunks are written whole, never read back and rewritten (a partial chunk would
be, by zarr), and the array's shape grows by doubling, so the metadata is rewritten O(log n)
times, not once per chunk (a PUT each on an object store). `close()` trims the shape to the rows
written and writes the group's attrs last.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.abc.codec import BytesBytesCodec

from storage.location import StorePath
from storage.zarr_io import FAST_COMPRESSOR, TARGET_CHUNK_BYTES, to_json, write_array, zarr_store


class _Appender:
    """One growing array: rows are gathered into a chunk-sized buffer, flushed when it is full."""

    def __init__(
        self, group: zarr.Group, name: str, row_shape: tuple[int, ...], dtype: np.dtype, compressor: BytesBytesCodec
    ) -> None:
        row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        self.rows = max(1, TARGET_CHUNK_BYTES // max(row_bytes, 1))
        self.row_shape = row_shape
        self.array = group.create_array(
            name, shape=(0, *row_shape), dtype=dtype, chunks=(self.rows, *row_shape), compressors=compressor
        )
        # Grown up to one chunk as rows arrive: a per-frame index of 240 rows needs no 1 MB buffer.
        self.buffer = np.empty((min(self.rows, 64), *row_shape), dtype=dtype)
        self.filled = 0  # rows waiting in the buffer
        self.length = 0  # rows written to the array

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.array.name}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        while len(block):
            if self.filled == 0 and len(block) >= self.rows:  # whole chunks straight from the block
                whole = len(block) - len(block) % self.rows
                self._write(block[:whole])
                block = block[whole:]
                continue
            take = min(self.rows - self.filled, len(block))
            self._reserve(self.filled + take)
            self.buffer[self.filled : self.filled + take] = block[:take]
            self.filled += take
            block = block[take:]
            if self.filled == self.rows:
                self.flush()

    def _reserve(self, rows: int) -> None:
        if rows > len(self.buffer):
            grown = np.empty((min(self.rows, max(2 * len(self.buffer), rows)), *self.row_shape), self.buffer.dtype)
            grown[: self.filled] = self.buffer[: self.filled]
            self.buffer = grown

    def flush(self) -> None:
        if self.filled:
            self._write(self.buffer[: self.filled])
            self.filled = 0

    def _write(self, rows: np.ndarray) -> None:
        end = self.length + len(rows)
        if end > self.array.shape[0]:
            self.array.resize((max(end, 2 * self.array.shape[0]), *self.row_shape))
        self.array[self.length : end] = rows
        self.length = end

    def close(self) -> None:
        self.flush()
        if self.array.shape[0] != self.length:
            self.array.resize((self.length, *self.row_shape))


class GroupWriter:
    """A zarr group being written: `append` rows to growing arrays, `write` small arrays whole,
    fill `attrs`; `close` flushes the buffers and writes the attrs."""

    def __init__(self, path: StorePath) -> None:
        self.group = zarr.open_group(zarr_store(path), mode="w")
        self.attrs: dict[str, Any] = {}
        self._appenders: dict[str, _Appender] = {}

    def append(self, name: str, block: np.ndarray, compressor: BytesBytesCodec = FAST_COMPRESSOR) -> None:
        """Add rows to array `name` (created by the first call, with this block's row shape, dtype
        and `compressor`); later blocks are cast to its dtype."""
        block = np.asarray(block)
        appender = self._appenders.get(name)
        if appender is None:
            appender = self._appenders[name] = _Appender(self.group, name, block.shape[1:], block.dtype, compressor)
        appender.append(block.astype(appender.buffer.dtype, copy=False))

    def write(self, name: str, data: np.ndarray) -> None:
        """A small array, whole (a template, per-frame counts)."""
        write_array(self.group, name, data)

    def close(self) -> None:
        for appender in self._appenders.values():
            appender.close()
        self.group.update_attributes(to_json(self.attrs))
