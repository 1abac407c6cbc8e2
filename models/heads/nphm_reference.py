"""The NPHM release's inference procedure, transcribed literally: the baseline for tests and benchmarks.

As the release's FastEnsembleDeepSDFMirrored / DeformationNetwork evaluate a grid: fp32, chunks
of 25,000 points, [x, latent] concatenated per point at the input and skip layers, every member
evaluated (one MLP at a time), then the Gaussian blend. Slow on purpose; NPHM.sdf must agree with
it (tests/test_nphm.py) and bench.meshing measures against it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.heads.nphm import NPHM

RELEASE_CHUNK = 25_000  # points per chunk in the release's mesh extraction


def literal_deepsdf(layers, inp: torch.Tensor, skip_layer: int) -> torch.Tensor:
    """DeepSDF as in the release: concatenate [x, latent] per point; re-inject it at the skip layer."""
    h = inp
    for i, (weight, bias) in enumerate(layers):
        if i == skip_layer:
            h = torch.cat([h, inp], dim=-1) / math.sqrt(2)
        h = h @ weight.T + bias
        if i < len(layers) - 1:
            h = F.softplus(h, beta=100)
    return h


def literal_nphm_sdf(model: NPHM, points: torch.Tensor, z_id: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
    """points [N, 3] posed -> sdf [N]: the inference field, one chunk."""
    c = model.config
    ident, deform = model.identity, model.deformation
    anchors = ident.anchor_mlp(z_id[: c.identity_global_dim]).view(c.n_anchors, 3) + ident.anchor_mean

    # backward deformation, mode "compress": cond = [compressor([z_id, anchors]), z_ex]
    compressed = deform.compressor(torch.cat([z_id, anchors.reshape(-1)]))
    cond = torch.cat([compressed, z_ex]).expand(points.shape[0], -1)
    mlp_layers = [(layer.weight, layer.bias) for layer in deform.mlp.layers]
    canonical = points + literal_deepsdf(mlp_layers, torch.cat([points, cond], -1), c.deformation_layers // 2)

    # local ensemble: member k is its own MLP (symmetric pairs reuse one weight set), member inputs mirrored
    p = c.n_symmetric_pairs
    n_members = c.n_anchors + 1
    stored_index = [k // 2 if k < 2 * p else k - p for k in range(n_members)]
    z_local = z_id[c.identity_global_dim :].view(n_members, c.identity_local_dim)
    member_sdf = []
    for k in range(n_members - 1):  # at inference the background member is the constant background_sdf
        local = canonical - anchors[k]
        if k < 2 * p and k % 2 == 1:
            local = local * torch.tensor([-1.0, 1.0, 1.0], device=points.device)
        latent = torch.cat([z_id[: c.identity_global_dim], z_local[k]]).expand(points.shape[0], -1)
        layers = [(layer.weight[stored_index[k]], layer.bias[stored_index[k]]) for layer in ident.members.layers]
        member_sdf.append(literal_deepsdf(layers, torch.cat([local, latent], -1), c.identity_layers // 2)[:, 0])
    member_sdf.append(torch.full((points.shape[0],), c.background_sdf, device=points.device))
    member_sdf = torch.stack(member_sdf, dim=1)  # [N, K + 1]

    dist = -(((anchors.unsqueeze(0) - canonical.unsqueeze(1)).norm(dim=2) + 10e-6) ** 2)
    dist = torch.cat([dist, torch.full_like(dist[:, :1], -c.background_distance_sq)], dim=-1)
    weight = (dist / c.blend_std**2).exp()
    weight = weight / (weight.sum(dim=1, keepdim=True) + 1e-6)
    return (weight * member_sdf).sum(dim=1)


@torch.inference_mode()
def release_sdf(model: NPHM, points: torch.Tensor, z_id: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
    """The release's grid evaluation: fp32, RELEASE_CHUNK points at a time."""
    device = model.device
    z_id, z_ex = z_id.to(device, torch.float32), z_ex.to(device, torch.float32)
    chunks = [
        literal_nphm_sdf(model, chunk.to(device, torch.float32), z_id, z_ex).to(points.device)
        for chunk in points.split(RELEASE_CHUNK)
    ]
    return torch.cat(chunks)
