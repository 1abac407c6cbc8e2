"""Samplers: ancestral DDPM over all steps and DDIM over K steps, both with classifier-free guidance.

Guidance: x0 = x0_uncond + w (x0_cond - x0_uncond); w = 1 is the plain conditional model and
w = 0 the null-condition model (each a single pass). The conditional and null passes run as one batch of 2B, and the audio's
contribution (the aligned cross-attention) is computed once per call, not once per step.
Deterministic for a given `torch.Generator`.
"""

from __future__ import annotations

import torch

from models.denoiser import AudioContext, Denoiser
from models.diffusion import GaussianDiffusion


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Drawn on the generator's device, so a CPU seed gives the same noise whatever runs the model.
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


class GuidedDenoiser:
    """Predicts guided x0 for a batch of B sequences, reusing the audio context across steps."""

    def __init__(self, denoiser: Denoiser, audio: torch.Tensor, guidance: float):
        self.denoiser = denoiser
        self.guidance = float(guidance)
        b = audio.shape[0]
        # w = 1 is the conditional model alone and w = 0 the null model alone: one pass of B suffices.
        self.single_pass = self.guidance in (0.0, 1.0)
        if self.single_pass:
            keep = torch.full((b,), self.guidance == 1.0, dtype=torch.bool, device=audio.device)
            self.context: AudioContext = denoiser.encode_audio(audio, keep)
        else:
            keep = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]).to(audio.device)
            self.context = denoiser.encode_audio(torch.cat([audio, audio]), keep)

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        b = x_t.shape[0]
        if self.single_pass:
            return self.denoiser.denoise(x_t, torch.full((b,), t, device=x_t.device), self.context)
        steps = torch.full((2 * b,), t, device=x_t.device)
        x0_cond, x0_uncond = self.denoiser.denoise(torch.cat([x_t, x_t]), steps, self.context).float().chunk(2)
        return x0_uncond + self.guidance * (x0_cond - x0_uncond)


def _check_audio(audio: torch.Tensor, denoiser: Denoiser) -> None:
    if audio.ndim != 3 or audio.shape[-1] != denoiser.cfg.audio_dim:
        raise ValueError(f"audio features must be [B, T, {denoiser.cfg.audio_dim}], got {tuple(audio.shape)}")
    if audio.shape[1] < 1:
        raise ValueError("audio features have no frames")


@torch.inference_mode()
def ddpm_sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    audio: torch.Tensor,
    *,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """audio [B, T, A] -> x0 [B, T, D], ancestral sampling over all diffusion steps."""
    _check_audio(audio, denoiser)
    predict = GuidedDenoiser(denoiser, audio, guidance)
    b, length, _ = audio.shape
    x = _randn((b, length, denoiser.cfg.motion_dim), generator, audio.device)
    for t in range(diffusion.steps - 1, -1, -1):
        x0 = predict(x, t)
        tt = torch.full((b,), t, device=x.device)
        mean, variance = diffusion.q_posterior(x0, x, tt)
        x = mean + variance.sqrt() * _randn(x.shape, generator, x.device) if t > 0 else mean
    return x


def ddim_timesteps(total: int, k: int) -> list[int]:
    """K descending steps from total-1 to 0, evenly spaced."""
    if not 1 <= k <= total:
        raise ValueError(f"DDIM steps must be in [1, {total}], got {k}")
    return sorted({round(float(v)) for v in torch.linspace(total - 1, 0, k)}, reverse=True)


@torch.inference_mode()
def ddim_sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    audio: torch.Tensor,
    *,
    steps: int = 50,
    eta: float = 0.0,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """audio [B, T, A] -> x0 [B, T, D] in K = `steps` DDIM steps; eta = 0 is deterministic
    after the initial noise, eta = 1 with K = all steps is ancestral DDPM."""
    _check_audio(audio, denoiser)
    predict = GuidedDenoiser(denoiser, audio, guidance)
    b, length, _ = audio.shape
    x = _randn((b, length, denoiser.cfg.motion_dim), generator, audio.device)
    alphas_cumprod = diffusion.alphas_cumprod.double().cpu()
    times = ddim_timesteps(diffusion.steps, steps)
    for i, t in enumerate(times):
        x0 = predict(x, t)
        abar = alphas_cumprod[t].item()
        abar_prev = alphas_cumprod[times[i + 1]].item() if i + 1 < len(times) else 1.0
        eps = (x - abar**0.5 * x0) / (1 - abar) ** 0.5
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
        x = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * _randn(x.shape, generator, x.device)
    return x


def sample(
    denoiser: Denoiser,
    diffusion: GaussianDiffusion,
    audio: torch.Tensor,
    *,
    method: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if method == "ddpm":
        return ddpm_sample(denoiser, diffusion, audio, guidance=guidance, generator=generator)
    if method == "ddim":
        return ddim_sample(denoiser, diffusion, audio, steps=steps, eta=eta, guidance=guidance, generator=generator)
    raise ValueError(f"unknown sampler {method!r}; expected 'ddpm' or 'ddim'")
