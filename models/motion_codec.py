"""How motion is presented to the denoiser, and back.

NPHM: expression codes [.., 200] are the motion itself.
FLAME: per-frame vertex offsets against the sequence's template [.., V, 3] are projected on a PCA
basis of K components fitted on the training split. The basis is *uncentred* (SVD of the raw
offsets), so the zero code is still the neutral template and the scale augmentation (r * code)
still means "the same motion, more or less pronounced". Rows of the basis are orthonormal.

Both are then normalised per dimension with the train-split mean/std. Everything is a buffer, so
it travels inside the checkpoint with the weights it belongs to.
"""

from __future__ import annotations

import torch
from torch import nn

STD_FLOOR = 1e-4  # dimensions that barely move in the train split are not blown up


class MotionCodec(nn.Module):
    def __init__(self, motion_dim: int, n_vertices: int | None = None, normalize: bool = True):
        super().__init__()
        self.normalize_enabled = normalize
        self.n_vertices = n_vertices
        self.register_buffer("mean", torch.zeros(motion_dim))
        self.register_buffer("std", torch.ones(motion_dim))
        self.register_buffer("basis", torch.zeros(motion_dim, 3 * n_vertices) if n_vertices else None)

    @property
    def uses_pca(self) -> bool:
        return self.basis is not None

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(STD_FLOOR))

    def set_basis(self, basis: torch.Tensor) -> None:
        self.basis.copy_(torch.as_tensor(basis, dtype=torch.float32))

    def project(self, offsets: torch.Tensor) -> torch.Tensor:
        """FLAME offsets [..., V, 3] -> PCA codes [..., K]."""
        return offsets.flatten(-2) @ self.basis.T

    def unproject(self, codes: torch.Tensor) -> torch.Tensor:
        """PCA codes [..., K] -> offsets [..., V, 3]."""
        return (codes @ self.basis).unflatten(-1, (-1, 3))

    def normalize(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.mean) / self.std if self.normalize_enabled else codes

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean if self.normalize_enabled else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Denoiser space [B, T, D] -> expression codes [B, T, 200] or offsets [B, T, V, 3]."""
        codes = self.denormalize(z)
        return self.unproject(codes) if self.uses_pca else codes


def fit_pca_basis(frames: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """frames [N, V*3] -> (basis [K, V*3] orthonormal rows, explained energy fraction [K])."""
    n, dim = frames.shape
    if k > min(n, dim):
        raise ValueError(f"cannot fit {k} PCA components from {n} frames of {dim} values; need at least {k} frames")
    if min(n, dim) <= 4 * k:
        _, s, vh = torch.linalg.svd(frames.double(), full_matrices=False)
        basis, s = vh[:k], s[:k]
    else:
        # Randomised SVD in float32: a 10k x 15k frame matrix stays ~0.6 GB and takes seconds.
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # svd_lowrank draws a random projection
            _, s, v = torch.svd_lowrank(frames.float(), q=min(k + 16, n, dim), niter=4)
        basis, s = v[:, :k].T, s[:k].double()
    energy = (s**2) / frames.double().pow(2).sum()
    return basis.float(), energy.float()
