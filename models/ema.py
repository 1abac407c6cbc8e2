"""Exponential moving average of a module's weights (the copy used for validation and sampling)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up: early on the average follows the weights closely instead of clinging to the init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for avg, live in zip(self.shadow.parameters(), model.parameters()):
            avg.lerp_(live.detach().to(avg.dtype), 1 - decay)
        for avg, live in zip(self.shadow.buffers(), model.buffers()):
            avg.copy_(live)
