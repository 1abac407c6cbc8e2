"""Facial smoothing: jitter away from the mouth suppressed, the mouth's motion kept (SDF samples and meshes)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from models.heads.analytic import EXPRESSION_DIMS, AnalyticHead
from ops.geometry.facial_smoothing import MOUTH_CENTRE, FacialSmoothing, SmoothedFrameHead, smoothing_heads
from ops.geometry.talking_head import expression_meshes, torch_threads

FRAMES = 24


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # tens of thousands of points per call: threads only fight on a busy CPU
        yield


@pytest.fixture(scope="module")
def head() -> AnalyticHead:
    return AnalyticHead()


def _jittery_speech(frames: int = FRAMES, seed: int = 0) -> np.ndarray:
    """A slow jaw movement (the speech) plus i.i.d. frame-to-frame noise on every expression dim."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((frames, 200), np.float32)
    t = np.arange(frames)
    codes[:, EXPRESSION_DIMS["jaw_open"]] = 0.45 + 0.35 * np.sin(2 * np.pi * t / 12)
    for dim in EXPRESSION_DIMS.values():
        codes[:, dim] += 0.15 * rng.standard_normal(frames)
    return codes


def _points_near_surface(head, low, high, n: int = 6000, band: float = 0.03) -> torch.Tensor:
    rng = np.random.default_rng(1)
    points = torch.as_tensor(rng.uniform(low, high, size=(n, 3)), dtype=torch.float32)
    neutral = head.sdf(points, torch.zeros(1344), torch.zeros(200))
    return points[neutral.abs() < band]


def _sdf_track(heads, codes, points) -> np.ndarray:
    """[T, N]: each frame's SDF at fixed points."""
    identity = torch.zeros(1344)
    with torch.inference_mode():
        return np.stack(
            [h.sdf(points, identity, torch.as_tensor(c)).numpy() for h, c in zip(heads, codes, strict=True)]
        )


def _jitter(track: np.ndarray) -> float:
    """Mean over points of the RMS second difference over time: frame-to-frame jitter, not slow motion."""
    return float(np.sqrt((np.diff(track, n=2, axis=0) ** 2).mean(axis=0)).mean())


def test_jitter_away_from_the_mouth_drops_and_the_mouth_keeps_its_motion(head):
    codes = _jittery_speech()
    smoothing = FacialSmoothing()
    raw_heads = smoothing_heads(head, codes, None)
    smooth_heads = smoothing_heads(head, codes, smoothing)
    mx, my, mz = MOUTH_CENTRE
    # Forehead and brows: far outside the mouth's Gaussian.
    brow = _points_near_surface(head, (-0.2, 0.22, 0.05), (0.2, 0.45, 0.40))
    # The lips around the mouth's centre, where w > 0.85.
    mouth = _points_near_surface(head, (mx - 0.025, my - 0.03, mz - 0.035), (mx + 0.025, my + 0.03, mz + 0.035))
    assert len(brow) > 100 and len(mouth) > 100
    assert float(smoothing.weight(brow).max()) == 0.0 and float(smoothing.weight(mouth).min()) > 0.85

    brow_raw, brow_smooth = _sdf_track(raw_heads, codes, brow), _sdf_track(smooth_heads, codes, brow)
    mouth_raw, mouth_smooth = _sdf_track(raw_heads, codes, mouth), _sdf_track(smooth_heads, codes, mouth)
    assert _jitter(brow_raw) > 2e-4  # the jitter is there to remove
    assert _jitter(brow_smooth) < 0.3 * _jitter(brow_raw)
    # At the mouth: the motion (temporal spread of the SDF) and the values stay those of the raw codes.
    spread_raw, spread_smooth = mouth_raw.std(axis=0).mean(), mouth_smooth.std(axis=0).mean()
    assert abs(spread_smooth / spread_raw - 1) < 0.1
    assert np.abs(mouth_smooth - mouth_raw).mean() < 0.1 * np.abs(np.diff(mouth_raw, axis=0)).mean()


def test_meshes_jitter_less_away_from_the_mouth(head):
    """The same on extracted meshes: the upper head moves less from frame to frame, the mouth as much."""
    codes = _jittery_speech(8, seed=3)
    raw = expression_meshes(head, np.zeros(1344), codes, resolution=40)
    smooth = expression_meshes(head, np.zeros(1344), codes, resolution=40, smoothing=FacialSmoothing())

    def motion(meshes, region) -> float:
        """Mean distance from a frame's vertices in `region` to the previous frame's surface (vertices)."""
        steps = []
        for before, after in itertools.pairwise(meshes):
            moved = after.vertices[region(after.vertices)]
            steps.append(cKDTree(before.vertices).query(moved)[0].mean())
        return float(np.mean(steps))

    def upper(v):
        return (v[:, 1] > 0.22) & (v[:, 2] > 0.05)

    def mouth(v):
        return np.linalg.norm(v - np.asarray(MOUTH_CENTRE), axis=1) < 0.05

    assert motion(smooth, upper) < 0.6 * motion(raw, upper)
    assert abs(motion(smooth, mouth) / motion(raw, mouth) - 1) < 0.15


def test_identical_codes_cost_one_evaluation_and_change_nothing(head):
    points = torch.rand(500, 3) - 0.5
    code = torch.zeros(200)
    code[EXPRESSION_DIMS["jaw_open"]] = 0.5
    blended = SmoothedFrameHead(head, code.numpy(), FacialSmoothing())
    assert torch.equal(blended.sdf(points, torch.zeros(1344), code), head.sdf(points, torch.zeros(1344), code))


@pytest.mark.parametrize(
    "kwargs", [{"width": 0.0}, {"temporal_sigma": -1.0}, {"centre": (0.0, float("nan"), 0.0)}, {"cutoff": 1.0}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="facial smoothing"):
        FacialSmoothing(**kwargs)


def test_nphm_heads_are_smoothed_and_rendered_through_the_same_interface(tmp_path):
    """Only `sdf(points, identity, expression)` is used: a (tiny, random) NPHM goes through the same path."""
    from ops.geometry.talking_head import render_expression_video, talking_head_render_config
    from tests.test_nphm import tiny_model
    from tests.video_tools import probe_video

    head = tiny_model().eval()
    codes = (0.3 * np.random.default_rng(0).standard_normal((6, head.expression_dim))).astype(np.float32)
    identity = np.zeros(head.identity_dim, np.float32)
    points = torch.rand(2000, 3) - 0.5
    far = points[FacialSmoothing().weight(points) == 0]
    with torch.inference_mode():
        smoothed = smoothing_heads(head, codes, FacialSmoothing())[2]
        raw = head.sdf(far, torch.as_tensor(identity), torch.as_tensor(codes[2]))
        blended = smoothed.sdf(far, torch.as_tensor(identity), torch.as_tensor(codes[2]))
        at_smoothed_code = head.sdf(far, torch.as_tensor(identity), smoothed.smoothed_code)
    assert torch.allclose(blended, at_smoothed_code) and not torch.allclose(blended, raw)  # far: the smoothed code
    video = render_expression_video(
        head, identity, codes, tmp_path / "nphm.mp4", audio_samples=None, sample_rate=None, fps=24, resolution=16,
        render_config=talking_head_render_config(48), smoothing=FacialSmoothing(),
    )  # fmt: skip
    assert probe_video(video)["n_frames"] == 6
