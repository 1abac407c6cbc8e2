"""Ingestion benchmark: our tracking readers vs the obvious per-frame loops, side by side.

Builds a temporary sequence folder in the published layout (500 NPHM expression frames as
np.savez writes them; 300 FLAME frames of 5023 vertices as trimesh exports them: binary
little-endian), then times, best of a few repeats on a warm page cache:

  npz: read_nphm_expressions  vs  np.load per frame (expression + identity)
  ply: read_flame_tracking    vs  trimesh.load(path, process=False) per frame

Run: python -m bench.ingest [--npz-frames 500] [--ply-frames 300] [--repeats 5]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh

from bench import SHARED_DATA
from ops.tracking.flame import FLAME_MESHES_DIR, FLAME_TEMPLATE, read_flame_tracking
from ops.tracking.frame_files import list_frames
from ops.tracking.nphm import NPHM_EXPRESSIONS_DIR, read_nphm_expressions

SHARED_HEAD = SHARED_DATA / "nphm_template_flame_topology.ply"


def flame_sized_head(rng: np.random.Generator) -> trimesh.Trimesh:
    """The shared 5023-vertex head when present, else a random mesh of the same size."""
    if SHARED_HEAD.exists():
        return trimesh.load(SHARED_HEAD, process=False)
    vertices = rng.standard_normal((5023, 3)) * 0.1
    faces = rng.integers(0, 5023, size=(9976, 3))
    return trimesh.Trimesh(vertices, faces, process=False)


def build_sequence(seq: Path, n_npz: int, n_ply: int, rng: np.random.Generator) -> None:
    expressions = seq / NPHM_EXPRESSIONS_DIR
    expressions.mkdir(parents=True)
    identity = rng.standard_normal(1344).astype(np.float32)
    for n in range(n_npz):
        np.savez(
            expressions / f"frame_{n}.npz", expression=rng.standard_normal(200).astype(np.float32), identity=identity
        )
    head = flame_sized_head(rng)
    (seq / FLAME_MESHES_DIR).mkdir(parents=True)
    template = trimesh.Trimesh(head.vertices, head.faces, process=False)  # plain: no colors
    (seq / FLAME_TEMPLATE).write_bytes(trimesh.exchange.ply.export_ply(template))
    for n in range(n_ply):
        frame = trimesh.Trimesh(
            head.vertices + 0.001 * rng.standard_normal(head.vertices.shape), head.faces, process=False
        )
        (seq / FLAME_MESHES_DIR / f"frame_{n}.ply").write_bytes(trimesh.exchange.ply.export_ply(frame))


def naive_npz(paths: list[Path]) -> np.ndarray:
    expressions = []
    for path in paths:
        with np.load(path) as npz:
            expressions.append(npz["expression"])
            npz["identity"]
    return np.stack(expressions)


def naive_ply(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(trimesh.load(path, process=False).vertices, dtype=np.float32) for path in paths])


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz-frames", type=int, default=500)
    parser.add_argument("--ply-frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        seq = Path(root) / "ID001_SEQ01"
        build_sequence(seq, args.npz_frames, args.ply_frames, np.random.default_rng(0))
        npz_paths = [path for _, path in list_frames(seq / NPHM_EXPRESSIONS_DIR, ".npz")]
        ply_paths = [path for _, path in list_frames(seq / FLAME_MESHES_DIR, ".ply")]

        # Same numbers from both sides before timing anything.
        np.testing.assert_array_equal(read_nphm_expressions(seq).expression, naive_npz(npz_paths))
        np.testing.assert_array_equal(read_flame_tracking(seq).vertices, naive_ply(ply_paths))

        ours_npz = best_seconds(lambda: read_nphm_expressions(seq), args.repeats)
        base_npz = best_seconds(lambda: naive_npz(npz_paths), args.repeats)
        ours_ply = best_seconds(lambda: read_flame_tracking(seq), args.repeats)
        ours_ply_threads = best_seconds(lambda: read_flame_tracking(seq, workers=2), args.repeats)
        base_ply = best_seconds(lambda: naive_ply(ply_paths), args.repeats)

    n_npz, n_ply = args.npz_frames, args.ply_frames
    figures = {
        "npz_frames": n_npz,
        "ply_frames": n_ply,
        "npz_frames_per_s": round(n_npz / ours_npz, 1),
        "np_load_npz_frames_per_s": round(n_npz / base_npz, 1),
        "npz_speedup": round(base_npz / ours_npz, 2),
        "ply_frames_per_s": round(n_ply / ours_ply, 1),
        "ply_2_threads_frames_per_s": round(n_ply / ours_ply_threads, 1),
        "trimesh_ply_frames_per_s": round(n_ply / base_ply, 1),
        "ply_speedup": round(base_ply / ours_ply, 2),
    }
    print(
        f"NPHM npz  ({n_npz} frames): ours {figures['npz_frames_per_s']:>9.0f} frames/s   "
        f"np.load loop {figures['np_load_npz_frames_per_s']:>8.0f} frames/s   x{figures['npz_speedup']}"
    )
    print(
        f"FLAME ply ({n_ply} frames): ours {figures['ply_frames_per_s']:>9.0f} frames/s   "
        f"trimesh.load {figures['trimesh_ply_frames_per_s']:>8.0f} frames/s   x{figures['ply_speedup']}"
        f"   (2 threads: {figures['ply_2_threads_frames_per_s']:.0f} frames/s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
