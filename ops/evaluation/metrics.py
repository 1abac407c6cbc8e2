"""Evaluation metrics for talking-head motion, computed the way the literature computes them.

Vertex arrays are [T, V, 3] in the units of the input (FLAME: meters; NPHM: ~4x FLAME scale).
Vertex index sets (lips, upper face) are parameters, so each topology brings its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _check_pair(pred: np.ndarray, gt: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if pred.ndim != 3 or pred.shape[2] != 3 or pred.shape[0] == 0:
        raise ValueError(f"{name}: vertex sequences must be [T>0, V, 3], got {pred.shape}")
    return pred, gt


def _indices(idx: Sequence[int] | np.ndarray, n_vertices: int, name: str) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{name}: empty vertex index set")
    if idx.min() < -n_vertices or idx.max() >= n_vertices:
        raise ValueError(f"{name}: vertex indices must be in [0, {n_vertices}), got {idx.min()}..{idx.max()}")
    return idx


def lip_vertex_error(pred: np.ndarray, gt: np.ndarray, lip_idx: Sequence[int] | np.ndarray) -> float:
    """LVE: mean over frames of the maximal squared L2 error over the lip vertices.

        LVE = 1/T sum_t max_{v in lips} ||pred[t, v] - gt[t, v]||^2      (input units squared)

    As CodeTalker (Doubiiu/CodeTalker, main/cal_metric.py: `L2_dis_mouth_max`) and FaceDiffuser
    (uuembodiedsocialai/FaceDiffuser, evaluation/compute_objective_metrics.py) compute it, going
    back to MeshTalk/FaceFormer. Those scripts pool all frames of all test sequences before the
    mean; to match them over several sequences, concatenate the sequences along T.
    """
    pred, gt = _check_pair(pred, gt, "lip_vertex_error")
    lips = _indices(lip_idx, pred.shape[1], "lip_vertex_error")
    squared = np.sum((pred[:, lips] - gt[:, lips]) ** 2, axis=-1)  # [T, L]
    return float(np.mean(np.max(squared, axis=1)))


def lip_vertex_error_mm(
    pred: np.ndarray, gt: np.ndarray, lip_idx: Sequence[int] | np.ndarray, units_to_mm: float = 1000.0
) -> float:
    """LVE in millimeters: mean over frames of the maximal (not squared) L2 lip error.

        LVE_mm = 1/T sum_t max_{v in lips} ||pred[t, v] - gt[t, v]|| * units_to_mm

    As Imitator reports it (bala1144/Imitator, imitator/utils/losses.py: `Custom_errors.lip_max_l2`,
    vertices in meters scaled by 1000). units_to_mm is 1000 for meters (FLAME).
    """
    pred, gt = _check_pair(pred, gt, "lip_vertex_error_mm")
    lips = _indices(lip_idx, pred.shape[1], "lip_vertex_error_mm")
    distance = np.linalg.norm(pred[:, lips] - gt[:, lips], axis=-1) * units_to_mm  # [T, L]
    return float(np.mean(np.max(distance, axis=1)))


def mean_vertex_error(pred: np.ndarray, gt: np.ndarray, vertex_idx: Sequence[int] | np.ndarray | None = None) -> float:
    """MVE: mean L2 distance over frames and vertices (all vertices unless an index set is given).

        MVE = 1/(T V) sum_t sum_v ||pred[t, v] - gt[t, v]||

    As FaceDiffuser computes it (evaluation/compute_objective_metrics.py: `np.linalg.norm(...,
    axis=2)` then mean), in input units.
    """
    pred, gt = _check_pair(pred, gt, "mean_vertex_error")
    if vertex_idx is not None:
        idx = _indices(vertex_idx, pred.shape[1], "mean_vertex_error")
        pred, gt = pred[:, idx], gt[:, idx]
    return float(np.mean(np.linalg.norm(pred - gt, axis=-1)))


def _upper_face_motion_std(vertices: np.ndarray, template: np.ndarray, upper: np.ndarray) -> np.ndarray:
    displacement = np.sum((vertices[:, upper] - template[None, upper]) ** 2, axis=-1)  # [T, U], squared L2
    return np.std(displacement, axis=0)  # population std over time, [U]


def face_dynamics_deviation(
    pred_seqs: Sequence[np.ndarray],
    gt_seqs: Sequence[np.ndarray],
    templates: Sequence[np.ndarray],
    upper_face_idx: Sequence[int] | np.ndarray,
) -> float:
    """FDD: how much less (positive) or more (negative) the upper face moves than the ground truth.

    Per sequence s, for each upper-face vertex v, the motion m_t(v) = ||x_t(v) - template(v)||^2
    (squared L2 displacement from the subject's neutral template); its population std over time
    is std_s(v). Then

        FDD = 1/S sum_s [ 1/U sum_v ( std_s^gt(v) - std_s^pred(v) ) ]     (signed)

    As CodeTalker (Doubiiu/CodeTalker, main/cal_metric.py: `motion_std_difference`) and
    FaceDiffuser (evaluation/compute_objective_metrics.py) compute it. Units: input units squared.
    Sequences are cut to the shorter of prediction and ground truth, as those scripts do.
    """
    if not (len(pred_seqs) == len(gt_seqs) == len(templates)) or len(pred_seqs) == 0:
        raise ValueError(
            f"face_dynamics_deviation: need equally many (>0) predictions, ground truths and templates, "
            f"got {len(pred_seqs)}, {len(gt_seqs)}, {len(templates)}"
        )
    differences = []
    for s, (pred, gt, template) in enumerate(zip(pred_seqs, gt_seqs, templates)):
        n = min(len(pred), len(gt))
        pred, gt = _check_pair(np.asarray(pred)[:n], np.asarray(gt)[:n], f"face_dynamics_deviation[{s}]")
        template = np.asarray(template, np.float64).reshape(-1, 3)
        if template.shape[0] != pred.shape[1]:
            raise ValueError(
                f"face_dynamics_deviation[{s}]: template has {template.shape[0]} vertices, sequence {pred.shape[1]}"
            )
        upper = _indices(upper_face_idx, pred.shape[1], "face_dynamics_deviation")
        std_gt = _upper_face_motion_std(gt, template, upper)
        std_pred = _upper_face_motion_std(pred, template, upper)
        differences.append(np.mean(std_gt - std_pred))
    return float(np.mean(differences))


def expression_l2(pred_codes: np.ndarray, gt_codes: np.ndarray) -> float:
    """Mean over frames of the L2 distance between code vectors: 1/T sum_t ||pred[t] - gt[t]||.

    For NPHM expression codes [T, 200] (or any [..., D] code sequences of equal shape).
    """
    pred, gt = np.asarray(pred_codes, np.float64), np.asarray(gt_codes, np.float64)
    if pred.shape != gt.shape or pred.ndim < 2 or pred.shape[0] == 0:
        raise ValueError(
            f"expression_l2: code sequences must share a [T>0, ..., D] shape, got {pred.shape} and {gt.shape}"
        )
    return float(np.mean(np.linalg.norm(pred - gt, axis=-1)))


def diversity(samples: np.ndarray) -> float:
    """Mean pairwise distance of K samples generated for the same audio.

        diversity = 2/(K(K-1)) sum_{i<j} 1/T sum_t ||s_i[t] - s_j[t]||

    samples: [K, T, D] codes or [K, T, V, 3] vertices (the L2 is over the last axis, averaged
    over all others), as FaceDiffuser's `compute_diversity` (evaluation/compute_objective_metrics.py)
    averages per-vertex distances over frames and vertices for every pair.
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim < 3 or samples.shape[0] < 2:
        raise ValueError(f"diversity: need samples [K>=2, T, ...], got {samples.shape}")
    k = samples.shape[0]
    total = 0.0
    for i in range(k - 1):
        total += sum(float(np.mean(np.linalg.norm(samples[i] - samples[j], axis=-1))) for j in range(i + 1, k))
    return total / (k * (k - 1) / 2)


def audio_rms_per_frame(audio: np.ndarray, sample_rate: int, n_frames: int, fps: float) -> np.ndarray:
    """RMS energy of the audio in each video frame's window [t/fps, (t+1)/fps), shape [n_frames].

    Frames past the end of the audio get zero energy.
    """
    audio = np.asarray(audio, np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"audio must be [N] or [N, C], got {audio.shape}")
    bounds = np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(np.int64)
    energy = np.zeros(n_frames)
    for t in range(n_frames):
        window = audio[bounds[t] : bounds[t + 1]]
        if window.size:
            energy[t] = np.sqrt(np.mean(window**2))
    return energy


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # a constant signal correlates with nothing (and its rounding residue must not say otherwise)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.sum(a**2) * np.sum(b**2))
    return float(np.sum(a * b) / denominator) if denominator > 0 else 0.0


@dataclass(frozen=True)
class LipSyncScore:
    correlation: float  # Pearson r at the best lag, in [-1, 1]
    lag_frames: int  # positive: the mouth moves that many frames after the audio
    correlation_at_zero_lag: float


def lip_sync_correlation(
    audio: np.ndarray, sample_rate: int, mouth_opening: np.ndarray, fps: float, max_lag_frames: int = 3
) -> LipSyncScore:
    """Audio-energy / mouth-opening correlation, a SyncNet-free lip-sync *proxy* (secondary: it
    rewards following loudness, so a model can beat the ground truth on it; the primary measure is
    `ops.evaluation.lip_sync.mouth_sync`, against the ground-truth mouth).

    e[t] is the RMS of the audio in frame t's window, o[t] the mouth opening. For each lag l in
    [-max_lag, max_lag], r(l) = Pearson(e[t], o[t + l]) over the overlapping frames; the best lag
    maximizes r. Loud speech goes with an open mouth, so good sync gives r well above 0 at a lag
    near 0. (Not a published metric; a cheap, weight-free stand-in for SyncNet's LSE scores.)
    """
    opening = np.asarray(mouth_opening, np.float64).reshape(-1)
    n = len(opening)
    if n < 2 * max_lag_frames + 3:
        raise ValueError(
            f"lip sync: need at least {2 * max_lag_frames + 3} frames for lags up to {max_lag_frames}, got {n}"
        )
    energy = audio_rms_per_frame(audio, sample_rate, n, fps)
    best_r, best_lag, zero_r = -np.inf, 0, 0.0
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        if lag >= 0:
            r = _pearson(energy[: n - lag], opening[lag:])
        else:
            r = _pearson(energy[-lag:], opening[: n + lag])
        if lag == 0:
            zero_r = r
        if r > best_r or (r == best_r and abs(lag) < abs(best_lag)):
            best_r, best_lag = r, lag
    return LipSyncScore(correlation=float(best_r), lag_frames=best_lag, correlation_at_zero_lag=zero_r)


def lip_sync_score(
    audio_16k: np.ndarray, sample_rate: int, mouth_opening: np.ndarray, fps: float, max_lag_frames: int = 3
) -> float:
    """Best-lag Pearson correlation of audio RMS and mouth opening (see lip_sync_correlation)."""
    return lip_sync_correlation(audio_16k, sample_rate, mouth_opening, fps, max_lag_frames).correlation
