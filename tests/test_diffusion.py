"""Diffusion math: schedules, q_sample and the posterior on known values, augmentation, the loss."""

from __future__ import annotations

import math

import pytest
import torch

from models.config import DiffusionConfig
from models.diffusion import (
    GaussianDiffusion,
    beta_schedule,
    diffusion_loss,
    scale_augment,
)


def test_linear_schedule_matches_ho_et_al():
    betas = beta_schedule("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    assert torch.all(betas[1:] > betas[:-1])


def test_cosine_schedule_follows_the_squared_cosine():
    steps = 1000
    betas = beta_schedule("cosine", steps)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    assert torch.all(betas <= 0.999) and torch.all(betas > 0)
    assert torch.all(alphas_cumprod[1:] < alphas_cumprod[:-1])
    s = 0.008
    f = lambda t: math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2
    assert alphas_cumprod[499].item() == pytest.approx(f(500) / f(0), rel=1e-6)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        beta_schedule("quadratic", 10)


def test_q_sample_on_known_values():
    diff = GaussianDiffusion(DiffusionConfig(steps=100, schedule="linear"))
    betas = beta_schedule("linear", 100)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.tensor([0, 40, 99])
    ones, zeros = torch.ones(3, 2, 5), torch.zeros(3, 2, 5)
    mean_part = diff.q_sample(ones, t, zeros)
    noise_part = diff.q_sample(zeros, t, ones)
    for i, step in enumerate(t.tolist()):
        assert torch.allclose(mean_part[i], torch.full((2, 5), abar[step].sqrt().item()))
        assert torch.allclose(noise_part[i], torch.full((2, 5), (1 - abar[step]).sqrt().item()))


def test_posterior_matches_the_closed_form():
    diff = GaussianDiffusion(DiffusionConfig(steps=100, schedule="linear"))
    betas = beta_schedule("linear", 100)
    abar = torch.cumprod(1 - betas, 0)
    x0, x_t = torch.full((1, 1, 1), 2.0), torch.full((1, 1, 1), -1.0)
    step = 50
    abar_prev = abar[step - 1]
    expected_mean = (abar_prev.sqrt() * betas[step] / (1 - abar[step])) * 2.0 + (
        (1 - betas[step]).sqrt() * (1 - abar_prev) / (1 - abar[step])
    ) * -1.0
    expected_var = betas[step] * (1 - abar_prev) / (1 - abar[step])
    mean, var = diff.q_posterior(x0, x_t, torch.tensor([step]))
    assert mean.item() == pytest.approx(expected_mean.item(), rel=1e-5)
    assert var.item() == pytest.approx(expected_var.item(), rel=1e-5)
    # at t = 0 the posterior collapses onto x0
    mean0, var0 = diff.q_posterior(x0, x_t, torch.tensor([0]))
    assert mean0.item() == pytest.approx(2.0, rel=1e-6)
    assert var0.item() == 0.0


def test_posterior_of_a_consistent_pair_has_the_right_marginal():
    """E over x_t of the posterior mean equals the mean of q(x_{t-1} | x0): sqrt(abar_{t-1}) x0."""
    diff = GaussianDiffusion(DiffusionConfig(steps=50, schedule="cosine"))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1), 1.5)
    t = torch.full((20000,), 30)
    x_t = diff.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    mean, var = diff.q_posterior(x0, x_t, t)
    x_prev = mean + var.sqrt() * torch.randn(x0.shape, generator=g)
    abar_prev = diff.alphas_cumprod[29].item()
    assert x_prev.mean().item() == pytest.approx(math.sqrt(abar_prev) * 1.5, abs=0.02)
    assert x_prev.var().item() == pytest.approx(1 - abar_prev, abs=0.02)


def test_scale_augment_scales_each_sequence_within_bounds():
    x = torch.ones(64, 5, 3)
    assert scale_augment(x, 1.0, 1.0) is x
    scaled = scale_augment(x, 0.8, 1.2, torch.Generator().manual_seed(0))
    per_sequence = scaled[:, 0, 0]
    assert torch.all(scaled == per_sequence.view(-1, 1, 1))  # one r per sequence
    assert per_sequence.min() >= 0.8 and per_sequence.max() <= 1.2
    assert per_sequence.std() > 0.05


class RecordingDenoiser(torch.nn.Module):
    """Returns a fixed prediction and records what it was called with."""

    def __init__(self, prediction: torch.Tensor):
        super().__init__()
        self.prediction = prediction
        self.calls = []

    def forward(self, x_t, t, audio, keep_audio=None):
        self.calls.append((x_t, t, keep_audio))
        return self.prediction


def test_loss_is_zero_for_a_perfect_x0_prediction_and_counts_velocity():
    diff = GaussianDiffusion(DiffusionConfig(steps=100))
    x0 = torch.randn(4, 6, 3)
    perfect = diffusion_loss(
        RecordingDenoiser(x0), diff, x0, torch.randn(4, 6, 2), cond_drop_prob=0.25, velocity_weight=1.0
    )
    assert perfect.total.item() == 0.0
    offset = diffusion_loss(
        RecordingDenoiser(x0 + 1.0), diff, x0, torch.randn(4, 6, 2), cond_drop_prob=0.0, velocity_weight=1.0
    )
    assert offset.x0_mse.item() == pytest.approx(1.0)
    assert offset.velocity_mse.item() == pytest.approx(0.0)  # a constant offset does not change velocity
    jitter = x0.clone()
    jitter[:, ::2] += 1.0
    rough = diffusion_loss(
        RecordingDenoiser(jitter), diff, x0, torch.randn(4, 6, 2), cond_drop_prob=0.0, velocity_weight=0.5
    )
    assert rough.velocity_mse.item() == pytest.approx(1.0)
    assert rough.total.item() == pytest.approx(rough.x0_mse.item() + 0.5)


def test_audio_is_dropped_per_sample_at_the_configured_rate():
    diff = GaussianDiffusion(DiffusionConfig(steps=100))
    x0 = torch.zeros(4000, 2, 1)
    recorder = RecordingDenoiser(x0)
    diffusion_loss(
        recorder,
        diff,
        x0,
        torch.zeros(4000, 2, 1),
        cond_drop_prob=0.25,
        velocity_weight=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    _, t, keep = recorder.calls[0]
    assert keep.float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert t.min() >= 0 and t.max() < 100 and len(t.unique()) > 90


def test_loss_is_deterministic_given_a_generator():
    diff = GaussianDiffusion(DiffusionConfig(steps=100))
    x0 = torch.randn(8, 4, 3)
    a, b = RecordingDenoiser(x0), RecordingDenoiser(x0)
    for rec in (a, b):
        diffusion_loss(
            rec,
            diff,
            x0,
            torch.zeros(8, 4, 1),
            cond_drop_prob=0.25,
            velocity_weight=0.0,
            generator=torch.Generator().manual_seed(7),
        )
    torch.testing.assert_close(a.calls[0][0], b.calls[0][0])
