"""Cut ingested sequences into fixed-length training windows, split by identity.

The frames of the usable sequences are written once (`storage.frame_store`), keyed by the
fingerprints of the components they come from; each window setting is a Parquet manifest over them
(`storage.segments`). What to do is decided from attrs and array metadata: a re-run over unchanged
sequences reads no frame data, and a new stride or split reuses the frames.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ops.dataset.survey import IDENTITY_DIM, Survey, component_fingerprints, survey_sequences
from storage.fingerprint import hash_values
from storage.frame_store import FrameLayout, FrameStore, is_frame_store, write_frame_store
from storage.layout import identity_of
from storage.location import StorePath
from storage.segment_versions import prune_versions, record_published
from storage.segments import (
    frames_dir,
    is_segment_version,
    publish_current,
    read_version_attrs,
    segments_root,
    write_manifest,
)
from storage.sequence_store import SequenceStore

CODE_VERSION = "segments-2"
DEFAULT_KEEP_VERSIONS = 3
WINDOW_SETTINGS = ("segment_frames", "stride", "val_fraction", "test_fraction", "split_seed")


@dataclass(frozen=True)
class SegmentingConfig:
    segment_frames: int = 48  # 2 s at the paper's frame rate; the frame rate itself comes from the stores
    stride: int = 12
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    include_flame: bool = True


@dataclass
class SegmentsResult:
    path: StorePath  # a local directory or an object-store prefix
    version: str
    status: str  # "materialized" | "cached"
    n_segments: int
    split_counts: dict[str, int]
    identities_by_split: dict[str, list[str]]
    sequences_used: list[str]
    sequences_skipped: dict[str, str] = field(default_factory=dict)  # key -> why (too short)
    has_flame: bool = False  # some segments carry FLAME
    sequences_left_out: dict[str, str] = field(default_factory=dict)  # key -> why its components disagree
    flame_left_out: dict[str, str] = field(default_factory=dict)  # key -> why its FLAME is out (NPHM kept)
    flame_sequences: list[str] = field(default_factory=list)
    n_flame_segments: int = 0
    frames: str = ""  # key of the frame data under segments/frames/
    frames_status: str = "reused"  # "written" | "reused"
    stored_bytes: int = 0  # frame data on disk
    float32_bytes: int = 0  # the same frames as float32
    flame_max_abs_error: float = 0.0  # of the stored FLAME offsets, in vertex units
    pruned: list[str] = field(default_factory=list)
    fps: int | None = None  # the frame rate the sequences were ingested at


class SegmentingError(ValueError):
    """Nothing usable to segment."""


def window_starts(n_frames: int, length: int, stride: int) -> np.ndarray:
    """Start frames of every full window of `length` frames, `stride` apart."""
    if length <= 0 or stride <= 0:
        raise ValueError(f"segment length ({length}) and stride ({stride}) must be positive")
    if n_frames < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - length + 1, stride, dtype=np.int64)


def assign_splits(identities: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic identity -> split: identities ranked by a seeded hash, test and val taken first.

    With three or more identities each split gets at least one; with fewer, all train.
    """
    unique = sorted(set(identities))
    ranked = sorted(unique, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest())
    n = len(ranked)
    if n < 3:
        return dict.fromkeys(ranked, "train")
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n_test + n_val >= n:
        raise SegmentingError(
            f"{n} identities cannot fill val ({val_fraction}) and test ({test_fraction}) and still leave one to train on"
        )
    splits = dict.fromkeys(ranked[:n_test], "test")
    splits.update(dict.fromkeys(ranked[n_test : n_test + n_val], "val"))
    splits.update(dict.fromkeys(ranked[n_test + n_val :], "train"))
    return splits


def ingested_data_state(store: SequenceStore, keys: list[str]) -> str:
    """A hash of what the ingested sequences hold: changes when a sequence is added or re-ingested differently."""
    return _data_state(component_fingerprints(store, keys))


def _data_state(fingerprints: dict[str, list[str | None]]) -> str:
    return hash_values(inputs=fingerprints)[:16]


def _frames_key(fingerprints: dict[str, list[str | None]], include_flame: bool) -> str:
    return "f-" + hash_values(inputs=fingerprints, include_flame=include_flame, code=CODE_VERSION)[:16]


def _version(frames_key: str, config: SegmentingConfig) -> str:
    window = {name: getattr(config, name) for name in WINDOW_SETTINGS}
    return "v-" + hash_values(frames=frames_key, window=window, code=CODE_VERSION)[:16]


def segments_version(store: SequenceStore, keys: list[str], config: SegmentingConfig) -> str:
    """Name of the segment store these inputs make: changes whenever an input or setting does."""
    return _version(_frames_key(component_fingerprints(store, keys), config.include_flame), config)


# ----------------------------------------------------------------------------- frame data


def _layout(survey: Survey) -> FrameLayout:
    first = survey.included[0]
    flame = [s for s in survey.included if s.key in survey.flame]
    return FrameLayout(
        total_frames=sum(s.n_frames for s in survey.included),
        n_sequences=len(survey.included),
        motion_dim=first.motion_dim,
        audio_dim=first.audio_dim,
        identity_dim=first.identity_dim,
        total_flame_frames=sum(s.n_frames for s in flame),
        n_flame_sequences=len(flame),
        n_vertices=survey.n_vertices or 0,
    )


def _write_frames(
    store: SequenceStore, survey: Survey, final: StorePath, summary: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Stream every included sequence into the frame arrays, one sequence in memory at a time."""
    with write_frame_store(final, _layout(survey), summary) as writer:
        for number, shape in enumerate(survey.included, 1):
            key = shape.key
            nphm = store.open_component(key, "nphm")
            identity = nphm["identity"][...] if "identity" in nphm else np.zeros(IDENTITY_DIM, np.float32)
            offsets = template = faces = None
            if key in survey.flame:
                flame = store.open_component(key, "flame")
                template = flame["template"][...].astype(np.float32)
                offsets = flame["vertices"][...].astype(np.float32) - template[None]
                faces = flame["faces"][...]
            writer.append_sequence(
                key,
                identity_of(key),
                nphm["expression"][...],
                store.read(key, "audio_features", "features"),
                identity,
                offsets,
                template,
                faces,
            )
            say(
                f"[{number}/{len(survey.included)}] {key}: {shape.n_frames} frames{' + FLAME' if offsets is not None else ''}"
            )


# ----------------------------------------------------------------------------- manifest


def _manifest(sequences: pa.Table, config: SegmentingConfig) -> tuple[pa.Table, dict[str, str], dict[str, str]]:
    """Windows over the frame data's sequences -> (manifest, identity -> split, key -> why skipped)."""
    rows = sequences.to_pylist()
    skipped, starts = {}, {}
    for row in rows:
        starts[row["sequence"]] = window_starts(row["n_frames"], config.segment_frames, config.stride)
        if not len(starts[row["sequence"]]):
            skipped[row["sequence"]] = (
                f"{row['n_frames']} frames, shorter than one {config.segment_frames}-frame segment"
            )
    used = [row for row in rows if len(starts[row["sequence"]])]
    if not used:
        raise SegmentingError(f"every sequence is shorter than one segment ({config.segment_frames} frames): {skipped}")
    splits = assign_splits(
        [row["identity"] for row in used], config.val_fraction, config.test_fraction, config.split_seed
    )
    columns: dict[str, list] = {name: [] for name in ("sequence", "identity", "start_frame", "split", "sequence_index")}
    columns.update(frame_offset=[], has_flame=[], flame_index=[], flame_offset=[])
    for row in used:
        window = starts[row["sequence"]]
        n = len(window)
        columns["sequence"] += [row["sequence"]] * n
        columns["identity"] += [row["identity"]] * n
        columns["split"] += [splits[row["identity"]]] * n
        columns["start_frame"].append(window)
        columns["sequence_index"].append(np.full(n, row["sequence_index"]))
        columns["frame_offset"].append(row["frame_offset"] + window)
        columns["has_flame"] += [row["has_flame"]] * n
        columns["flame_index"].append(np.full(n, row["flame_index"]))
        columns["flame_offset"].append(row["flame_offset"] + window if row["has_flame"] else np.full(n, -1))
    for name in ("start_frame", "sequence_index", "frame_offset", "flame_index", "flame_offset"):
        columns[name] = np.concatenate(columns[name]).astype(np.int64)
    total = len(columns["sequence"])
    manifest = pa.table(
        {
            "segment": np.arange(total, dtype=np.int64),
            "n_frames": np.full(total, config.segment_frames, dtype=np.int64),
            **columns,
        }
    )
    return manifest, splits, skipped


def _result(path: StorePath, attrs: dict[str, Any], status: str) -> SegmentsResult:
    return SegmentsResult(
        path=path,
        version=attrs["version"],
        status=status,
        n_segments=int(attrs["n_segments"]),
        split_counts=dict(attrs["split_counts"]),
        identities_by_split=dict(attrs["identities_by_split"]),
        sequences_used=list(attrs["sequences"]),
        sequences_skipped=dict(attrs["sequences_too_short"]),
        has_flame=bool(attrs["has_flame"]),
        sequences_left_out=dict(attrs["sequences_left_out"]),
        flame_left_out=dict(attrs["flame_left_out"]),
        flame_sequences=list(attrs["flame_sequences"]),
        n_flame_segments=int(attrs["n_flame_segments"]),
        frames=attrs["frames"],
        stored_bytes=int(attrs["stored_bytes"]),
        float32_bytes=int(attrs["float32_bytes"]),
        flame_max_abs_error=float(attrs["flame_max_abs_error"]),
        fps=attrs.get("fps"),
    )


# ----------------------------------------------------------------------------- the build


def build_training_segments(
    store: SequenceStore,
    keys: list[str],
    config: SegmentingConfig,
    progress: Callable[[str], None] = lambda message: None,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
) -> SegmentsResult:
    """Write (or reuse) the segment store for `keys`, make it the current one, prune old versions.

    Sequences whose components disagree are left out with the reason (`sequences_left_out`); the
    others go on. Versions beyond the newest `keep_versions` are removed, except those a published
    model under `<store>/checkpoints/` was trained on."""
    if not keys:
        raise SegmentingError(
            f"no ingested sequences in {str(store.root)!r} have both nphm expressions and audio features; "
            "materialize the per-sequence assets first (`facetalk ingest`)"
        )
    fingerprints = component_fingerprints(store, keys)
    key = _frames_key(fingerprints, config.include_flame)
    version = _version(key, config)
    final_dir = segments_root(store.root) / version
    frames_path = frames_dir(store.root, key)

    if is_segment_version(final_dir) and is_frame_store(frames_path):
        result = _result(final_dir, read_version_attrs(final_dir), "cached")
    else:
        frames_status = "reused"
        if not is_frame_store(frames_path):
            survey = survey_sequences(store, keys, config.include_flame)
            if not survey.included:
                raise SegmentingError(f"no sequence can be segmented; left out: {survey.left_out}")
            summary = {
                "key": key,
                "code_version": CODE_VERSION,
                "fps": survey.fps,
                "motion_dim": survey.included[0].motion_dim,
                "audio_dim": survey.included[0].audio_dim,
                "sequences_left_out": survey.left_out,
                "flame_left_out": survey.flame_left_out,
            }
            _write_frames(store, survey, frames_path, summary, progress)
            frames_status = "written"
        frames = FrameStore(frames_path)  # its small tables only: no frame data is read
        manifest, splits, skipped = _manifest(frames.sequences, config)
        attrs = _version_attrs(version, key, config, frames, manifest, splits, skipped, _data_state(fingerprints))
        write_manifest(final_dir, manifest, attrs)
        result = _result(final_dir, read_version_attrs(final_dir), "materialized")
        result.frames_status = frames_status
    for name, why in {**result.sequences_left_out, **result.flame_left_out}.items():
        progress(f"{name}: left out{' of FLAME' if name in result.flame_left_out else ''} ({why})")
    publish_current(store.root, version)
    record_published(store.root, version)
    result.pruned = prune_versions(store.root, keep_versions)
    if result.pruned:
        progress(f"pruned {', '.join(result.pruned)} (keeping the newest {keep_versions} and those models use)")
    return result


def _version_attrs(
    version: str,
    key: str,
    config: SegmentingConfig,
    frames: FrameStore,
    manifest: pa.Table,
    splits: dict[str, str],
    skipped: dict[str, str],
    data_state: str,
) -> dict[str, Any]:
    summary = frames.summary
    split_column = np.asarray(manifest.column("split").to_pylist())
    has_flame = np.asarray(manifest.column("has_flame").to_pylist(), dtype=bool)
    identities_by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name, split in sorted(splits.items()):
        identities_by_split[split].append(name)
    return {
        "version": version,
        "frames": key,
        **asdict(config),
        "fps": summary["fps"],
        "audio_dim": summary["audio_dim"],
        "motion_dim": summary["motion_dim"],
        "n_vertices": summary["n_vertices"],
        "data_state": data_state,
        "code_version": CODE_VERSION,
        "sequences": sorted(set(manifest.column("sequence").to_pylist())),
        "splits": splits,
        "split_counts": {split: int((split_column == split).sum()) for split in identities_by_split},
        "identities_by_split": identities_by_split,
        "sequences_too_short": skipped,
        "sequences_left_out": summary["sequences_left_out"],
        "flame_left_out": summary["flame_left_out"],
        "flame_sequences": [row["sequence"] for row in frames.sequences.to_pylist() if row["has_flame"]],
        "has_flame": bool(has_flame.any()),
        "n_flame_segments": int(has_flame.sum()),
        "flame_dtype": summary["flame_dtype"],
        "flame_max_abs_error": summary["flame_max_abs_error"],
        "flame_max_abs_offset": summary["flame_max_abs_offset"],
        "non_finite": summary["non_finite"],
        "stored_bytes": summary["stored_bytes"],
        "float32_bytes": summary["float32_bytes"],
    }
