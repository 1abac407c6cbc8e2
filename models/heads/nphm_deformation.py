"""NPHM expression model as a backward deformation: posed-space points -> canonical-space points.

Follows DeformationNetwork(mode="compress") of the NPHM release: the identity code and the
identity's anchors are compressed by one linear layer to a small code, which together with the
expression code conditions a DeepSDF-style MLP with 3 outputs. Used backward,
x_can = x + delta(x, z_exp, compress(z_id, anchors)), and sdf(x) = identity_sdf(x_can).
"""

from __future__ import annotations

import torch
from torch import nn

from models.heads.deepsdf import folded_deepsdf_forward


class ConditionedDeepSDF(nn.Module):
    """DeepSDF MLP (softplus, one skip connection) on [x, latent] with one latent for all points.

    As in the identity ensemble, the latent's share of the input and skip layers is folded into
    the bias (`folded_deepsdf_forward`).
    """

    def __init__(self, latent_dim: int, hidden_dim: int, n_layers: int, out_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        input_dim = 3 + latent_dim
        self.skip_layer = n_layers // 2
        dims = [input_dim] + [hidden_dim] * n_layers + [out_dim]
        layers = []
        for i in range(n_layers + 1):
            layer_out = dims[i + 1] - input_dim if i + 1 == self.skip_layer else dims[i + 1]
            layers.append(nn.Linear(dims[i], layer_out))
        self.layers = nn.ModuleList(layers)

    def forward(self, points: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """points [N, 3], latent [C] -> [N, out_dim]."""
        layers = [(layer.weight[None], layer.bias[None]) for layer in self.layers]  # one member
        return folded_deepsdf_forward(points[None], latent[None], layers, self.skip_layer)[0]


class BackwardDeformation(nn.Module):
    """Offsets delta [N, 3] that carry posed points to the canonical (neutral) head."""

    def __init__(
        self,
        identity_dim: int,
        n_anchors: int,
        expression_dim: int,
        compressed_identity_dim: int,
        hidden_dim: int,
        n_layers: int,
    ):
        super().__init__()
        self.expression_dim = expression_dim
        self.compressor = nn.Linear(identity_dim + 3 * n_anchors, compressed_identity_dim)
        self.mlp = ConditionedDeepSDF(
            latent_dim=compressed_identity_dim + expression_dim,
            hidden_dim=hidden_dim,
            n_layers=n_layers,
            out_dim=3,
        )
        # A freshly built model starts as the neutral head for every expression (delta = 0);
        # trained weights replace this.
        nn.init.zeros_(self.mlp.layers[-1].weight)
        nn.init.zeros_(self.mlp.layers[-1].bias)

    def condition(self, identity: torch.Tensor, anchors: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """identity [I], anchors [K, 3], expression [E] -> MLP latent [compressed + E]."""
        compressed = self.compressor(torch.cat([identity, anchors.reshape(-1)]))
        if self.training:  # NPHM's regularizing noise on the compressed identity
            compressed = compressed + torch.randn_like(compressed) / 200
        return torch.cat([compressed, expression])

    def forward(
        self, points: torch.Tensor, identity: torch.Tensor, anchors: torch.Tensor, expression: torch.Tensor
    ) -> torch.Tensor:
        """points [N, 3] posed -> delta [N, 3] (x_can = x + delta)."""
        return self.mlp(points, self.condition(identity, anchors, expression))
