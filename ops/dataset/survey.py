"""Which ingested sequences can go into the segments, decided from metadata alone.

Frame counts, widths and frame rates come from the components' attrs and their arrays' zarr.json,
so a thousand sequences are surveyed without reading a frame. A sequence whose components disagree
is left out with the reason; one whose FLAME does not fit the majority keeps its NPHM segments.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from storage.fingerprint import hash_values
from storage.sequence_store import FINGERPRINT_ATTR, SequenceStore

IDENTITY_DIM = 1344  # NPHM's identity code
COMPONENT_ARRAYS = {"nphm": "expression", "audio_features": "features", "flame": "vertices"}


@dataclass
class SequenceShape:
    key: str
    n_frames: int  # NPHM expression frames
    motion_dim: int
    audio_frames: int
    audio_dim: int
    identity_dim: int  # IDENTITY_DIM zeros when the nphm component has no identity code
    fps: dict[str, int | None]  # per component
    flame_frames: int | None = None  # None: no FLAME tracking
    flame_vertices: int | None = None


@dataclass
class Survey:
    included: list[SequenceShape]
    left_out: dict[str, str]  # key -> why the whole sequence is out
    flame: list[str]  # keys of included sequences whose FLAME goes in
    flame_left_out: dict[str, str]  # key -> why its FLAME is out (its NPHM segments stay)
    fps: int | None
    n_vertices: int | None


def component_fingerprints(store: SequenceStore, keys: list[str]) -> dict[str, list[str | None]]:
    """Per sequence, what its nphm / audio_features / flame were made from (attrs only)."""
    fingerprints = {}
    for key in keys:
        values = []
        for component in COMPONENT_ARRAYS:
            attrs = store.attrs(key, component)
            # Components written without a fingerprint (benchmarks) are told apart by their attrs.
            values.append(None if attrs is None else attrs.get(FINGERPRINT_ATTR) or hash_values(attrs=attrs))
        fingerprints[key] = values
    return fingerprints


def _array_shape(store: SequenceStore, key: str, component: str, name: str) -> tuple[int, ...] | None:
    path = store.component_path(key, component) / name / "zarr.json"
    try:
        return tuple(int(n) for n in json.loads(path.read_text())["shape"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _shape_of(store: SequenceStore, key: str, include_flame: bool) -> SequenceShape | str:
    """The sequence's shapes, or why it cannot be used."""
    attrs = {c: store.attrs(key, c) for c in COMPONENT_ARRAYS}
    expression = _array_shape(store, key, "nphm", "expression")
    features = _array_shape(store, key, "audio_features", "features")
    if attrs["nphm"] is None or attrs["audio_features"] is None:
        return "nphm or audio_features not ingested"
    if expression is None or len(expression) != 2:
        return f"nphm/expression in {str(store.component_path(key, 'nphm'))!r} is missing or not [frames, dims]"
    if features is None or len(features) != 2:
        return f"audio_features/features in {str(store.component_path(key, 'audio_features'))!r} is missing or not [frames, dims]"
    identity = _array_shape(store, key, "nphm", "identity")
    shape = SequenceShape(
        key,
        expression[0],
        expression[1],
        features[0],
        features[1],
        identity[0] if identity else IDENTITY_DIM,
        {c: (a or {}).get("fps") for c, a in attrs.items()},
    )
    if shape.fps["nphm"] is None or shape.fps["nphm"] != shape.fps["audio_features"]:
        return (
            f"frame rates differ or are missing: nphm {shape.fps['nphm']}, audio_features {shape.fps['audio_features']}"
        )
    if shape.audio_frames != shape.n_frames:
        return f"{shape.audio_frames} audio-feature frames but {shape.n_frames} NPHM expression frames"
    if include_flame and attrs["flame"] is not None:
        vertices = _array_shape(store, key, "flame", "vertices")
        if vertices is None or len(vertices) != 3:
            return (
                f"flame/vertices in {str(store.component_path(key, 'flame'))!r} is missing or not [frames, vertices, 3]"
            )
        if shape.fps["flame"] != shape.fps["nphm"]:
            return f"frame rates differ: flame {shape.fps['flame']}, nphm {shape.fps['nphm']}"
        if vertices[0] != shape.n_frames:
            return f"{vertices[0]} FLAME frames but {shape.n_frames} NPHM expression frames"
        shape.flame_frames, shape.flame_vertices = vertices[0], vertices[1]
    return shape


def _majority(values: list) -> object:
    """The most common value; ties go to the smallest, so the choice does not depend on order."""
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, n in counts.items() if n == best)


def survey_sequences(store: SequenceStore, keys: list[str], include_flame: bool = True) -> Survey:
    """Decide, from metadata, which sequences (and which FLAME tracks) go into the frame data."""
    left_out: dict[str, str] = {}
    shapes: list[SequenceShape] = []
    for key in keys:
        shape = _shape_of(store, key, include_flame)
        if isinstance(shape, str):
            left_out[key] = shape
        else:
            shapes.append(shape)
    checks = [
        (lambda s: s.fps["nphm"], " frames per second"),
        (lambda s: s.audio_dim, "-d audio features (another encoder?)"),
        (lambda s: s.motion_dim, "-d expression codes"),
        (lambda s: s.identity_dim, "-d identity code"),
    ]
    for get, unit in checks:
        if not shapes:
            break
        common = _majority([get(s) for s in shapes])
        for s in [s for s in shapes if get(s) != common]:
            left_out[s.key] = f"{get(s)}{unit} where the majority has {common}"
        shapes = [s for s in shapes if get(s) == common]
    flame_left_out: dict[str, str] = {}
    with_flame = [s for s in shapes if s.flame_vertices is not None]
    n_vertices = _majority([s.flame_vertices for s in with_flame]) if with_flame else None
    for s in with_flame:
        if s.flame_vertices != n_vertices:
            flame_left_out[s.key] = f"{s.flame_vertices} FLAME vertices where the majority has {n_vertices}"
            s.flame_vertices = s.flame_frames = None
    flame = [s.key for s in shapes if s.flame_vertices is not None]
    fps = shapes[0].fps["nphm"] if shapes else None
    return Survey(shapes, left_out, flame, flame_left_out, fps, n_vertices)
