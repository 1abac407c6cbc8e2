"""NPHM identity model: an ensemble of local DeepSDF MLPs around facial anchors, blended by distance.

Follows FastEnsembleDeepSDFMirrored of the NPHM release (Giebenhain et al., CVPR 2023):

- z_id = [z_glob (G), z_1, z*_1, ..., z_P, z*_P, z_{2P+1}, ..., z_K, z_bg], each local code L-dim,
  so identity_dim = G + (K + 1) * L (64 + 40 x 32 = 1344). Pairs (z_i, z*_i) belong to
  left/right-symmetric anchors; z_bg belongs to the global "background" member without an anchor.
- Anchors (K x 3) are a mean layout plus offsets predicted from z_glob by a small MLP.
- Member k sees the query point relative to its anchor (x mirrored for the second anchor of each
  symmetric pair, whose MLP weights it shares with the first) and the code [z_glob, z_k].
- Member SDFs are blended with normalized Gaussian weights of the distance to the anchors; the
  background member has a constant logit, and at inference it always answers "outside".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.heads.deepsdf import folded_deepsdf_forward


class EnsembledLinear(nn.Module):
    """Linear layers of all ensemble members at once; symmetric pairs share one weight set.

    Stored weights: [n_members - n_shared_pairs, out, in]; the first n_shared_pairs entries are each
    used by two consecutive members.
    """

    def __init__(self, n_members: int, n_shared_pairs: int, in_features: int, out_features: int):
        super().__init__()
        self.n_shared_pairs = n_shared_pairs
        n_stored = n_members - n_shared_pairs
        self.weight = nn.Parameter(torch.empty(n_stored, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n_stored, out_features))
        # nn.Linear's default init (kaiming_uniform with a=sqrt(5)), per member
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def expanded(self, n_members: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights [M, out, in] and biases [M, out] of the first n_members members."""
        p = self.n_shared_pairs
        weight = torch.cat([self.weight[:p].repeat_interleave(2, dim=0), self.weight[p:]], dim=0)
        bias = torch.cat([self.bias[:p].repeat_interleave(2, dim=0), self.bias[p:]], dim=0)
        return weight[:n_members], bias[:n_members]


class EnsembledDeepSDF(nn.Module):
    """DeepSDF MLP per member (softplus, one skip connection re-injecting the input).

    The latent's share of the input and skip layers is folded into a per-member bias
    (`folded_deepsdf_forward`).
    """

    def __init__(self, n_members: int, n_shared_pairs: int, latent_dim: int, hidden_dim: int, n_layers: int):
        super().__init__()
        self.latent_dim = latent_dim
        input_dim = 3 + latent_dim
        self.skip_layer = n_layers // 2
        dims = [input_dim] + [hidden_dim] * n_layers + [1]
        layers = []
        for i in range(n_layers + 1):
            out_dim = dims[i + 1] - input_dim if i + 1 == self.skip_layer else dims[i + 1]
            layers.append(EnsembledLinear(n_members, n_shared_pairs, dims[i], out_dim))
        self.layers = nn.ModuleList(layers)

    def forward(self, coords: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """coords [M, N, 3] (member-local points), latent [M, C] -> sdf [M, N]."""
        layers = [layer.expanded(coords.shape[0]) for layer in self.layers]  # [M, out, in], [M, out]
        return folded_deepsdf_forward(coords, latent, layers, self.skip_layer).squeeze(-1)


class LocalEnsembleSDF(nn.Module):
    """Identity SDF in canonical space: points [N, 3] + z_id -> sdf [N]."""

    def __init__(
        self,
        n_anchors: int,
        n_symmetric_pairs: int,
        global_dim: int,
        local_dim: int,
        hidden_dim: int,
        n_layers: int,
        anchor_mlp_dim: int,
        blend_std: float,
        background_distance_sq: float,
        background_sdf: float,
    ):
        super().__init__()
        self.n_anchors = n_anchors
        self.n_symmetric_pairs = n_symmetric_pairs
        self.global_dim = global_dim
        self.local_dim = local_dim
        self.identity_dim = global_dim + (n_anchors + 1) * local_dim
        self.blend_variance = blend_std**2
        self.background_distance_sq = background_distance_sq
        self.background_sdf = background_sdf

        self.members = EnsembledDeepSDF(
            n_members=n_anchors + 1,
            n_shared_pairs=n_symmetric_pairs,
            latent_dim=global_dim + local_dim,
            hidden_dim=hidden_dim,
            n_layers=n_layers,
        )
        self.anchor_mlp = nn.Sequential(
            nn.Linear(global_dim, anchor_mlp_dim),
            nn.ReLU(),
            nn.Linear(anchor_mlp_dim, anchor_mlp_dim),
            nn.ReLU(),
            nn.Linear(anchor_mlp_dim, n_anchors * 3),
        )
        # Mean anchor layout (NPHM's assets/anchors_39.npy); a trained checkpoint supplies it.
        self.register_buffer("anchor_mean", torch.zeros(n_anchors, 3))

    def anchors(self, identity: torch.Tensor) -> torch.Tensor:
        """identity [identity_dim] -> anchor positions [K, 3]."""
        offsets = self.anchor_mlp(identity[: self.global_dim]).view(self.n_anchors, 3)
        return self.anchor_mean + offsets

    def member_latents(self, identity: torch.Tensor) -> torch.Tensor:
        """identity [identity_dim] -> per-member codes [K + 1, global_dim + local_dim]."""
        z_glob = identity[: self.global_dim].expand(self.n_anchors + 1, -1)
        z_local = identity[self.global_dim :].view(self.n_anchors + 1, self.local_dim)
        return torch.cat([z_glob, z_local], dim=-1)

    def forward(
        self, points: torch.Tensor, identity: torch.Tensor, anchors: torch.Tensor | None = None
    ) -> torch.Tensor:
        """points [N, 3] canonical, identity [identity_dim] -> sdf [N]; anchors [K, 3] if precomputed."""
        if anchors is None:
            anchors = self.anchors(identity)
        latents = self.member_latents(identity)
        # At inference the background member is a constant, so its MLP is skipped.
        n_evaluated = self.n_anchors + 1 if self.training else self.n_anchors

        origins = torch.cat([anchors, anchors.new_zeros(1, 3)])[:n_evaluated]  # background: global frame
        coords = points.unsqueeze(0) - origins.unsqueeze(1)  # [M, N, 3]
        mirror = torch.ones(n_evaluated, 1, 3, dtype=points.dtype, device=points.device)
        mirror[1 : 2 * self.n_symmetric_pairs : 2, :, 0] = -1.0  # second anchor of each pair: flip x
        member_sdf = self.members(coords * mirror, latents[:n_evaluated])  # [M, N]
        if not self.training:
            member_sdf = torch.cat([member_sdf, member_sdf.new_full((1, points.shape[0]), self.background_sdf)])

        weights = self.blend_weights(points, anchors)  # [N, K + 1]
        return torch.einsum("nk,kn->n", weights, member_sdf)

    def blend_weights(self, points: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Normalized Gaussian weights of the distance to each anchor, plus the background: [N, K + 1]."""
        distance = (points.unsqueeze(1) - anchors.unsqueeze(0)).norm(dim=-1)  # [N, K]
        neg_sq = -((distance + 1e-5) ** 2)
        background = neg_sq.new_full((points.shape[0], 1), -self.background_distance_sq)
        weights = (torch.cat([neg_sq, background], dim=1) / self.blend_variance).exp()
        # NPHM's normalization, epsilon included, so released weights give the released field
        return weights / (weights.sum(dim=1, keepdim=True) + 1e-6)
