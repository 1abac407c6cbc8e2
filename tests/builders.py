"""Write small sequences in the published layout, by hand, for tests that need exact control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from ops.tracking.ply import write_ply


def speech_like(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A voiced buzz with a syllable-rate envelope: enough structure for cleaning and encoding."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    return (0.3 * voiced * envelope + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def grid_mesh(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A small fixed-topology surface: n x n vertices, 2 (n-1)^2 triangles."""
    u, v = np.meshgrid(np.linspace(-0.2, 0.2, n), np.linspace(-0.2, 0.2, n))
    vertices = np.stack([u.ravel(), v.ravel(), 0.1 * np.cos(u.ravel() * 5)], axis=1).astype(np.float32)
    faces = []
    for row in range(n - 1):
        for col in range(n - 1):
            a = row * n + col
            faces += [(a, a + 1, a + n), (a + 1, a + n + 1, a + n)]
    return vertices, np.asarray(faces, np.int32)


def write_sequence(
    root: Path,
    key: str,
    n_frames: int = 60,
    fps: int = 24,
    audio_seconds: float | None = None,
    sample_rate: int = 16_000,
    seed: int = 0,
    flame: bool = True,
    nphm_meshes: bool = True,
) -> Path:
    """One sequence folder: audio, per-frame NPHM codes, FLAME-like PLY frames, NPHM-like meshes."""
    rng = np.random.default_rng(seed)
    seq = Path(root) / key
    (seq / "audio").mkdir(parents=True)
    seconds = audio_seconds if audio_seconds is not None else n_frames / fps
    soundfile.write(seq / "audio" / "cleaned_audio.wav", speech_like(seconds, sample_rate, seed), sample_rate)
    expressions = seq / "nphm_tracking" / "nphm_expressions"
    expressions.mkdir(parents=True)
    identity = rng.standard_normal(1344).astype(np.float32) * 0.1
    codes = (0.1 * rng.standard_normal((n_frames, 200))).astype(np.float32)
    for frame in range(n_frames):
        np.savez(expressions / f"frame_{frame:04d}.npz", expression=codes[frame], identity=identity)
    vertices, faces = grid_mesh()
    if flame:
        flame_dir = seq / "flame_2023_tracking"
        (flame_dir / "flame_meshes").mkdir(parents=True)
        write_ply(flame_dir / "flame_2023_template.ply", vertices, faces)
        for frame in range(n_frames):
            moved = vertices + 0.01 * codes[frame, :3][None]
            write_ply(flame_dir / "flame_meshes" / f"frame_{frame:04d}.ply", moved, faces)
    if nphm_meshes:
        meshes = seq / "nphm_tracking" / "nphm_meshes"
        meshes.mkdir(parents=True)
        for frame in range(n_frames):
            keep = len(faces) - frame % 3  # topology changes from frame to frame
            write_ply(meshes / f"frame_{frame:04d}.ply", vertices, faces[:keep])
    return seq


def analytic_expression(**values: float):
    """A 200-d code with the analytic head's named dimensions set, e.g. jaw_open=0.8."""
    import torch

    from models.heads.analytic import EXPRESSION_DIMS

    code = torch.zeros(200)
    for name, value in values.items():
        code[EXPRESSION_DIMS[name]] = value
    return code
