"""The DeepSDF forward shared by NPHM's identity ensemble and its deformation network.

DeepSDF (Park et al., 2019) concatenates [x, latent] at the input and again at a skip layer.
The latent is constant over the points of one call, so its share of those layers is folded
into the bias: the point batch carries 3 input channels instead of 3 + latent_dim, which is
what makes decoding millions of grid points cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SOFTPLUS_BETA = 100.0  # as NPHM: a smooth ReLU that keeps SDF gradients well defined
SKIP_SCALE = 1.0 / math.sqrt(2.0)  # DeepSDF's skip connection: cat([h, input]) / sqrt(2)


@dataclass(frozen=True)
class FoldedLayer:
    """One layer of M MLPs with the latent folded in: out = bias + scale * (h @ w_hidden^T + x @ w_xyz^T).

    Weights are stored transposed ([M, in, out]) so that bmm / addmm read them without a copy.
    w_xyz is None except at the input and skip layers; w_hidden is None at the input layer.
    """

    w_hidden_t: torch.Tensor | None  # [M, n_hidden_in, out]
    w_xyz_t: torch.Tensor | None  # [M, 3, out]
    bias: torch.Tensor  # [M, out], latent share included
    scale: float

    def to(self, dtype: torch.dtype) -> FoldedLayer:
        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(dtype).contiguous()

        return FoldedLayer(cast(self.w_hidden_t), cast(self.w_xyz_t), self.bias.to(dtype).contiguous(), self.scale)

    def member(self, k: int) -> FoldedLayer:
        """Member k alone, as 2-d tensors (weights [in, out], bias [out]) for `folded_forward_one`."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[k].contiguous()

        return FoldedLayer(pick(self.w_hidden_t), pick(self.w_xyz_t), self.bias[k].contiguous(), self.scale)


def fold_latent(
    latent: torch.Tensor, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], skip_layer: int
) -> list[FoldedLayer]:
    """latent [M, C], layers (weight [M, out, in], bias [M, out]) -> the folded layers of `folded_forward`."""
    latent_dim = latent.shape[-1]
    folded = []
    for i, (weight, bias) in enumerate(layers):
        if i == 0 or i == skip_layer:
            scale = 1.0 if i == 0 else SKIP_SCALE
            n_hidden_in = weight.shape[2] - 3 - latent_dim  # 0 at the input layer
            w_latent = weight[:, :, n_hidden_in + 3 :]
            folded_bias = bias + scale * torch.einsum("moc,mc->mo", w_latent, latent)
            w_xyz_t = weight[:, :, n_hidden_in : n_hidden_in + 3].transpose(1, 2)
            w_hidden_t = weight[:, :, :n_hidden_in].transpose(1, 2) if n_hidden_in else None
            folded.append(FoldedLayer(w_hidden_t, w_xyz_t, folded_bias, scale))
        else:
            folded.append(FoldedLayer(weight.transpose(1, 2), None, bias, 1.0))
    return folded


def folded_forward(coords: torch.Tensor, layers: Sequence[FoldedLayer]) -> torch.Tensor:
    """coords [M, N, 3] -> [M, N, out_last]; softplus between layers, none after the last.

    Computes in the dtype of `coords` (cast the layers with FoldedLayer.to); matrix products
    accumulate in fp32 on both CPU and GPU.
    """
    h = coords
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        out = layer.bias.unsqueeze(1)
        if layer.w_xyz_t is not None:
            out = torch.baddbmm(out, coords, layer.w_xyz_t, alpha=layer.scale)
        if layer.w_hidden_t is not None:
            out = torch.baddbmm(out, h, layer.w_hidden_t, alpha=layer.scale)
        h = F.softplus(out, beta=SOFTPLUS_BETA) if i < last else out
    return h


def folded_forward_one(coords: torch.Tensor, layers: Sequence[FoldedLayer]) -> torch.Tensor:
    """One MLP (layers from FoldedLayer.member): coords [N, 3] -> [N, out_last].

    addmm on 2-d tensors: the bias goes into the product's output, where bmm over a broadcast
    bias spends a fifth of the time copying it (measured on the CPU).
    """
    h = coords
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        out = layer.bias
        if layer.w_xyz_t is not None:
            out = torch.addmm(out, coords, layer.w_xyz_t, alpha=layer.scale)
        if layer.w_hidden_t is not None:
            out = torch.addmm(out, h, layer.w_hidden_t, alpha=layer.scale)
        h = F.softplus(out, beta=SOFTPLUS_BETA) if i < last else out
    return h


def folded_deepsdf_forward(
    coords: torch.Tensor,
    latent: torch.Tensor,
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    skip_layer: int,
) -> torch.Tensor:
    """coords [M, N, 3], latent [M, C], layers (weight [M, out, in], bias [M, out]) -> [M, N, out_last].

    M independent MLPs (ensemble members; M = 1 for a single network). Layer 0 and `skip_layer`
    take [h, x, latent] (h empty at layer 0); softplus between layers, none after the last.
    Differentiable (used in training); inference uses fold_latent once per code + folded_forward.
    """
    return folded_forward(coords, fold_latent(latent, layers, skip_layer))
