"""A small synthetic segment store whose motion is a fixed function of its audio features.

For tests, benchmarks and smoke runs where no tracked data exists: a conditional model can learn
it, and an unconditional one cannot, so losses and guidance behave like on real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ops.dataset.survey import IDENTITY_DIM
from storage.fingerprint import hash_values
from storage.frame_store import FrameLayout, write_frame_store
from storage.segments import FRAMES, write_manifest


def synthetic_audio_to_motion(audio: np.ndarray, motion_dim: int, seed: int = 0) -> np.ndarray:
    """audio [..., T, A] -> motion [..., T, D]: a fixed random linear map, squashed, plus the
    previous frame's value (so motion depends on context, not on the current frame alone)."""
    rng = np.random.default_rng(seed + 1)
    weights = rng.standard_normal((audio.shape[-1], motion_dim)).astype(np.float32) / np.sqrt(audio.shape[-1])
    motion = np.tanh(audio @ weights)
    motion[..., 1:, :] = 0.7 * motion[..., 1:, :] + 0.3 * motion[..., :-1, :]
    return motion.astype(np.float32)


def smooth_audio(n: int, frames: int, audio_dim: int, rng: np.random.Generator) -> np.ndarray:
    """[n, frames, A] features that vary smoothly over time, like real encoder output."""
    raw = rng.standard_normal((n, frames + 2, audio_dim)).astype(np.float32)
    return ((raw[:, :-2] + raw[:, 1:-1] + raw[:, 2:]) / np.sqrt(3)).astype(np.float32)


def write_synthetic_segment_store(
    path: str | Path,
    *,
    n_train: int = 64,
    n_val: int = 16,
    segment_frames: int = 48,
    audio_dim: int = 32,
    motion_dim: int = 200,
    n_vertices: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a store with `n_train` + `n_val` segments (and FLAME offsets when `n_vertices`).

    Each segment is its own short sequence; its frames go to `<path.parent>/frames/<key>`, as in
    a store's `segments/` folder."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    audio = smooth_audio(n, segment_frames, audio_dim, rng)
    expression = synthetic_audio_to_motion(audio, motion_dim, seed)
    offsets = None
    if n_vertices:
        # offsets live in a 16-d subspace of the V*3 vertex space, driven by the first 16 code dims
        mixing = rng.standard_normal((16, n_vertices * 3)).astype(np.float32) * 0.01
        offsets = (expression[..., :16] @ mixing).reshape(n, segment_frames, n_vertices, 3)
    settings = dict(n=n, segment_frames=segment_frames, audio_dim=audio_dim, motion_dim=motion_dim)
    key = "f-synthetic-" + hash_values(**settings, n_vertices=n_vertices, seed=seed)[:12]
    layout = FrameLayout(
        total_frames=n * segment_frames,
        n_sequences=n,
        motion_dim=motion_dim,
        audio_dim=audio_dim,
        identity_dim=IDENTITY_DIM,
        total_flame_frames=n * segment_frames if n_vertices else 0,
        n_flame_sequences=n if n_vertices else 0,
        n_vertices=n_vertices or 0,
    )
    summary = {"key": key, "fps": 24, "motion_dim": motion_dim, "audio_dim": audio_dim, "synthetic": True}
    names = [f"ID{i % 4}_SEG{i:04d}" for i in range(n)]
    frames = path.parent / FRAMES / key
    with write_frame_store(frames, layout, summary) as writer:
        for i, name in enumerate(names):
            flame = offsets[i] if offsets is not None else None
            template = np.zeros((n_vertices, 3), np.float32) if n_vertices else None
            faces = np.zeros((1, 3), np.int32) if n_vertices else None
            identity = np.zeros(IDENTITY_DIM, np.float32)
            writer.append_sequence(name, name.split("_")[0], expression[i], audio[i], identity, flame, template, faces)
    start = np.arange(n, dtype=np.int64) * segment_frames
    manifest = pa.table(
        {
            "segment": np.arange(n, dtype=np.int64),
            "sequence": names,
            "identity": [name.split("_")[0] for name in names],
            "start_frame": np.zeros(n, dtype=np.int64),
            "n_frames": np.full(n, segment_frames, dtype=np.int64),
            "split": ["train"] * n_train + ["val"] * n_val,
            "sequence_index": np.arange(n, dtype=np.int64),
            "frame_offset": start,
            "has_flame": np.full(n, bool(n_vertices)),
            "flame_index": np.arange(n, dtype=np.int64) if n_vertices else np.full(n, -1, np.int64),
            "flame_offset": start if n_vertices else np.full(n, -1, np.int64),
        }
    )
    attrs = {"version": path.name, "frames": key, "fps": 24, **settings, "synthetic": True}
    write_manifest(path, manifest, attrs)
    return path
