"""Positional encodings over motion frames, built for any sequence length T on demand."""

from __future__ import annotations

import math

import torch


def sinusoidal_table(positions: torch.Tensor, width: int) -> torch.Tensor:
    """positions [T] -> [T, W], interleaved sin/cos as in "Attention is all you need"."""
    div = torch.exp(
        torch.arange(0, width, 2, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / width)
    )
    angles = positions.float()[:, None] * div[None]
    table = torch.zeros(len(positions), width, device=positions.device)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()
    return table


def positional_encoding(
    kind: str, length: int, width: int, period: int, device: torch.device | None = None
) -> torch.Tensor:
    """[T, W]. "ppe" repeats the encoding of one period (FaceFormer's periodic positional
    encoding), so sequences longer than anything seen in training reuse familiar values."""
    frames = torch.arange(length, device=device)
    if kind == "ppe":
        frames = frames % period
    return sinusoidal_table(frames, width)
