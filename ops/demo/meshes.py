"""NPHM-sized mesh frames, fast: real marching-cubes meshes of the analytic head at any vertex count.

Meshing ~157k vertices takes ~1 s a frame, too slow for benchmark datasets of thousands of
frames. So a few base meshes are extracted at different expressions (each its own topology) and
every frame takes base `t % n_bases`, moved by a small smooth displacement: consecutive frames
differ in topology, vertices and faces keep marching-cubes order (what compression sees), and a
frame costs one PLY write.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from models.heads.analytic import EXPRESSION_DIMS, AnalyticHead
from ops.geometry.meshing import Mesh, extract_mesh
from ops.tracking.ply import write_ply

# Vertices of a marching-cubes mesh of the analytic head per (grid resolution)^2 (measured: 1.71-1.73).
_VERTICES_PER_RESOLUTION_SQUARED = 1.72


def resolution_for(n_vertices: int) -> int:
    """The marching-cubes grid resolution whose mesh has about `n_vertices` vertices."""
    return max(16, round(math.sqrt(n_vertices / _VERTICES_PER_RESOLUTION_SQUARED)))


def base_meshes(n_vertices: int = 157_000, n_bases: int = 4, seed: int = 0) -> list[Mesh]:
    """`n_bases` meshes of about `n_vertices` vertices, the jaw opened to different degrees."""
    head = AnalyticHead()
    rng = np.random.default_rng(seed)
    identity = torch.from_numpy((0.3 * rng.standard_normal(head.identity_dim)).astype(np.float32))
    meshes = []
    for k in range(n_bases):
        expression = torch.zeros(head.expression_dim)
        expression[EXPRESSION_DIMS["jaw_open"]] = 0.8 * k / max(n_bases - 1, 1)
        meshes.append(extract_mesh(head, identity, expression, resolution=resolution_for(n_vertices)))
    return meshes


def write_nphm_mesh_frames(
    folder: str | Path,
    n_frames: int,
    n_vertices: int = 157_000,
    n_bases: int = 4,
    fps: float = 24.0,
    seed: int = 0,
) -> list[Path]:
    """Write `frame_0000.ply` ... into `folder` (created): NPHM-like frames of ~`n_vertices` vertices
    (~2x as many faces; ~6 MB each at the default), topology changing from frame to frame."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bases = base_meshes(n_vertices, n_bases, seed)
    paths = []
    for t in range(n_frames):
        base = bases[t % len(bases)]
        phase = 2 * np.pi * t / fps
        shift = 0.002 * np.sin(phase + 3.0 * base.vertices[:, 1:2])  # a small travelling wave
        path = folder / f"frame_{t:04d}.ply"
        write_ply(path, base.vertices + shift.astype(np.float32), base.faces)
        paths.append(path)
    return paths
