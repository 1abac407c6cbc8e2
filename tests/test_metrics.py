"""Metric formulas on small cases whose expected values are worked out by hand."""

import math

import numpy as np
import pytest

from ops.evaluation.metrics import (
    audio_rms_per_frame,
    diversity,
    expression_l2,
    face_dynamics_deviation,
    lip_sync_correlation,
    lip_sync_score,
    lip_vertex_error,
    lip_vertex_error_mm,
    mean_vertex_error,
)


def _lip_case():
    # 2 frames, 3 vertices; lips are vertices 0 and 2, vertex 1 has a large error outside the lips.
    pred = np.zeros((2, 3, 3))
    gt = np.zeros((2, 3, 3))
    gt[0, 0] = [1, 0, 0]  # squared error 1
    gt[0, 1] = [10, 0, 0]  # not a lip vertex
    gt[0, 2] = [0, 2, 0]  # squared error 4  -> frame max 4
    gt[1, 0] = [1, 1, 1]  # squared error 3  -> frame max 3
    gt[1, 2] = [0, 0, 1]  # squared error 1
    return pred, gt, [0, 2]


def test_lip_vertex_error_is_mean_of_per_frame_max_squared_error():
    pred, gt, lips = _lip_case()
    assert lip_vertex_error(pred, gt, lips) == pytest.approx((4 + 3) / 2)


def test_lip_vertex_error_mm_takes_the_root_and_scales():
    pred, gt, lips = _lip_case()
    # frame maxima of the plain distance: 2 and sqrt(3), in meters -> mm
    assert lip_vertex_error_mm(pred, gt, lips, units_to_mm=1000.0) == pytest.approx((2000 + 1000 * math.sqrt(3)) / 2)


def test_mean_vertex_error_averages_distances():
    pred = np.zeros((1, 2, 3))
    gt = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])  # distances 5 and 1
    assert mean_vertex_error(pred, gt) == pytest.approx(3.0)
    assert mean_vertex_error(pred, gt, vertex_idx=[1]) == pytest.approx(1.0)


def test_face_dynamics_deviation_signed_and_averaged_over_sequences():
    template = np.zeros((2, 3))
    upper = [0]
    # Sequence 1: gt upper vertex motion (squared displacement) 1 then 4 -> population std 1.5;
    # pred stays at motion 1 -> std 0. Difference +1.5.
    gt1 = np.zeros((2, 2, 3))
    gt1[0, 0], gt1[1, 0] = [1, 0, 0], [2, 0, 0]
    pred1 = np.zeros((2, 2, 3))
    pred1[:, 0] = [1, 0, 0]
    pred1[:, 1] = [[5, 5, 5], [0, 0, 0]]  # vertex 1 is not upper face: ignored
    # Sequence 2: gt still (std 0); pred motion 0 then 2 -> std 1. Difference -1.
    # pred has an extra frame that would change its std if it were not cut to the gt length.
    gt2 = np.zeros((2, 2, 3))
    pred2 = np.zeros((3, 2, 3))
    pred2[1, 0] = [1, 1, 0]
    pred2[2, 0] = [9, 9, 9]
    fdd = face_dynamics_deviation([pred1, pred2], [gt1, gt2], [template, template], upper)
    assert fdd == pytest.approx((1.5 - 1.0) / 2)


def test_face_dynamics_deviation_rejects_mismatched_inputs():
    seq = np.zeros((3, 2, 3))
    with pytest.raises(ValueError, match="equally many"):
        face_dynamics_deviation([seq], [seq, seq], [np.zeros((2, 3))], [0])
    with pytest.raises(ValueError, match="template has 5 vertices"):
        face_dynamics_deviation([seq], [seq], [np.zeros((5, 3))], [0])


def test_expression_l2_is_mean_frame_distance():
    pred = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert expression_l2(pred, np.zeros((2, 2))) == pytest.approx((5 + 0) / 2)


def test_diversity_is_mean_pairwise_distance():
    samples = np.array([[[0.0]], [[1.0]], [[3.0]]])  # K=3, T=1, D=1: pair distances 1, 3, 2
    assert diversity(samples) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="K>=2"):
        diversity(samples[:1])


def _square_wave_audio(amplitudes, samples_per_frame):
    # +a, -a alternating within each frame: the RMS of frame t is exactly amplitudes[t]
    signs = np.tile([1.0, -1.0], samples_per_frame // 2)
    return np.concatenate([a * signs for a in amplitudes])


def test_audio_rms_per_frame_matches_frame_windows():
    amplitudes = [0.0, 0.5, 0.25]
    audio = _square_wave_audio(amplitudes, samples_per_frame=10)  # 100 Hz audio at 10 fps
    assert audio_rms_per_frame(audio, 100, n_frames=4, fps=10) == pytest.approx([0.0, 0.5, 0.25, 0.0])


def test_lip_sync_finds_the_lag_of_a_delayed_mouth():
    rng = np.random.default_rng(0)
    amplitudes = rng.uniform(0.0, 1.0, size=40)
    audio = _square_wave_audio(amplitudes, samples_per_frame=10)
    opening = np.concatenate([[0.3, 0.3], amplitudes[:-2]])  # mouth follows the audio 2 frames late
    score = lip_sync_correlation(audio, 100, opening, fps=10, max_lag_frames=3)
    assert score.lag_frames == 2
    assert score.correlation == pytest.approx(1.0)
    assert score.correlation_at_zero_lag < 0.9
    assert lip_sync_score(audio, 100, opening, fps=10) == pytest.approx(1.0)


def test_lip_sync_of_an_inverted_mouth_is_negative():
    amplitudes = np.tile([0.1, 0.9, 0.5, 0.2], 5)
    audio = _square_wave_audio(amplitudes, samples_per_frame=10)
    score = lip_sync_correlation(audio, 100, -amplitudes, fps=10, max_lag_frames=0)
    assert score.correlation == pytest.approx(-1.0)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="differ in shape"):
        lip_vertex_error(np.zeros((2, 3, 3)), np.zeros((3, 3, 3)), [0])
    with pytest.raises(ValueError, match=r"vertex indices must be in \[0, 3\)"):
        lip_vertex_error(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), [7])
