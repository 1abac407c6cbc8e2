"""What the denoiser is conditioned on: the audio (or its learned null) and the diffusion step."""

from __future__ import annotations

import torch
from torch import nn

from models.positional import sinusoidal_table


class AudioConditioning(nn.Module):
    """Cached Wav2Vec2 features [B, T, A] -> model width [B, T, W], with a learned null condition.

    Classifier-free guidance trains the same network with and without audio; "without" is a
    learned embedding broadcast over all frames, chosen per sample by `keep_audio`.
    """

    def __init__(self, audio_dim: int, width: int):
        super().__init__()
        self.project = nn.Linear(audio_dim, width)
        self.null = nn.Parameter(torch.randn(width) * 0.02)

    def forward(self, audio: torch.Tensor, keep_audio: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.project(audio)  # [B, T, W]
        if keep_audio is None:
            return cond
        keep = keep_audio.to(cond.dtype).view(-1, 1, 1)
        return cond * keep + self.null.to(cond.dtype) * (1 - keep)


class StepEmbedding(nn.Module):
    """Diffusion step t [B] -> [B, W] (sinusoidal features through a small MLP, as in DDPM/EDGE)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, width * 2), nn.SiLU(), nn.Linear(width * 2, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_table(t, self.width))
