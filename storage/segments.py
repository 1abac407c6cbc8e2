"""The segment store: fixed-length windows as rows of a Parquet manifest over shared frame data.

```
<store>/segments/frames/<key>/             the frames, once (see `storage.frame_store`)
<store>/segments/<version>/manifest.parquet  segment, sequence, identity, start_frame, n_frames, split,
                                           sequence_index, frame_offset, has_flame, flame_index, flame_offset
<store>/segments/<version>/segments.json   settings and counts; `frames` names the frame data it slices
<store>/segments/CURRENT                   name of the version the latest materialization published
<store>/segments/HISTORY                   versions, most recently published first (for pruning)
```
A segment is a slice: rows `[frame_offset, frame_offset + n_frames)` of the frame arrays, and
`[flame_offset, ...)` of `flame_offsets` for a sequence with FLAME. A new window length, stride or
split writes only a new manifest. `SegmentReader` keeps whole frame arrays in RAM up to its budget
(a batch is then one numpy gather) and reads chunks through zarr beyond it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import atomic_directory, atomic_write_bytes, is_published, recover_interrupted
from storage.frame_store import FrameStore, FrameStoreError
from storage.location import StorePath, store_path
from storage.zarr_io import to_json

MANIFEST = "manifest.parquet"
ATTRS = "segments.json"
CURRENT = "CURRENT"
FRAMES = "frames"
SPLITS = ("train", "val", "test")
PER_FRAME_FIELDS = ("expression", "audio_features", "flame_offsets")
DEFAULT_CACHE_BYTES = 2 * 2**30  # frame arrays a reader keeps in RAM (expression + audio: ~4 KB per frame)

MANIFEST_SCHEMA = pa.schema(
    [
        ("segment", pa.int64()),
        ("sequence", pa.string()),
        ("identity", pa.string()),
        ("start_frame", pa.int64()),  # in the sequence
        ("n_frames", pa.int64()),
        ("split", pa.string()),
        ("sequence_index", pa.int64()),  # row of per-sequence arrays (identity)
        ("frame_offset", pa.int64()),  # first row in expression / audio_features
        ("has_flame", pa.bool_()),
        ("flame_index", pa.int64()),  # row in flame_templates, -1 without FLAME
        ("flame_offset", pa.int64()),  # first row in flame_offsets, -1 without FLAME
    ]
)


class SegmentStoreError(ValueError):
    """A segment store that is missing, empty or malformed."""


def segments_root(store_root: str | StorePath) -> StorePath:
    return store_path(store_root) / "segments"


def frames_dir(store_root: str | StorePath, key: str) -> StorePath:
    return segments_root(store_root) / FRAMES / key


def current_segments_dir(store_root: str | StorePath) -> StorePath:
    """The segment store the latest `training_segments` run published."""
    pointer = segments_root(store_root) / CURRENT
    if not pointer.is_file():
        raise SegmentStoreError(
            f"no segment store under {str(segments_root(store_root))!r}: materialize `training_segments` first"
        )
    path = segments_root(store_root) / pointer.read_text().strip()
    if not is_published(path, MANIFEST, ATTRS):
        raise SegmentStoreError(f"segment store {str(path)!r} named by {str(pointer)!r} is missing or incomplete")
    return path


def publish_current(store_root: str | StorePath, version: str) -> None:
    atomic_write_bytes(segments_root(store_root) / CURRENT, version.encode())


def current_version(store_root: str | StorePath) -> str | None:
    pointer = segments_root(store_root) / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else None


def write_manifest(final_dir: str | StorePath, manifest: pa.Table, attrs: dict[str, Any]) -> None:
    """Publish a version: its manifest and attrs appear together or not at all."""
    with atomic_directory(store_path(final_dir)) as tmp:
        with (tmp / MANIFEST).open("wb") as handle:
            pq.write_table(manifest.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA), handle)
        (tmp / ATTRS).write_text(json.dumps(to_json({**attrs, "n_segments": manifest.num_rows}), indent=1))


def is_segment_version(path: str | StorePath) -> bool:
    path = store_path(path)
    recover_interrupted(path)
    return is_published(path, MANIFEST, ATTRS)


def read_version_attrs(path: str | StorePath) -> dict[str, Any]:
    """segments.json of a version: its settings, counts and frame-data key, without reading frames."""
    path = store_path(path)
    try:
        return json.loads((path / ATTRS).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SegmentStoreError(f"{str(path / ATTRS)!r}: unreadable segment-store attrs ({error})") from error


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


class SegmentReader:
    """Batched random access to one segment version. Open one per process."""

    def __init__(self, segments_dir: str | StorePath, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.path = store_path(segments_dir)
        if not is_segment_version(self.path):
            raise SegmentStoreError(f"{str(self.path)!r} is not a complete segment store (no {MANIFEST} or {ATTRS})")
        manifest_path = self.path / MANIFEST
        try:
            self.manifest = pq.read_table(pa.BufferReader(manifest_path.read_bytes()))
        except (pa.ArrowInvalid, OSError) as error:
            raise SegmentStoreError(f"{str(manifest_path)!r}: unreadable manifest ({error})") from error
        self.attrs: dict[str, Any] = read_version_attrs(self.path)
        frames_path = self.path.parent / FRAMES / str(self.attrs.get("frames", ""))
        try:
            self.frames = FrameStore(frames_path, cache_bytes)
        except FrameStoreError as error:
            raise SegmentStoreError(f"segment store {str(self.path)!r}: {error}") from error
        self.segment_frames = int(self.attrs["segment_frames"])
        self._splits = _column(self.manifest, "split").astype(str)
        self._frame_offset = _column(self.manifest, "frame_offset").astype(np.int64)
        self._sequence_index = _column(self.manifest, "sequence_index").astype(np.int64)
        self._flame_offset = _column(self.manifest, "flame_offset").astype(np.int64)
        self._window = np.arange(self.segment_frames, dtype=np.int64)
        self._sequence_rows = {row["sequence"]: row for row in self.frames.sequences.to_pylist()}

    def __len__(self) -> int:
        return self.manifest.num_rows

    @property
    def fields(self) -> list[str]:
        """Per-segment fields; `flame_offsets` when any segment has FLAME."""
        names = ["audio_features", "expression", "identity"]
        if self.frames.has("flame_offsets") and (self._flame_offset >= 0).any():
            names.append("flame_offsets")
        return sorted(names)

    def item_shape(self, field: str) -> tuple[int, ...]:
        """Shape of one segment of `field`: (L, D), (L, V, 3) or (1344,)."""
        if field not in self.fields:
            raise SegmentStoreError(f"segment store {str(self.path)!r} has no {field!r}; it has {self.fields}")
        row_shape = self.frames.shape(field)[1:]
        return row_shape if field == "identity" else (self.segment_frames, *row_shape)

    def indices(self, split: str | None = None, flame: bool = False) -> np.ndarray:
        """Segment indices of one split (all when None); with `flame`, only segments that have FLAME."""
        selected = np.ones(len(self), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
            selected &= self._splits == split
        if flame:
            selected &= self._flame_offset >= 0
        return np.flatnonzero(selected)

    def static(self, name: str) -> np.ndarray:
        """A per-store array of the frame data: flame_templates, flame_template, flame_faces."""
        if not self.frames.has(name):
            raise SegmentStoreError(f"segment store {str(self.path)!r} has no {name!r}")
        return self.frames.whole(name)

    def has(self, name: str) -> bool:
        return name in self.fields or self.frames.has(name)

    def first_rows(self, field: str, indices: np.ndarray) -> np.ndarray:
        """Row of each segment's first frame in the frame array behind `field`."""
        indices = self._checked(indices)
        if field == "flame_offsets":
            starts = self._flame_offset[indices]
            if (starts < 0).any():
                bad = int(indices[np.argmax(starts < 0)])
                raise SegmentStoreError(
                    f"segment store {str(self.path)!r}: segment {bad} (sequence "
                    f"{self.manifest.column('sequence')[bad].as_py()!r}) has no FLAME; select with indices(flame=True)"
                )
            return starts
        if field == "identity":
            return self._sequence_index[indices]
        return self._frame_offset[indices]

    def read(self, field: str, indices: np.ndarray) -> np.ndarray:
        """Segments `indices` (any order, repeats allowed) of `field` -> [len(indices), *item_shape]."""
        if field not in self.fields:
            raise SegmentStoreError(f"segment store {str(self.path)!r} has no {field!r} array; it has {self.fields}")
        starts = self.first_rows(field, indices)
        try:
            if field == "identity":
                return self.frames.rows(field, starts)
            # FLAME offsets are large and read rarely (PCA fit, evaluation): never cached whole.
            data = self.frames.rows(field, starts[:, None] + self._window, cache=field != "flame_offsets")
        except FrameStoreError as error:
            raise SegmentStoreError(f"segment store {str(self.path)!r}: {error}") from error
        return data.astype(np.float32, copy=False)

    def sequence_names(self, split: str | None = None, flame: bool = False) -> list[str]:
        """Sequences with segments in `split` (all when None; with FLAME only, when `flame`), in manifest order."""
        names = np.asarray(self.manifest.column("sequence").to_pylist(), dtype=object)[self.indices(split, flame)]
        return list(dict.fromkeys(names))

    def whole_sequence(self, sequence: str, field: str) -> np.ndarray:
        """Every frame of one sequence of a per-frame field -> [T, ...], also those no window covers
        (evaluation runs on whole sequences, not on windows)."""
        if field not in PER_FRAME_FIELDS or field not in self.fields:
            raise SegmentStoreError(f"segment store {str(self.path)!r}: {field!r} is not a stored per-frame field")
        row = self._sequence_row(sequence)
        start = row["flame_offset"] if field == "flame_offsets" else row["frame_offset"]
        if start < 0:
            raise SegmentStoreError(f"segment store {str(self.path)!r}: sequence {sequence!r} has no FLAME")
        try:
            return self.frames.block(field, start, start + row["n_frames"]).astype(np.float32, copy=False)
        except FrameStoreError as error:
            raise SegmentStoreError(f"segment store {str(self.path)!r}: {error}") from error

    def sequence_template(self, sequence: str) -> np.ndarray:
        """The FLAME template [V, 3] of one sequence (its own when stored, else the store's mean one)."""
        row = self._sequence_row(sequence)
        if row["flame_index"] >= 0 and self.frames.has("flame_templates"):
            return self.frames.whole("flame_templates")[row["flame_index"]].astype(np.float32)
        if self.frames.has("flame_template"):
            return self.frames.whole("flame_template").astype(np.float32)
        raise SegmentStoreError(f"segment store {str(self.path)!r} has no flame_templates or flame_template")

    def _sequence_row(self, sequence: str) -> dict[str, Any]:
        if sequence not in self._sequence_rows:
            raise SegmentStoreError(f"segment store {str(self.path)!r} has no sequence {sequence!r}")
        return self._sequence_rows[sequence]

    def _checked(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            bad = int(indices[(indices < 0) | (indices >= len(self))][0])
            raise IndexError(f"segment {bad} out of range [0, {len(self)})")
        return indices
