"""Re-score an evaluation export with the peers' formulas, independently of this project's code.

    python docs/peer_metrics.py <store>/metrics/flame_model

A standalone transcription (numpy only, no project imports) of what FaceDiffuser's
`evaluation/compute_objective_metrics.py` (`main`) and CodeTalker's `main/cal_metric.py` compute
over BIWI's layout: for every subject x sentence, ground truth `vertices_npy/<S>_<E>.npy` and
prediction `result/<S>_<E>_condition_<S>.npy` (both [T, V*3]), the prediction cut to the ground
truth's length, `templates.pkl` {S: [V, 3]}, `regions/lve.txt` and `regions/fdd.txt`.

- LVE: every frame of every sequence pooled; per frame the max over lip vertices of the squared
  L2 error; the mean over all frames.
- FDD: per sequence, for each upper-face vertex, the std over time of its squared L2 displacement
  from the subject's template, ground truth minus prediction, averaged over those vertices; then
  the mean over sequences (signed), and the mean of the absolute values (ABS FDD).
- MVE: the mean L2 vertex error over every vertex of every pooled frame.

Subjects and sentences come from `export.json` (or --subjects / --sentences, as one would edit
them into the peers' scripts). Prints the numbers and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle

import numpy as np


def read_indices(path: str) -> list[int]:
    with open(path) as handle:
        return [int(i) for i in handle.read().split(", ")]


def score(root: str, subjects: list[str], sentences: list[str], n_vertices: int) -> dict[str, float]:
    mouth_map = read_indices(os.path.join(root, "regions", "lve.txt"))
    upper_map = read_indices(os.path.join(root, "regions", "fdd.txt"))
    with open(os.path.join(root, "templates.pkl"), "rb") as handle:
        templates = pickle.load(handle, encoding="latin1")

    gt_frames, pred_frames, fdd, frames = [], [], [], 0
    for subject in subjects:
        for sentence in sentences:
            gt = np.load(os.path.join(root, "vertices_npy", f"{subject}_{sentence}.npy")).reshape(-1, n_vertices, 3)
            pred_name = f"{subject}_{sentence}_condition_{subject}.npy"
            pred = np.load(os.path.join(root, "result", pred_name)).reshape(-1, n_vertices, 3)
            pred = pred[: gt.shape[0]]
            gt = gt[: pred.shape[0]]
            template = templates[subject].reshape(1, n_vertices, 3)
            frames += gt.shape[0]
            gt_frames.extend(list(gt))
            pred_frames.extend(list(pred))
            stds = []
            for motion in (gt - template, pred - template):
                per_vertex = np.stack([np.sum(np.square(motion[:, v, :]), axis=1) for v in upper_map], axis=1)  # [T, U]
                stds.append(np.mean(np.std(per_vertex, axis=0)))
            fdd.append(stds[0] - stds[1])

    gt_all, pred_all = np.array(gt_frames), np.array(pred_frames)
    lip_errors = np.stack([np.sum(np.square(gt_all[:, v, :] - pred_all[:, v, :]), axis=1) for v in mouth_map], axis=1)
    return {
        "frames": float(frames),
        "sequences": float(len(fdd)),
        "lve": float(np.mean(np.max(lip_errors, axis=1))),
        "fdd": float(sum(fdd) / len(fdd)),
        "fdd_abs": float(sum(abs(d) for d in fdd) / len(fdd)),
        "mve": float(np.mean(np.linalg.norm(gt_all - pred_all, axis=2))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="an export directory, e.g. <store>/metrics/flame_model")
    parser.add_argument("--subjects", help="space-separated identities (default: export.json)")
    parser.add_argument("--sentences", help="space-separated sentence names (default: export.json)")
    args = parser.parse_args()
    with open(os.path.join(args.root, "export.json")) as handle:
        summary = json.load(handle)
    subjects = args.subjects.split() if args.subjects else summary["subjects"]
    sentences = args.sentences.split() if args.sentences else summary["sentences"]
    result = score(args.root, subjects, sentences, int(summary["n_vertices"]))
    print(f"Frame Number: {int(result['frames'])}")
    print(f"Mean Vertex Error: {result['mve']:.4e}")
    print(f"Lip Vertex Error: {result['lve']:.4e}")
    print(f"FDD: {result['fdd']:.4e}")
    print(f"ABS FDD: {result['fdd_abs']:.4e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
