"""Dense vs coarse-to-fine marching cubes of the analytic head at 256^3.

    python -m bench.meshing [--resolution 256] [--threads 1]

Both methods run in the same process on the same head and expressions (neutral and open mouth).
Reports SDF points evaluated, wall time, and the largest distance from a coarse-to-fine vertex to
the nearest dense vertex (and back) in voxels. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from scipy.spatial import cKDTree

from models.heads.analytic import EXPRESSION_DIMS, AnalyticHead
from ops.geometry.meshing import NPHM_BOUNDS, extract_mesh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable timings on a shared box)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    head = AnalyticHead()
    identity = torch.zeros(head.identity_dim)
    open_mouth = torch.zeros(head.expression_dim)
    open_mouth[EXPRESSION_DIMS["jaw_open"]] = 0.8
    open_mouth[EXPRESSION_DIMS["lip_round"]] = 0.4
    voxel = float(np.min((np.array(NPHM_BOUNDS[1]) - np.array(NPHM_BOUNDS[0])) / (args.resolution - 1)))
    totals = {"dense_points": 0, "c2f_points": 0, "dense_s": 0.0, "c2f_s": 0.0}
    worst = 0.0
    extract_mesh(head, identity, open_mouth, resolution=32)  # warm-up (allocator, imports)
    for name, expression in (("neutral", torch.zeros(head.expression_dim)), ("open", open_mouth)):
        dense = extract_mesh(head, identity, expression, resolution=args.resolution, method="dense")
        fine = extract_mesh(head, identity, expression, resolution=args.resolution, method="coarse_to_fine")
        to_dense, _ = cKDTree(dense.vertices).query(fine.vertices)
        to_fine, _ = cKDTree(fine.vertices).query(dense.vertices)
        deviation = max(float(to_dense.max()), float(to_fine.max())) / voxel
        worst = max(worst, deviation)
        totals["dense_points"] += dense.points_evaluated
        totals["c2f_points"] += fine.points_evaluated
        totals["dense_s"] += dense.seconds
        totals["c2f_s"] += fine.seconds
        print(
            f"{name:8s} {args.resolution}^3  dense: {dense.points_evaluated:>10,d} pts {dense.seconds:7.2f} s"
            f" {len(dense.vertices):>7,d} verts | coarse-to-fine: {fine.points_evaluated:>10,d} pts"
            f" {fine.seconds:7.2f} s {len(fine.vertices):>7,d} verts | max deviation {deviation:.3f} voxel"
            f" | identical: {np.array_equal(dense.vertices, fine.vertices)}"
        )
    result = {
        "resolution": args.resolution,
        "threads": args.threads,
        "points_ratio": totals["dense_points"] / totals["c2f_points"],
        "speedup": totals["dense_s"] / totals["c2f_s"],
        "max_deviation_voxels": worst,
        "dense_points_per_s": totals["dense_points"] / totals["dense_s"],
        "c2f_meshes_per_s": 2 / totals["c2f_s"],
    }
    print(
        f"points ratio {result['points_ratio']:.1f}x, speedup {result['speedup']:.1f}x, max deviation {worst:.3f} voxel"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
