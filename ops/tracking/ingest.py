"""Per-sequence ingestion: read one sequence folder, write one store component, skip if current.

Each function here is the logic behind one per-sequence asset. They share one shape:
fingerprint the inputs, return `cached` when the stored component already matches, else
read and validate, write the component, and describe what was written.

Memory stays bounded by the longest sequence's small arrays, not by its frames: FLAME vertices and
NPHM meshes are streamed into the store block by block (`SequenceStore.component_writer`). Kept
whole: the cleaned audio (loudness normalization needs all of it; 20 min at most, 77 MB), the
expression codes (800 B per frame) and the audio features (3 KB per frame; the encoder itself runs
in windows, see `ops.audio.features`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ops.tracking.frame_files import list_frames
from ops.tracking.validation import (
    CheckOutcome,
    check_components_consistent,
    check_dimension,
    check_finite,
    check_length_drift,
    finite_outcome,
)
from storage.fingerprint import hash_files, hash_tree, hash_values, sampled_hash, stat_signature, tree_files
from storage.layout import SequenceFolder
from storage.location import StorePath
from storage.safe_pickle import PickleFormatError, UnsafePickleError, load_numpy_pickle
from storage.sequence_store import FINGERPRINT_ATTR, SequenceStore

QUICK_ATTR = "input_stats"  # the stat signature the fingerprint was made with

# Bump a component's version when the code that makes it changes what it writes.
CODE_VERSIONS = {
    "audio": "audio-1",
    "audio_features": "audio-features-2",  # 2: 12 s windows beyond 12 s of audio
    "nphm": "nphm-1",
    "flame": "flame-1",
    "nphm_meshes": "nphm-meshes-2",
}
FLAME_BLOCK_FRAMES = 64  # frames read per block when streaming FLAME vertices (~4 MB at 5,023 vertices)


@dataclass
class IngestOutcome:
    """What one per-sequence step did, in the words its asset reports."""

    status: str  # "materialized" | "cached" | "absent"
    path: StorePath | None
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class AudioSettings:
    target_rate: int = 16_000
    target_lufs: float = -23.0
    max_duration_s: float = 20 * 60.0


@dataclass(frozen=True)
class FeatureSettings:
    fps: int  # the dataset's frame rate (DatasetResource.fps): the frame count when no motion exists yet
    max_drift_s: float = 1.0  # audio vs motion length; beyond this the sequence is refused
    warn_drift_frames: float = 2.0  # beyond this the drift check warns
    # components_consistent fails when NPHM and FLAME frame counts differ by more; 0 as training_segments,
    # which leaves out any sequence whose motion components differ (ops/dataset/survey.py).
    consistent_frames: float = 0.0


def _frame_files(folder: Path, suffix: str) -> list[Path]:
    """The frame files the readers will read (gaps and duplicates raise here already)."""
    if not folder.is_dir():
        return []
    return [path for _, path in list_frames(folder, suffix)]


class InputFingerprint:
    """What a component is made from: a cheap signature (file stats) and the content hash, on demand.

    A component whose stored stat signature matches is current without reading its inputs; one
    whose signature differs (files touched, copied) is still current if the content hash matches.
    """

    def __init__(self, quick: Callable[[], str], full: Callable[[], str]):
        self._quick, self._full = quick, full

    @classmethod
    def of_files(cls, files: list[Path], root: Path, **settings: Any) -> InputFingerprint:
        return cls(
            lambda: hash_values(stats=stat_signature(files, root), **settings),
            lambda: hash_values(inputs=hash_files(files, root), **settings),
        )

    @functools.cached_property
    def quick(self) -> str:
        return self._quick()

    @functools.cached_property
    def full(self) -> str:
        return self._full()


def _cached(store: SequenceStore, key: str, component: str, fingerprint: InputFingerprint) -> IngestOutcome | None:
    """The stored component's outcome (its summary and the checks it passed) if it is current."""
    attrs = store.attrs(key, component)
    if attrs is None:
        return None
    if attrs.get(QUICK_ATTR) != fingerprint.quick and attrs.get(FINGERPRINT_ATTR) != fingerprint.full:
        return None
    metadata = {k: v for k, v in attrs.items() if k in attrs.get("summary_keys", [])}
    checks = [CheckOutcome(**c) for c in attrs.get("checks", [])]
    return IngestOutcome("cached", store.component_path(key, component), metadata, checks)


def audio_fingerprint(seq: SequenceFolder, settings: AudioSettings) -> InputFingerprint:
    return InputFingerprint.of_files(
        [seq.audio_file()], seq.path, settings=settings.__dict__, code=CODE_VERSIONS["audio"]
    )


def nphm_fingerprint(seq: SequenceFolder, fps: int) -> InputFingerprint:
    files = _frame_files(seq.nphm_expressions_dir, ".npz")
    return InputFingerprint.of_files(files, seq.path, fps=fps, code=CODE_VERSIONS["nphm"])


def optional_inputs_present(seq: SequenceFolder) -> dict[str, bool]:
    """Which optional inputs the folder holds, by component: FLAME tracking, NPHM meshes. An absent
    one is not ingested: its component is not written and its asset not materialized."""
    meshes = seq.nphm_meshes_dir
    return {"flame": seq.flame_dir.is_dir(), "nphm_meshes": meshes.is_dir() and any(meshes.glob("*.ply"))}


def flame_fingerprint(seq: SequenceFolder, fps: int) -> InputFingerprint | None:
    """None when the sequence has no FLAME tracking (optional)."""
    if not seq.flame_dir.is_dir():
        return None
    files = [f for f in [seq.flame_template, *_frame_files(seq.flame_meshes_dir, ".ply")] if f.exists()]
    return InputFingerprint.of_files(files, seq.path, fps=fps, code=CODE_VERSIONS["flame"])


def mesh_fingerprint(seq: SequenceFolder, files: list[Path], mode: str) -> InputFingerprint | None:
    """None without mesh files; content by sampled hashes, since the files are large (see `sampled_hash`)."""
    if not files:
        return None
    names = [str(path.relative_to(seq.path)) for path in files]
    settings = dict(mode=mode, code=CODE_VERSIONS["nphm_meshes"])
    return InputFingerprint(
        lambda: hash_values(stats=stat_signature(files, seq.path), **settings),
        lambda: hash_values(inputs=list(zip(names, map(sampled_hash, files), strict=True)), **settings),
    )


def _attrs(component: str, fingerprint: InputFingerprint, summary: dict, checks: list[CheckOutcome]) -> dict:
    return {
        **summary,
        FINGERPRINT_ATTR: fingerprint.full,
        QUICK_ATTR: fingerprint.quick,
        "code_version": CODE_VERSIONS[component],
        "summary_keys": sorted(summary),
        "checks": [asdict(c) for c in checks],
    }


def _write(
    store: SequenceStore,
    key: str,
    component: str,
    arrays: dict,
    fingerprint: InputFingerprint,
    summary: dict,
    checks: list[CheckOutcome],
) -> IngestOutcome:
    path = store.write_component(key, component, arrays, _attrs(component, fingerprint, summary, checks)).path
    return IngestOutcome("materialized", path, summary, checks)


# ------------------------------------------------------------------------------------------ audio


def ingest_cleaned_audio(
    seq: SequenceFolder, store: SequenceStore, settings: AudioSettings = AudioSettings()
) -> IngestOutcome:
    """Any audio file -> 16 kHz mono float32, DC removed, loudness-normalized (`<seq>.zarr/audio`)."""
    source = seq.audio_file()
    fingerprint = audio_fingerprint(seq, settings)
    if cached := _cached(store, seq.key, "audio", fingerprint):
        return cached

    from ops.audio.cleaning import clean_audio_file  # scipy/pyloudnorm: 1.5 s of import the code server need not pay

    cleaned = clean_audio_file(
        source,
        target_rate=settings.target_rate,
        target_lufs=settings.target_lufs,
        max_duration_s=settings.max_duration_s,
    )
    summary = {
        "source_file": str(source),
        "sample_rate": cleaned.sample_rate,
        "n_samples": int(cleaned.samples.size),
        **cleaned.stats.as_dict(),
    }
    checks = [check_finite("audio_finite", cleaned.samples, str(source))]
    return _write(
        store, seq.key, "audio", {"samples": cleaned.samples.astype(np.float32)}, fingerprint, summary, checks
    )


# --------------------------------------------------------------------------------- audio features


class EncoderSource:
    """A Wav2Vec2 weights location, loaded and fingerprinted once per process."""

    def __init__(self, path: Path, device: str = "cpu"):
        self.path = Path(path)
        self.device = device

    @functools.cached_property
    def encoder(self):  # -> models.audio_encoder.AudioEncoder (imported lazily: transformers is heavy)
        from models.audio_encoder import load_audio_encoder

        return load_audio_encoder(self.path, device=self.device)

    @functools.cached_property
    def fingerprint(self) -> str:
        return hash_tree(self.path)

    @functools.cached_property
    def stat_signature(self) -> str:
        return stat_signature(tree_files(self.path), self.path)

    def describe(self) -> dict[str, Any]:
        return {"encoder_path": str(self.path), **self.encoder.describe()}  # encoder_random_weights, ...


def describe_published_features(seq: SequenceFolder) -> str:
    """What the dataset's own `wave2vec_audio_feats.pkl` holds, read with the restricted unpickler.

    The features are always recomputed; the pickle is only inspected, and an unsafe one is
    reported, never executed.
    """
    if not seq.pickled_features.is_file():
        return "absent"
    try:
        array = load_numpy_pickle(seq.pickled_features)
    except (UnsafePickleError, PickleFormatError) as error:
        return f"refused: {error}"
    return f"ignored (recomputed): {array.dtype} {list(array.shape)}"


def motion_frame_count(store: SequenceStore, key: str, duration_s: float, fps: int) -> tuple[int, str]:
    """Frames the features must align to: the tracked motion's count, else the audio's duration."""
    for component in ("nphm", "flame"):
        attrs = store.attrs(key, component)
        if attrs is not None:
            return int(attrs["n_frames"]), component
    from ops.audio.features import frame_count

    return frame_count(duration_s, fps), "audio duration"


def components_consistency(
    store: SequenceStore, key: str, duration_s: float, settings: FeatureSettings
) -> CheckOutcome:
    """`components_consistent`: NPHM, FLAME (when tracked) and audio frame counts, from the attrs."""
    motion = {}
    for component in ("nphm", "flame"):
        attrs = store.attrs(key, component)
        if attrs is not None:
            motion[component] = int(attrs["n_frames"])
    return check_components_consistent(
        motion, duration_s * settings.fps, settings.fps, settings.consistent_frames, settings.max_drift_s * settings.fps
    )


def ingest_audio_features(
    seq: SequenceFolder, store: SequenceStore, encoder: EncoderSource, settings: FeatureSettings
) -> IngestOutcome:
    """Frozen Wav2Vec2 features aligned to the motion frames (`<seq>.zarr/audio_features`, [T, hidden])."""
    audio_attrs = store.attrs(seq.key, "audio")
    if audio_attrs is None:
        raise FileNotFoundError(f"sequence {seq.key!r}: no cleaned audio in the store; materialize cleaned_audio first")
    duration_s = float(audio_attrs["n_samples"]) / float(audio_attrs["sample_rate"])
    n_frames, frames_from = motion_frame_count(store, seq.key, duration_s, settings.fps)
    drift_s = duration_s - n_frames / settings.fps
    if abs(drift_s) > settings.max_drift_s:
        raise ValueError(
            f"sequence {seq.key!r}: audio {seq.audio_file()} lasts {duration_s:.2f} s but the motion has {n_frames} frames "
            f"({n_frames / settings.fps:.2f} s at {settings.fps} fps): {drift_s:+.2f} s apart, more than the "
            f"{settings.max_drift_s} s allowed; check that audio and tracking belong together"
        )
    settings_used = dict(n_frames=n_frames, settings=settings.__dict__, code=CODE_VERSIONS["audio_features"])
    fingerprint = InputFingerprint(
        lambda: hash_values(audio=audio_attrs[FINGERPRINT_ATTR], encoder_stats=encoder.stat_signature, **settings_used),
        lambda: hash_values(audio=audio_attrs[FINGERPRINT_ATTR], encoder=encoder.fingerprint, **settings_used),
    )
    # Checked on every run, cached or not: a motion component may have been re-ingested since.
    consistency = components_consistency(store, seq.key, duration_s, settings)
    if cached := _cached(store, seq.key, "audio_features", fingerprint):
        cached.checks = [c for c in cached.checks if c.name != consistency.name] + [consistency]
        return cached
    from ops.audio.features import extract_aligned_features

    samples = store.read(seq.key, "audio", "samples")
    features = extract_aligned_features(encoder.encoder, samples, n_frames)
    described = encoder.describe()
    summary = {
        "n_frames": n_frames,
        "fps": settings.fps,
        "feature_dim": int(features.shape[1]),
        "frames_from": frames_from,
        "duration_s": round(duration_s, 4),
        "drift_s": round(drift_s, 4),
        **described,
    }
    summary["published_pickle"] = describe_published_features(seq)
    checks = [
        check_finite("features_finite", features, seq.key),
        check_length_drift(drift_s, settings.fps, settings.warn_drift_frames),
        consistency,
    ]
    return _write(store, seq.key, "audio_features", {"features": features}, fingerprint, summary, checks)


# ---------------------------------------------------------------------------------------- tracking


def ingest_nphm_expressions(seq: SequenceFolder, store: SequenceStore, fps: int) -> IngestOutcome:
    """Per-frame `.npz` codes -> `<seq>.zarr/nphm`: expression [T, 200] (+ identity [1344], pose)."""
    from ops.tracking.nphm import read_nphm_expressions

    fingerprint = nphm_fingerprint(seq, fps)
    if cached := _cached(store, seq.key, "nphm", fingerprint):
        return cached
    tracking = read_nphm_expressions(seq.path)
    arrays = {"expression": tracking.expression, "frame_numbers": np.asarray(tracking.frame_numbers, np.int64)}
    if tracking.identity is not None:
        arrays["identity"] = tracking.identity
    if tracking.pose is not None:
        arrays["pose"] = tracking.pose
    n_frames = len(tracking.expression)
    summary = {
        "n_frames": n_frames,
        "fps": fps,
        "duration_s": round(n_frames / fps, 4),
        "expression_shape": list(tracking.expression.shape),
        "has_identity": tracking.identity is not None,
        "has_pose": tracking.pose is not None,
        "first_frame": int(tracking.frame_numbers[0]),
    }
    checks = [
        check_finite("expression_finite", tracking.expression, seq.key),
        check_dimension("expression_dim", tracking.expression.shape[1], 200),
    ]
    return _write(store, seq.key, "nphm", arrays, fingerprint, summary, checks)


def ingest_flame_vertices(seq: SequenceFolder, store: SequenceStore, fps: int) -> IngestOutcome:
    """FLAME template + per-frame PLY -> `<seq>.zarr/flame`: vertices [T, V, 3], template [V, 3], faces.

    Frames are read and written FLAME_BLOCK_FRAMES at a time, so memory does not grow with T."""
    from ops.tracking.flame import open_flame_tracking

    fingerprint = flame_fingerprint(seq, fps)
    if fingerprint is None:
        return IngestOutcome("absent", None, {"note": f"no {seq.flame_dir.name}/ folder in {seq.path}"})
    if cached := _cached(store, seq.key, "flame", fingerprint):
        return cached
    tracking = open_flame_tracking(seq.path)
    n_frames, n_vertices = len(tracking), tracking.n_vertices
    with store.component_writer(seq.key, "flame") as writer:
        for block in tracking.blocks(FLAME_BLOCK_FRAMES):  # finite: the reader raises on NaN/Inf
            writer.append("vertices", block)
        writer.write("template", tracking.template_vertices)
        writer.write("faces", tracking.faces.astype(np.int32))
        writer.write("frame_numbers", tracking.frame_numbers)
        summary = {
            "n_frames": n_frames,
            "fps": fps,
            "duration_s": round(n_frames / fps, 4),
            "n_vertices": n_vertices,
            "n_faces": len(tracking.faces),
            "vertices_shape": [n_frames, n_vertices, 3],
        }
        checks = [
            finite_outcome("vertices_finite", 0, n_frames * n_vertices * 3, seq.key),
            check_dimension("vertex_dim", 3, 3),
        ]
        writer.attrs.update(_attrs("flame", fingerprint, summary, checks))
    return IngestOutcome("materialized", store.component_path(seq.key, "flame"), summary, checks)


def ingest_nphm_meshes(seq: SequenceFolder, store: SequenceStore, mode: str = "reference") -> IngestOutcome:
    """Per-frame NPHM meshes (topology varies) -> `<seq>.zarr/nphm_meshes`: an index of the dataset's
    files (mode `reference`, the default) or the meshes too, quantized and compressed (`copy`).
    See `ops.tracking.mesh_index`; frames are streamed one at a time."""
    from ops.tracking.mesh_index import require_mesh_mode, write_mesh_frames

    require_mesh_mode(mode)
    if not seq.nphm_meshes_dir.is_dir():
        return IngestOutcome("absent", None, {"note": f"no NPHM meshes under {seq.nphm_meshes_dir}"})
    frames = list_frames(seq.nphm_meshes_dir, ".ply")
    fingerprint = mesh_fingerprint(seq, [path for _, path in frames], mode)
    if fingerprint is None:
        return IngestOutcome("absent", None, {"note": f"no NPHM mesh frames in {seq.nphm_meshes_dir}"})
    if cached := _cached(store, seq.key, "nphm_meshes", fingerprint):
        return cached
    with store.component_writer(seq.key, "nphm_meshes") as writer:
        summary = write_mesh_frames(frames, seq.path, writer, mode)
        # Finite by construction: the PLY reader refuses NaN/Inf, naming the file.
        checks = [finite_outcome("mesh_vertices_finite", 0, summary["total_vertices"] * 3, seq.key)]
        writer.attrs.update(_attrs("nphm_meshes", fingerprint, summary, checks))
    return IngestOutcome("materialized", store.component_path(seq.key, "nphm_meshes"), summary, checks)


# ---------------------------------------------------------------------------- what is current


def stale_components(
    seq: SequenceFolder,
    store: SequenceStore,
    encoder: EncoderSource,
    features: FeatureSettings,
    audio: AudioSettings = AudioSettings(),
    mesh_mode: str = "reference",
) -> list[str]:
    """The per-sequence components an ingest run would (re)write; [] when the sequence is current.

    Decided from file stats alone (the quick signatures the components store), so a re-ingest can
    skip unchanged sequences without starting a run; the ingest functions above build their
    fingerprints with the same functions. A component whose inputs cannot even be listed
    (missing audio, a gap in the frames) counts as stale: its run reports the error.
    """
    fingerprints: dict[str, Callable[[], InputFingerprint | None]] = {
        "audio": lambda: audio_fingerprint(seq, audio),
        "nphm": lambda: nphm_fingerprint(seq, features.fps),
        "flame": lambda: flame_fingerprint(seq, features.fps),
        "nphm_meshes": lambda: mesh_fingerprint(seq, _frame_files(seq.nphm_meshes_dir, ".ply"), mesh_mode),
    }
    stale = []
    for component, fingerprint_of in fingerprints.items():
        try:
            fingerprint = fingerprint_of()
        except (OSError, ValueError):
            stale.append(component)
            continue
        if fingerprint is None:  # optional input absent: the asset writes nothing
            continue
        attrs = store.attrs(seq.key, component)
        if attrs is None or attrs.get(QUICK_ATTR) != fingerprint.quick:
            stale.append(component)
    if stale or not _features_current(seq, store, encoder, features):
        stale.append("audio_features")
    return stale


def is_sequence_current(
    seq: SequenceFolder,
    store: SequenceStore,
    encoder: EncoderSource,
    features: FeatureSettings,
    mesh_mode: str = "reference",
) -> bool:
    return not stale_components(seq, store, encoder, features, mesh_mode=mesh_mode)


def _features_current(
    seq: SequenceFolder, store: SequenceStore, encoder: EncoderSource, settings: FeatureSettings
) -> bool:
    audio_attrs, attrs = store.attrs(seq.key, "audio"), store.attrs(seq.key, "audio_features")
    if audio_attrs is None or attrs is None or not encoder.path.exists():
        return False
    duration_s = float(audio_attrs["n_samples"]) / float(audio_attrs["sample_rate"])
    n_frames, _ = motion_frame_count(store, seq.key, duration_s, settings.fps)
    settings_used = dict(n_frames=n_frames, settings=settings.__dict__, code=CODE_VERSIONS["audio_features"])
    expected = hash_values(audio=audio_attrs[FINGERPRINT_ATTR], encoder_stats=encoder.stat_signature, **settings_used)
    return attrs.get(QUICK_ATTR) == expected
