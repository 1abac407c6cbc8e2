"""Cut ingested sequences into fixed-length training windows, split by identity."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from storage.fingerprint import hash_values
from storage.layout import identity_of
from storage.location import StorePath
from storage.segments import FieldSpec, SegmentReader, publish_current, segments_root, write_segment_store
from storage.sequence_store import FINGERPRINT_ATTR, SequenceStore

CODE_VERSION = "segments-1"


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
    sequences_skipped: dict[str, str] = field(default_factory=dict)  # key -> why
    has_flame: bool = False
    fps: int = 0  # of the included sequences, from their stores


class SegmentingError(ValueError):
    """Nothing usable to segment, or sequences that disagree."""


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


@dataclass
class _SequenceData:
    key: str
    fps: int  # from the store: the dataset's frame rate at ingest
    identity_name: str
    expression: np.ndarray  # [T, 200]
    identity_code: np.ndarray  # [1344]
    audio_features: np.ndarray  # [T, A]
    flame_vertices: np.ndarray | None  # [T, V, 3]
    flame_template: np.ndarray | None  # [V, 3]
    flame_faces: np.ndarray | None
    starts: np.ndarray


def _load_sequence(store: SequenceStore, key: str, config: SegmentingConfig) -> _SequenceData:
    nphm = store.open_component(key, "nphm")
    features = store.open_component(key, "audio_features")
    rates = {name: group.attrs.get("fps") for name, group in (("nphm", nphm), ("audio_features", features))}
    if None in rates.values() or rates["nphm"] != rates["audio_features"]:
        raise SegmentingError(
            f"sequence {key!r}: frame rates nphm={rates['nphm']} and audio_features={rates['audio_features']} "
            "differ or are missing; re-materialize its per-sequence assets"
        )
    expression = nphm["expression"][...]
    audio_features = features["features"][...]
    if len(expression) != len(audio_features):
        raise SegmentingError(
            f"sequence {key!r}: {len(expression)} expression frames but {len(audio_features)} audio-feature frames; "
            f"re-materialize audio_features for this partition"
        )
    identity_code = nphm["identity"][...] if "identity" in nphm else np.zeros(1344, np.float32)
    flame_vertices = flame_template = flame_faces = None
    if config.include_flame and store.attrs(key, "flame") is not None:
        flame = store.open_component(key, "flame")
        flame_vertices = flame["vertices"][...]
        if len(flame_vertices) != len(expression):
            raise SegmentingError(
                f"sequence {key!r}: {len(flame_vertices)} FLAME frames but {len(expression)} NPHM expression frames"
            )
        flame_template = flame["template"][...]
        flame_faces = flame["faces"][...]
    starts = window_starts(len(expression), config.segment_frames, config.stride)
    return _SequenceData(
        key,
        int(rates["nphm"]),
        identity_of(key),
        expression,
        identity_code,
        audio_features,
        flame_vertices,
        flame_template,
        flame_faces,
        starts,
    )


def ingested_data_state(store: SequenceStore, keys: list[str]) -> str:
    """A hash of what the ingested sequences hold: changes when a sequence is added or re-ingested differently."""
    fingerprints = {
        key: [(store.attrs(key, c) or {}).get(FINGERPRINT_ATTR) for c in ("nphm", "audio_features", "flame")]
        for key in keys
    }
    return hash_values(inputs=fingerprints)[:16]


def segments_version(store: SequenceStore, keys: list[str], config: SegmentingConfig) -> str:
    """Name of the segment store these inputs make: changes whenever an input or setting does."""
    return "v-" + hash_values(config=asdict(config), code=CODE_VERSION, data=ingested_data_state(store, keys))[:16]


def build_training_segments(
    store: SequenceStore,
    keys: list[str],
    config: SegmentingConfig,
    progress: Callable[[str], None] = lambda message: None,
) -> SegmentsResult:
    """Write (or reuse) the segment store for `keys` and make it the current one."""
    if not keys:
        raise SegmentingError(
            f"no ingested sequences in {str(store.root)!r} have both nphm expressions and audio features; "
            "materialize the per-sequence assets first (`facetalk ingest`)"
        )
    version = segments_version(store, keys, config)
    final_dir = segments_root(store.root) / version

    sequences: list[_SequenceData] = []
    skipped: dict[str, str] = {}
    for key in keys:
        data = _load_sequence(store, key, config)
        if len(data.starts) == 0:
            skipped[key] = f"{len(data.expression)} frames, shorter than one {config.segment_frames}-frame segment"
            continue
        sequences.append(data)
    if not sequences:
        raise SegmentingError(f"every sequence is shorter than one segment ({config.segment_frames} frames): {skipped}")
    rates = {s.fps for s in sequences}
    if len(rates) != 1:
        by_rate = {rate: [s.key for s in sequences if s.fps == rate][:5] for rate in sorted(rates)}
        raise SegmentingError(f"sequences were ingested at different frame rates: {by_rate}")

    splits = assign_splits(
        [s.identity_name for s in sequences], config.val_fraction, config.test_fraction, config.split_seed
    )
    vertex_counts = {None if s.flame_vertices is None else s.flame_vertices.shape[1] for s in sequences}
    has_flame = config.include_flame and len(vertex_counts) == 1 and None not in vertex_counts
    if config.include_flame and not has_flame and vertex_counts != {None}:
        progress(
            f"FLAME left out of the segments: sequences disagree or lack it (vertex counts {sorted(map(str, vertex_counts))})"
        )

    identities_by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name, split in sorted(splits.items()):
        identities_by_split[split].append(name)

    rows = [(i, s, int(start)) for i, s in enumerate(sequences) for start in s.starts]
    manifest = pa.table(
        {
            "segment": np.arange(len(rows), dtype=np.int64),
            "sequence": [s.key for _, s, _ in rows],
            "identity": [s.identity_name for _, s, _ in rows],
            "start_frame": np.array([start for _, _, start in rows], dtype=np.int64),
            "n_frames": np.full(len(rows), config.segment_frames, dtype=np.int64),
            "split": [splits[s.identity_name] for _, s, _ in rows],
            "sequence_index": np.array([i for i, _, _ in rows], dtype=np.int64),
        }
    )
    split_counts = {
        split: int(np.sum(np.asarray(manifest.column("split").to_pylist()) == split))
        for split in ("train", "val", "test")
    }
    result = SegmentsResult(
        final_dir,
        version,
        "cached",
        len(rows),
        split_counts,
        identities_by_split,
        [s.key for s in sequences],
        skipped,
        has_flame,
        sequences[0].fps,
    )
    if _is_complete(final_dir, len(rows)):
        publish_current(store.root, version)
        return result

    length = config.segment_frames
    audio_dim = sequences[0].audio_features.shape[1]
    if any(s.audio_features.shape[1] != audio_dim for s in sequences):
        dims = {s.key: s.audio_features.shape[1] for s in sequences}
        raise SegmentingError(
            f"audio features of different widths across sequences (made by different encoders?): {dims}"
        )
    fields = {
        "expression": FieldSpec((length, sequences[0].expression.shape[1])),
        "audio_features": FieldSpec((length, audio_dim)),
        "identity": FieldSpec((sequences[0].identity_code.shape[0],)),
    }
    if has_flame:
        fields["flame_offsets"] = FieldSpec((length, sequences[0].flame_vertices.shape[1], 3))
    attrs = {
        "fps": sequences[0].fps,
        "segment_frames": length,
        "stride": config.stride,
        "audio_dim": audio_dim,
        "motion_dim": sequences[0].expression.shape[1],
        "version": version,
        "data_state": ingested_data_state(store, keys),
        "code_version": CODE_VERSION,
        "sequences": [s.key for s in sequences],
        "splits": splits,
    }
    with write_segment_store(final_dir, len(rows), fields, manifest, attrs) as writer:
        start_index = 0
        for number, seq in enumerate(sequences, 1):
            windows = seq.starts[:, None] + np.arange(length)[None, :]  # [n, L] frame indices
            writer.write("expression", start_index, seq.expression[windows])
            writer.write("audio_features", start_index, seq.audio_features[windows])
            writer.write("identity", start_index, np.repeat(seq.identity_code[None], len(seq.starts), axis=0))
            if has_flame:
                writer.write("flame_offsets", start_index, seq.flame_vertices[windows] - seq.flame_template[None, None])
            start_index += len(seq.starts)
            progress(f"[{number}/{len(sequences)}] {seq.key}: {len(seq.starts)} segments")
        if has_flame:
            templates = np.stack([s.flame_template for s in sequences]).astype(np.float32)
            writer.write_static("flame_templates", templates)
            writer.write_static("flame_template", templates.mean(axis=0))
            writer.write_static("flame_faces", sequences[0].flame_faces.astype(np.int32))
    publish_current(store.root, version)
    result.status = "materialized"
    return result


def _is_complete(path: StorePath, n_segments: int) -> bool:
    try:
        return len(SegmentReader(path)) == n_segments
    except (ValueError, OSError):
        return False
