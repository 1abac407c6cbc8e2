"""The lip-sync measure against the ground truth's mouth, lip opening from vertices, and the
inline loss curve."""

import numpy as np
import pytest

from ops.evaluation.lip_sync import lip_opening, mouth_sync, split_lips
from ops.evaluation.plots import INLINE_MARKDOWN_LIMIT, loss_curve_svg_markdown, mouth_opening_png


def _opening(n: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.convolve(rng.random(n + 8), np.ones(5) / 5, mode="same")[4 : n + 4]


def test_the_ground_truth_is_the_ceiling():
    truth = _opening()
    assert mouth_sync(truth, truth) == mouth_sync(truth.copy(), truth)
    assert mouth_sync(truth, truth).correlation == pytest.approx(1.0) and mouth_sync(truth, truth).offset_frames == 0


def test_a_delayed_mouth_is_found_at_its_offset():
    truth = _opening()
    late = np.concatenate([truth[:1].repeat(2), truth[:-2]])  # generated = truth two frames later
    sync = mouth_sync(late, truth, max_offset_frames=3)
    assert sync.offset_frames == 2 and sync.correlation == pytest.approx(1.0)
    assert mouth_sync(late, truth, max_offset_frames=0).correlation < sync.correlation


def test_constant_and_unrelated_mouths_score_near_zero():
    truth = _opening()
    assert mouth_sync(np.full_like(truth, 0.3), truth).correlation == 0.0
    assert abs(mouth_sync(_opening(seed=5), truth, max_offset_frames=0).correlation) < 0.35
    with pytest.raises(ValueError, match="at least 9 frames"):
        mouth_sync(truth[:5], truth[:5])


def test_lip_opening_from_vertices():
    template = np.array([[0, 1, 0], [1, 1, 0], [0, -1, 0], [1, -1, 0], [5, 5, 5]], np.float64)
    upper, lower = split_lips(template, [0, 1, 2, 3])
    assert upper.tolist() == [0, 1] and lower.tolist() == [2, 3]
    frames = np.repeat(template[None], 3, axis=0)
    frames[1, lower, 1] -= 0.5  # the jaw drops
    frames[2] = frames[2] @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]).T + 3  # the head turns and moves
    assert lip_opening(frames, upper, lower).tolist() == pytest.approx([2.0, 2.5, 2.0])
    with pytest.raises(ValueError, match="two heights"):
        split_lips(template, [0, 1])


def test_loss_curve_fits_inline_and_mouth_plot_is_written(tmp_path):
    history = {
        "train": [[s, 1.0 / (1 + s)] for s in range(0, 400, 5)],
        "val": [[s, 1.2 / (1 + s)] for s in range(0, 400, 50)],
    }
    markdown = loss_curve_svg_markdown(history, "loss")
    assert markdown.startswith("![loss](data:image/svg+xml;base64,") and len(markdown) < INLINE_MARKDOWN_LIMIT
    tracks = {"ground_truth": _opening(), "model": _opening(seed=1), "null_condition": _opening(seed=2),
              "audio_envelope": _opening(seed=3)}  # fmt: skip
    path = mouth_opening_png(tracks, tmp_path / "mouth.png", "ID0_SEN0", fps=24)
    assert path.read_bytes()[:4] == b"\x89PNG"
