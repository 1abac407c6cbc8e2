"""The DeepSDF forward shared by NPHM's identity ensemble and its deformation network.

DeepSDF (Park et al., 2019) concatenates [x, latent] at the input and again at a skip layer.
The latent is constant over the points of one call, so its share of those layers is folded
into the bias: the point batch carries 3 input channels instead of 3 + latent_dim, which is
what makes decoding millions of grid points cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

SOFTPLUS_BETA = 100.0  # as NPHM: a smooth ReLU that keeps SDF gradients well defined
SKIP_SCALE = 1.0 / math.sqrt(2.0)  # DeepSDF's skip connection: cat([h, input]) / sqrt(2)


def folded_deepsdf_forward(
    coords: torch.Tensor,
    latent: torch.Tensor,
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    skip_layer: int,
) -> torch.Tensor:
    """coords [M, N, 3], latent [M, C], layers (weight [M, out, in], bias [M, out]) -> [M, N, out_last].

    M independent MLPs (ensemble members; M = 1 for a single network). Layer 0 and `skip_layer`
    take [h, x, latent] (h empty at layer 0); softplus between layers, none after the last.
    """
    latent_dim = latent.shape[-1]
    h = coords
    last = len(layers) - 1
    for i, (weight, bias) in enumerate(layers):
        if i == 0 or i == skip_layer:
            scale = 1.0 if i == 0 else SKIP_SCALE
            n_hidden_in = weight.shape[2] - 3 - latent_dim  # 0 at the input layer
            w_xyz = weight[:, :, n_hidden_in : n_hidden_in + 3]
            w_latent = weight[:, :, n_hidden_in + 3 :]
            folded_bias = bias + scale * torch.einsum("moc,mc->mo", w_latent, latent)
            out = torch.baddbmm(folded_bias.unsqueeze(1), coords, w_xyz.transpose(1, 2), alpha=scale)
            if n_hidden_in:
                out = torch.baddbmm(out, h, weight[:, :, :n_hidden_in].transpose(1, 2), alpha=scale)
        else:
            out = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        h = F.softplus(out, beta=SOFTPLUS_BETA) if i < last else out
    return h
