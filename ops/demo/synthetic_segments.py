"""A small synthetic segment store whose motion is a fixed function of its audio features.

For tests, benchmarks and smoke runs where no tracked data exists: a conditional model can learn
it, and an unconditional one cannot, so losses and guidance behave like on real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.segments import FieldSpec, write_segment_store


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
    """Write a store with `n_train` + `n_val` segments (and FLAME offsets when `n_vertices`)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    audio = smooth_audio(n, segment_frames, audio_dim, rng)
    expression = synthetic_audio_to_motion(audio, motion_dim, seed)
    fields = {
        "expression": FieldSpec((segment_frames, motion_dim)),
        "audio_features": FieldSpec((segment_frames, audio_dim)),
        "identity": FieldSpec((1344,)),
    }
    if n_vertices:
        fields["flame_offsets"] = FieldSpec((segment_frames, n_vertices, 3))
        # offsets live in a 16-d subspace of the V*3 vertex space, driven by the first 16 code dims
        mixing = rng.standard_normal((16, n_vertices * 3)).astype(np.float32) * 0.01
        offsets = (expression[..., :16] @ mixing).reshape(n, segment_frames, n_vertices, 3)
    splits = ["train"] * n_train + ["val"] * n_val
    manifest = pa.table(
        {
            "segment": np.arange(n, dtype=np.int64),
            "sequence": [f"ID{i % 4}_seq{i // 8}" for i in range(n)],
            "identity": [f"ID{i % 4}" for i in range(n)],
            "start_frame": np.zeros(n, dtype=np.int64),
            "n_frames": np.full(n, segment_frames, dtype=np.int64),
            "split": splits,
            "sequence_index": np.arange(n, dtype=np.int64) // 8,
        }
    )
    attrs = {
        "fps": 24,
        "segment_frames": segment_frames,
        "audio_dim": audio_dim,
        "motion_dim": motion_dim,
        "synthetic": True,
    }
    with write_segment_store(path, n, fields, manifest, attrs) as writer:
        writer.write("expression", 0, expression)
        writer.write("audio_features", 0, audio)
        writer.write("identity", 0, np.zeros((n, 1344), dtype=np.float32))
        if n_vertices:
            writer.write("flame_offsets", 0, offsets)
            writer.write_static("flame_template", np.zeros((n_vertices, 3), dtype=np.float32))
            writer.write_static("flame_faces", np.zeros((1, 3), dtype=np.int32))
    return path
