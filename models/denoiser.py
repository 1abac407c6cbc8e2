"""The FaceTalk denoiser: a transformer decoder over the noised motion sequence that predicts x0.

Per layer (pre-norm, FiLM on every branch as in EDGE):
    x = x + FiLM_1(causal self-attention(norm(x)))    frame t sees frames <= t
    x = x + FiLM_2(aligned cross-attention(audio))   frame t sees audio frame t only
    x = x + FiLM_3(feed-forward(norm(x)))
where FiLM_i(h) = h * (1 + scale_i(s)) + shift_i(s) and s is the diffusion-step embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.conditioning import AudioConditioning, StepEmbedding
from models.config import ModelConfig
from models.positional import positional_encoding

# Per layer, the cross-attention output for each frame [B, T, W]; depends on the audio only.
AudioContext = tuple[torch.Tensor, ...]


class FiLM(nn.Module):
    """Feature-wise linear modulation of a branch output by the step embedding."""

    def __init__(self, width: int):
        super().__init__()
        self.to_scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, h: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(step).unsqueeze(1).chunk(2, dim=-1)  # [B, 1, W] each
        return h * (1 + scale) + shift

    def add_to(self, x: torch.Tensor, h: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """x + FiLM(h) in one fused pass (sampling path; no dropout in between)."""
        scale, shift = self.to_scale_shift(step).unsqueeze(1).chunk(2, dim=-1)
        return torch.addcmul(x + shift, h, 1 + scale)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # [B, H, T, d]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, w))


class AlignedCrossAttention(nn.Module):
    """Cross-attention under FaceFormer's diagonal alignment mask: frame t attends to audio frame t only.

    With a single admissible key the softmax weight is exactly 1, so the result is
    out(value(audio_t)) whatever the query: query/key projections could not change the output and
    are left out. The output is therefore a function of the audio alone, computed once per
    sequence and reused at every diffusion step (the "cross-attention cache" of the samplers).
    """

    def __init__(self, width: int):
        super().__init__()
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return self.out(self.value(memory))


class DenoiserLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.norm_self = nn.LayerNorm(w)
        self.self_attention = CausalSelfAttention(w, cfg.heads, cfg.dropout)
        self.cross_attention = AlignedCrossAttention(w)
        self.norm_ff = nn.LayerNorm(w)
        self.feed_forward = nn.Sequential(nn.Linear(w, cfg.ff), nn.GELU(approximate="tanh"), nn.Linear(cfg.ff, w))
        self.film_self, self.film_cross, self.film_ff = FiLM(w), FiLM(w), FiLM(w)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cross: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop.p > 0:
            x = x + self.drop(self.film_self(self.self_attention(self.norm_self(x)), step))
            x = x + self.drop(self.film_cross(cross, step))
            return x + self.drop(self.film_ff(self.feed_forward(self.norm_ff(x)), step))
        x = self.film_self.add_to(x, self.self_attention(self.norm_self(x)), step)
        x = self.film_cross.add_to(x, cross, step)
        return self.film_ff.add_to(x, self.feed_forward(self.norm_ff(x)), step)


class Denoiser(nn.Module):
    """(x_t [B, T, D], t [B], audio [B, T, A]) -> predicted x0 [B, T, D]; any T."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.motion_in = nn.Linear(cfg.motion_dim, cfg.width)
        self.audio = AudioConditioning(cfg.audio_dim, cfg.width)
        self.step = StepEmbedding(cfg.width)
        self.layers = nn.ModuleList(DenoiserLayer(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.motion_out = nn.Linear(cfg.width, cfg.motion_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self._positions: dict[tuple, torch.Tensor] = {}

    def encode_audio(self, audio: torch.Tensor, keep_audio: torch.Tensor | None = None) -> AudioContext:
        """Everything the audio contributes, per layer; `keep_audio` [B] bool selects the null condition where False."""
        memory = self.audio(audio, keep_audio)
        return tuple(layer.cross_attention(memory) for layer in self.layers)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: AudioContext) -> torch.Tensor:
        b, length, _ = x_t.shape
        if context[0].shape[:2] != (b, length):
            raise ValueError(
                f"audio context covers {tuple(context[0].shape[:2])} (batch, frames), motion has {(b, length)}"
            )
        step = self.step(t)  # [B, W]
        x = self.drop(self.motion_in(x_t) + self._positional(length, x_t.device))
        for layer, cross in zip(self.layers, context):
            x = layer(x, cross, step)
        return self.motion_out(self.norm_out(x))

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, keep_audio: torch.Tensor | None = None
    ) -> torch.Tensor:
        if audio.shape[:2] != x_t.shape[:2]:
            raise ValueError(
                f"audio features {tuple(audio.shape)} are not aligned with motion {tuple(x_t.shape)}: same batch and frames needed"
            )
        return self.denoise(x_t, t, self.encode_audio(audio, keep_audio))

    def _positional(self, length: int, device: torch.device) -> torch.Tensor:
        # Keyed by inference mode too: a table made under torch.inference_mode cannot enter autograd.
        key = (length, device, torch.is_inference_mode_enabled())
        if key not in self._positions:
            if len(self._positions) > 16:
                self._positions.clear()
            self._positions[key] = positional_encoding(
                self.cfg.positional, length, self.cfg.width, self.cfg.period, device
            )
        return self._positions[key]
