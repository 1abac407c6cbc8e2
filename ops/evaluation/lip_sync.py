"""Lip sync measured against the ground truth: does the generated mouth open and close when the
tracked mouth does?

The audio-energy correlation (`metrics.lip_sync_correlation`) rewards a mouth that follows loudness,
and a model that does so more slavishly than a real speaker scores above the ground truth. Here the
reference is the ground-truth mouth opening itself, so the ground truth is the ceiling (r = 1 at
offset 0) and an audio-free baseline that does not know when the mouth opens scores about 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MouthSync:
    correlation: float  # Pearson r of generated vs ground-truth opening at the best offset, in [-1, 1]
    offset_frames: int  # positive: the generated mouth moves that many frames after the ground truth


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # a constant mouth (the mean and zero baselines) correlates with nothing
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a**2) * np.sum(b**2)))


def mouth_sync(generated: np.ndarray, truth: np.ndarray, max_offset_frames: int = 3) -> MouthSync:
    """Best-offset correlation of two mouth-opening tracks [T].

    r(l) = Pearson(truth[t], generated[t + l]) over the overlapping frames, for l in
    [-max_offset, max_offset]; the best l maximizes r (the smaller |l| on ties). A constant track
    (the mean or zero baselines) gets r = 0.
    """
    generated = np.asarray(generated, np.float64).reshape(-1)
    truth = np.asarray(truth, np.float64).reshape(-1)
    if generated.shape != truth.shape:
        raise ValueError(f"mouth_sync: generated {generated.shape} and ground truth {truth.shape} differ in length")
    n = len(truth)
    if n < 2 * max_offset_frames + 3:
        raise ValueError(f"mouth_sync: need at least {2 * max_offset_frames + 3} frames, got {n}")
    best = MouthSync(-np.inf, 0)
    for lag in range(-max_offset_frames, max_offset_frames + 1):
        r = _pearson(truth[: n - lag], generated[lag:]) if lag >= 0 else _pearson(truth[-lag:], generated[: n + lag])
        if r > best.correlation or (r == best.correlation and abs(lag) < abs(best.offset_frames)):
            best = MouthSync(r, lag)
    return best


def split_lips(
    template: np.ndarray, lip_idx: Sequence[int] | np.ndarray, up_axis: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip vertices: the lip set split at its median height on the neutral template
    (FLAME and the demo topology are y-up). Used when a regions file names no upper/lower lip."""
    lip = np.asarray(lip_idx, dtype=np.int64).reshape(-1)
    height = np.asarray(template)[lip, up_axis]
    middle = np.median(height)
    upper, lower = lip[height > middle], lip[height <= middle]
    if upper.size == 0 or lower.size == 0:
        raise ValueError("split_lips: the lip vertices do not span two heights on the template")
    return upper, lower


def lip_opening(vertices: np.ndarray, upper_lip: np.ndarray, lower_lip: np.ndarray) -> np.ndarray:
    """Mouth opening per frame [T]: distance between the upper and lower lip centroids (invariant
    to head rotation and translation), in vertex units."""
    vertices = np.asarray(vertices, np.float64)
    return np.linalg.norm(vertices[:, upper_lip].mean(axis=1) - vertices[:, lower_lip].mean(axis=1), axis=-1)
