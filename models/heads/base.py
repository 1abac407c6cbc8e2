"""The one interface every head model implements (NPHM, the analytic demo head)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

IDENTITY_DIM = 1344  # NPHM: 64 global + (39 anchors + 1 global member) x 32 local
EXPRESSION_DIM = 200

# NPHM's canonical-space bounding box for marching cubes (min corner, max corner).
NPHM_GRID_MIN = (-0.55, -0.50, -0.95)
NPHM_GRID_MAX = (0.55, 0.75, 0.40)


@runtime_checkable
class HeadModel(Protocol):
    """A neural or analytic head: posed-space points -> signed distance (negative inside)."""

    identity_dim: int
    expression_dim: int

    def sdf(self, points: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """points [N, 3] float32, identity [identity_dim], expression [expression_dim] -> sdf [N]."""
        ...
