"""Fast inference of the NPHM field for one identity and expression (what meshing calls).

The per-code work is done once: anchors, the deformation's conditioning and every member's
latent are folded into the biases (models/heads/deepsdf.py). Per batch of points:

- the deformation MLP carries the points to canonical space (one matrix product per layer);
- every ensemble member runs in one batched product per layer (bmm over the stacked weights), or,
  with `skip_below` > 0, each member only on the points where its blending weight exceeds
  `skip_below`. The Gaussian weights fall off as exp(-d^2 / 0.01), so a point sees ~5-10 of the 39
  members; the dropped contributions sum to at most 39 * skip_below * max|member sdf|, which
  bench.meshing measures (SDF difference and mesh deviation);
- `precision`: "fp32"; "tf32" (CUDA matrix products in TF32); "bf16" (weights and activations in
  bfloat16, products accumulated in fp32; the blend and the output stay fp32). "auto" is TF32 on
  CUDA and fp32 on the CPU. bench.meshing reports the SDF error of each against fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from models.heads.deepsdf import FoldedLayer, fold_latent, folded_forward, folded_forward_one

if TYPE_CHECKING:
    from models.heads.nphm import NPHM

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
DEFAULT_SKIP_BELOW = 1e-7  # dropped weight per point <= 39e-7: SDF changes ~1e-7, far below fp32 noise of 1e-6


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"NPHM precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        # bf16 is opt-in: its worst SDF error near the fitted head's surface was 0.0039 (0.8 voxel at
        # 256^3; mean 8e-5), measured by bench.meshing on the CPU's bf16 products.
        return "tf32" if device.type == "cuda" else "fp32"
    return precision


def default_points_per_batch(device: torch.device, skipping: bool) -> int:
    """CPU: batches that stay in cache; CUDA: batches that fill an H200 (39 x N x 200 activations)."""
    if device.type != "cuda":
        return 16_384
    return 1 << 21 if skipping else 1 << 19


class NPHMField:
    """sdf(points) of one NPHM for fixed codes; build with NPHMField(model, identity, expression)."""

    def __init__(
        self,
        model: NPHM,
        identity: torch.Tensor,
        expression: torch.Tensor,
        *,
        precision: str = "auto",
        skip_below: float = DEFAULT_SKIP_BELOW,
        compile: bool = False,
    ):
        if skip_below < 0:
            raise ValueError(f"skip_below must be >= 0, got {skip_below}")
        ident, deform = model.identity, model.deformation
        self.device = ident.anchor_mean.device
        self.precision = resolve_precision(precision, self.device)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.skip_below = skip_below
        self.background_sdf = ident.background_sdf
        self.blend_weights = ident.blend_weights
        identity = identity.to(self.device, torch.float32)
        expression = expression.to(self.device, torch.float32)

        with torch.no_grad():
            self.anchors = ident.anchors(identity)  # [K, 3]
            latent = deform.condition(identity, self.anchors, expression)
            deform_layers = [(layer.weight[None], layer.bias[None]) for layer in deform.mlp.layers]
            deformation = self._cast(fold_latent(latent[None], deform_layers, deform.mlp.skip_layer))
            self.deformation = [layer.member(0) for layer in deformation]
            n = ident.n_anchors  # the background member is the constant background_sdf at inference
            member_layers = [layer.expanded(n) for layer in ident.members.layers]
            latents = ident.member_latents(identity)[:n]
            self.members = self._cast(fold_latent(latents, member_layers, ident.members.skip_layer))
        self.per_member = [[layer.member(k) for layer in self.members] for k in range(n)]
        self.mirror = torch.ones(n, 3, device=self.device)
        self.mirror[1 : 2 * ident.n_symmetric_pairs : 2, 0] = -1.0  # second anchor of a pair: flip x
        # compile: fuses softplus with the products' epilogue (Inductor); shapes vary per member.
        wrap = (lambda f: torch.compile(f, dynamic=True)) if compile else (lambda f: f)
        self.forward_all: Callable = wrap(folded_forward)
        self.forward_one: Callable = wrap(folded_forward_one)
        self.member_pairs = 0  # (point, member) evaluations, for the skip statistics

    def _cast(self, layers: list[FoldedLayer]) -> list[FoldedLayer]:
        return [layer.to(self.dtype) for layer in layers]

    @torch.inference_mode()
    def sdf(self, points: torch.Tensor, points_per_batch: int | None = None) -> torch.Tensor:
        """points [N, 3] (any device) -> sdf [N] float32 on the device of `points`, in batches on the model's."""
        step = points_per_batch or default_points_per_batch(self.device, self.skip_below > 0)
        out = torch.empty(points.shape[0], dtype=torch.float32, device=points.device)
        for start in range(0, points.shape[0], step):
            batch = points[start : start + step].to(self.device, torch.float32)
            out[start : start + batch.shape[0]] = self(batch).to(out.device)
        return out

    @torch.inference_mode()
    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """One batch: points [N, 3] float32 on the model's device -> sdf [N] float32."""
        with self._matmul_precision():
            offsets = self.forward_one(points.to(self.dtype), self.deformation)
            canonical = points + offsets.float()
            weights = self.blend_weights(canonical, self.anchors)  # [N, K + 1] fp32
            if self.skip_below > 0:
                return self._sparse_members(canonical, weights)
            return self._all_members(canonical, weights)

    def _all_members(self, canonical: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        coords = (canonical[None] - self.anchors[:, None]) * self.mirror[:, None]  # [K, N, 3]
        member_sdf = self.forward_all(coords.to(self.dtype), self.members)[..., 0].float()  # [K, N]
        self.member_pairs += member_sdf.numel()
        return torch.einsum("nk,kn->n", weights[:, :-1], member_sdf) + weights[:, -1] * self.background_sdf

    def _sparse_members(self, canonical: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = weights[:, -1] * self.background_sdf
        member_weights = weights[:, :-1].T.contiguous()  # [K, N]: contiguous rows to gather from
        active = member_weights > self.skip_below
        for k, layers in enumerate(self.per_member):
            index = active[k].nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            coords = (canonical.index_select(0, index) - self.anchors[k]) * self.mirror[k]
            member_sdf = self.forward_one(coords.to(self.dtype), layers)[:, 0].float()
            out.index_add_(0, index, member_weights[k].index_select(0, index) * member_sdf)
            self.member_pairs += index.numel()
        return out

    @contextmanager
    def _matmul_precision(self):
        if self.precision != "tf32":
            yield
            return
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")  # TF32 products, fp32 accumulation
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)
