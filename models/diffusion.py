"""Gaussian diffusion over motion sequences: noise schedule, forward process, posterior, training loss.

The network predicts x0 directly (as in FaceTalk and EDGE), so the loss is an MSE on x0 and the
samplers turn predicted x0 into the next, less noisy, sample.

Schedules: "cosine" (Nichol & Dhariwal 2021, s = 0.008, betas clipped at 0.999) spends more steps at
low noise than "linear" (Ho et al. 2020: 1e-4 .. 0.02, rescaled to the number of steps); cosine is
the default because few-step DDIM sampling holds up better with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.config import DiffusionConfig


def beta_schedule(kind: str, steps: int) -> torch.Tensor:
    """[steps] float64 betas."""
    if kind == "linear":
        scale = 1000.0 / steps  # keeps the total noise comparable for fewer steps; clipped for very few
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64).clamp(max=0.999)
    if kind == "cosine":
        s = 0.008
        x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
        alphas_cumprod = torch.cos((x / steps + s) / (1 + s) * math.pi / 2) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {kind!r}; expected 'cosine' or 'linear'")


def _gather(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """values [S], t [B] -> [B, 1, 1] for broadcasting over [B, T, D]."""
    return values.to(t.device)[t].view(-1, 1, 1)


class GaussianDiffusion(nn.Module):
    """Schedule constants as (non-persistent) float32 buffers, computed in float64."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.steps = cfg.steps
        betas = beta_schedule(cfg.schedule, cfg.steps)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        constants = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            # posterior variance is 0 at t = 0; log of the t = 1 value there avoids -inf
            "posterior_log_variance": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            "posterior_mean_coef_x0": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            "posterior_mean_coef_xt": (1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
        }
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)."""
        return _gather(self.sqrt_alphas_cumprod, t) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, t) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x0)."""
        mean = _gather(self.posterior_mean_coef_x0, t) * x0 + _gather(self.posterior_mean_coef_xt, t) * x_t
        return mean, _gather(self.posterior_variance, t)

    def sample_steps(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        return torch.randint(0, self.steps, (batch,), generator=generator, device=device)


def scale_augment(x0: torch.Tensor, low: float, high: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each sequence by r ~ U(low, high): more or less pronounced versions of the same motion."""
    if low == high == 1.0:
        return x0
    r = torch.rand(x0.shape[0], 1, 1, generator=generator, device=x0.device, dtype=x0.dtype)
    return x0 * (low + (high - low) * r)


@dataclass
class DiffusionLoss:
    total: torch.Tensor
    x0_mse: torch.Tensor
    velocity_mse: torch.Tensor


def diffusion_loss(
    denoiser: nn.Module,
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    audio: torch.Tensor,
    *,
    cond_drop_prob: float,
    velocity_weight: float,
    generator: torch.Generator | None = None,
) -> DiffusionLoss:
    """x0 [B, T, D] (already normalised/augmented), audio [B, T, A] -> x0-prediction loss."""
    b, device = x0.shape[0], x0.device
    draw_on = generator.device if generator is not None else device  # a CPU generator can drive GPU training
    t = diffusion.sample_steps(b, generator, draw_on).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=draw_on).to(device, x0.dtype)
    keep_audio = (torch.rand(b, generator=generator, device=draw_on) >= cond_drop_prob).to(device)
    x0_pred = denoiser(diffusion.q_sample(x0, t, noise), t, audio, keep_audio)
    x0_mse = F.mse_loss(x0_pred.float(), x0.float())
    velocity_mse = F.mse_loss((x0_pred[:, 1:] - x0_pred[:, :-1]).float(), (x0[:, 1:] - x0[:, :-1]).float())
    return DiffusionLoss(x0_mse + velocity_weight * velocity_mse, x0_mse, velocity_mse)
