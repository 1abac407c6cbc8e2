"""Sequences in the published FaceTalk layout at the real dataset's sizes, generated for benchmarks.

Sizes follow the FaceTalk release: 24 fps, 16 kHz audio, 200-d expression codes + 1344-d
identity per frame (`.npz`), FLAME meshes of 5,023 vertices, and NPHM meshes of ~157k vertices
/ ~314k faces per frame whose topology changes from frame to frame: real marching-cubes meshes
of the analytic head (ops.demo.meshes), so compression and quantization behave as on NPHM
output rather than on noise. FLAME frames are a smooth 5,023-vertex surface.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile

from ops.demo.meshes import write_nphm_mesh_frames
from ops.tracking.flame import FLAME_MESHES_DIR, FLAME_TEMPLATE
from ops.tracking.nphm import NPHM_EXPRESSIONS_DIR, NPHM_MESHES_DIR
from ops.tracking.ply import write_ply

FPS = 24
SAMPLE_RATE = 16_000
FLAME_VERTICES = 5023
NPHM_MESH_VERTICES = 157_000


@functools.lru_cache(maxsize=8)
def _sphere_grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere: unit directions [rows * cols + 2, 3] and faces [~2 * V, 3] int32."""
    theta = np.linspace(0, np.pi, rows + 2)[1:-1]
    phi = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], axis=-1).reshape(-1, 3)
    directions = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]]).astype(np.float32)
    index = 1 + np.arange(rows * cols).reshape(rows, cols)
    right = np.roll(index, -1, axis=1)
    quads_a = np.stack([index[:-1], index[1:], right[:-1]], axis=-1).reshape(-1, 3)
    quads_b = np.stack([right[:-1], index[1:], right[1:]], axis=-1).reshape(-1, 3)
    top = np.stack([np.zeros(cols, int), index[0], right[0]], axis=-1)
    bottom_pole = rows * cols + 1
    bottom = np.stack([np.full(cols, bottom_pole), right[-1], index[-1]], axis=-1)
    faces = np.concatenate([top, quads_a, quads_b, bottom]).astype(np.int32)
    return directions, faces


def head_mesh(n_vertices: int, frame: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A head-sized smooth surface (~0.25 units across) of about `n_vertices` vertices."""
    cols = max(8, int(round(np.sqrt(n_vertices / 2))))
    rows = max(4, n_vertices // cols + int(rng.integers(-2, 3)))  # topology changes per frame
    directions, faces = _sphere_grid(rows, cols)
    jaw = 0.02 * np.sin(frame / FPS * 2 * np.pi * 3)  # a mouth-like bulge that moves over time
    bumps = 1.0 + 0.05 * np.sin(5 * directions[:, 0]) * np.cos(3 * directions[:, 1])
    bumps += jaw * np.clip(-directions[:, 1], 0, None) * np.clip(directions[:, 2], 0, None)
    vertices = directions * (0.125 * bumps)[:, None] * np.array([1.0, 1.25, 1.1], np.float32)
    return vertices.astype(np.float32), faces


def speech_like_audio(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Syllable-rate modulated harmonics plus a little noise, float32 in [-1, 1]."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, np.pi))
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
    return (0.2 * envelope * voice + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def write_realistic_sequence(
    root: Path,
    key: str,
    n_frames: int,
    mesh_vertices: int = NPHM_MESH_VERTICES,
    flame: bool = True,
    seed: int = 0,
    meshes_from: Path | None = None,
) -> Path:
    """`root/key/` in the published layout; `mesh_vertices=0` writes no NPHM meshes. Returns the folder.

    `meshes_from` (another generated sequence folder) hard-links its NPHM mesh files instead of
    writing new ones: many mesh-bearing sequences for runs that only read meshes by reference,
    without 1.5 GB of disk and ~30 s of writing each."""
    rng = np.random.default_rng(seed)
    seq = Path(root) / key
    (seq / "audio").mkdir(parents=True, exist_ok=True)
    soundfile.write(seq / "audio" / "cleaned_audio.wav", speech_like_audio(n_frames / FPS, rng), SAMPLE_RATE)
    expressions = seq / NPHM_EXPRESSIONS_DIR
    expressions.mkdir(parents=True, exist_ok=True)
    identity = (0.1 * rng.standard_normal(1344)).astype(np.float32)
    codes = np.cumsum(0.05 * rng.standard_normal((n_frames, 200)), axis=0).astype(np.float32)
    for frame in range(n_frames):
        np.savez(expressions / f"frame_{frame}.npz", expression=codes[frame], identity=identity)
    if flame:
        template, faces = head_mesh(FLAME_VERTICES, 0, np.random.default_rng(0))
        template, faces = template[:FLAME_VERTICES], faces[(faces < FLAME_VERTICES).all(axis=1)]
        (seq / FLAME_MESHES_DIR).mkdir(parents=True, exist_ok=True)
        write_ply(seq / FLAME_TEMPLATE, template, faces)
        for frame in range(n_frames):
            offsets = 0.002 * np.sin(frame / FPS * 6.0 + template * 40.0)
            write_ply(seq / FLAME_MESHES_DIR / f"frame_{frame}.ply", template + offsets, faces)
    if meshes_from is not None:
        link_meshes(Path(meshes_from) / NPHM_MESHES_DIR, seq / NPHM_MESHES_DIR)
    elif mesh_vertices:
        write_nphm_mesh_frames(seq / NPHM_MESHES_DIR, n_frames, mesh_vertices, fps=FPS, seed=seed)
    return seq


def link_meshes(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        os.link(path, target / path.name)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
