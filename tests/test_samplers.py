"""Samplers: DDIM/DDPM equivalence, guidance, determinism, long sequences, MotionModel.generate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from models.config import ExperimentConfig, config_from_dict
from models.denoiser import Denoiser
from models.diffusion import GaussianDiffusion
from models.motion_model import AudioTooShortError, MotionMeta, MotionModel
from models.samplers import (
    GuidedDenoiser,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    sample,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(steps: int = 1000) -> ExperimentConfig:
    return config_from_dict(
        {
            "model": {"motion_dim": 6, "audio_dim": 5, "width": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0},
            "diffusion": {"steps": steps},
        }
    )


def tiny_parts(steps: int = 1000):
    torch.manual_seed(0)
    cfg = tiny_config(steps)
    return Denoiser(cfg.model).eval(), GaussianDiffusion(cfg.diffusion)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_ddim_timesteps_are_descending_and_span_the_schedule():
    times = ddim_timesteps(1000, 50)
    assert len(times) == 50 and times[0] == 999 and times[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(times))
    assert ddim_timesteps(20, 20) == list(range(19, -1, -1))
    with pytest.raises(ValueError, match="DDIM steps"):
        ddim_timesteps(10, 11)


def test_ddim_over_all_steps_with_eta_one_is_ddpm():
    denoiser, diffusion = tiny_parts(steps=30)
    audio = torch.randn(2, 9, 5)
    ddpm = ddpm_sample(denoiser, diffusion, audio, guidance=1.5, generator=gen(3))
    ddim = ddim_sample(denoiser, diffusion, audio, steps=30, eta=1.0, guidance=1.5, generator=gen(3))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


def test_guidance_of_one_is_the_conditional_model():
    denoiser, _ = tiny_parts()
    audio, x_t = torch.randn(2, 7, 5), torch.randn(2, 7, 6)
    with torch.inference_mode():
        guided = GuidedDenoiser(denoiser, audio, guidance=1.0)(x_t, 400)
        conditional = denoiser(x_t, torch.full((2,), 400), audio)
    torch.testing.assert_close(guided, conditional)


def test_guidance_of_zero_is_the_null_condition_model():
    denoiser, _ = tiny_parts()
    audio, x_t = torch.randn(2, 7, 5), torch.randn(2, 7, 6)
    with torch.inference_mode():
        guided = GuidedDenoiser(denoiser, audio, guidance=0.0)(x_t, 400)
        null = denoiser(x_t, torch.full((2,), 400), torch.randn(2, 7, 5), keep_audio=torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(guided, null)


def test_guided_prediction_combines_conditional_and_null_passes():
    denoiser, _ = tiny_parts()
    audio, x_t, w = torch.randn(2, 7, 5), torch.randn(2, 7, 6), 2.5
    t = torch.full((2,), 400)
    with torch.inference_mode():
        guided = GuidedDenoiser(denoiser, audio, guidance=w)(x_t, 400)
        cond = denoiser(x_t, t, audio)
        uncond = denoiser(x_t, t, audio, keep_audio=torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(guided, uncond + w * (cond - uncond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sampling_is_deterministic_given_a_seed(method):
    denoiser, diffusion = tiny_parts(steps=50)
    audio = torch.randn(1, 12, 5)
    a = sample(denoiser, diffusion, audio, method=method, steps=10, eta=0.5, guidance=2.0, generator=gen(1))
    b = sample(denoiser, diffusion, audio, method=method, steps=10, eta=0.5, guidance=2.0, generator=gen(1))
    c = sample(denoiser, diffusion, audio, method=method, steps=10, eta=0.5, guidance=2.0, generator=gen(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_long_sequences_sample_with_any_length():
    denoiser, diffusion = tiny_parts()
    for frames in (1, 241, 600):
        out = ddim_sample(denoiser, diffusion, torch.randn(1, frames, 5), steps=3, guidance=2.0, generator=gen(0))
        assert out.shape == (1, frames, 6) and torch.isfinite(out).all()


def test_samplers_reject_features_of_the_wrong_width():
    denoiser, diffusion = tiny_parts()
    with pytest.raises(ValueError, match=r"\[B, T, 5\]"):
        ddim_sample(denoiser, diffusion, torch.randn(1, 10, 7), steps=2)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(denoiser, diffusion, torch.randn(1, 10, 5), method="euler")


def test_motion_model_generates_denormalised_codes():
    torch.manual_seed(0)
    model = MotionModel(tiny_config(), MotionMeta(fps=24, segment_frames=48)).eval()
    model.codec.set_stats(torch.full((6,), 5.0), torch.full((6,), 0.01))
    one = model.generate(np.random.randn(30, 5).astype(np.float32), steps=5, seed=0)
    batch = model.generate(np.random.randn(2, 30, 5).astype(np.float32), steps=5, seed=0, method="ddim")
    assert one.shape == (30, 6) and batch.shape == (2, 30, 6)
    assert isinstance(one, np.ndarray) and abs(one.mean() - 5.0) < 0.5  # denormalised with the stored stats
    np.testing.assert_array_equal(
        model.generate(np.ones((30, 5), np.float32), steps=5, seed=4),
        model.generate(np.ones((30, 5), np.float32), steps=5, seed=4),
    )


def test_audio_shorter_than_a_segment_is_refused_when_asked():
    model = MotionModel(tiny_config(), MotionMeta(fps=24, segment_frames=48)).eval()
    with pytest.raises(AudioTooShortError, match=r"30 frames \(1.25 s\).*48 frames"):
        model.generate(np.zeros((30, 5), np.float32), steps=2, require_full_segment=True)
    assert model.generate(np.zeros((30, 5), np.float32), steps=2).shape == (30, 6)
    with pytest.raises(ValueError, match=r"\[T, 5\]"):
        model.generate(np.zeros((30, 4), np.float32), steps=2)
