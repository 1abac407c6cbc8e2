"""Sizes of the NPHM head model; the defaults are the released NPHM (nphm.yaml / nphm_def.yaml)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NPHMConfig:
    # identity: local ensemble (scripts/configs/nphm.yaml of the NPHM release)
    n_anchors: int = 39
    n_symmetric_pairs: int = 16  # anchors 0..2P-1 form left/right pairs that share MLP weights
    identity_global_dim: int = 64
    identity_local_dim: int = 32
    identity_hidden_dim: int = 200
    identity_layers: int = 4
    anchor_mlp_dim: int = 256  # the release's pos_mlp_dim default, used by train.py
    # expression: backward deformation (scripts/configs/nphm_def.yaml, mode "compress")
    expression_dim: int = 200
    compressed_identity_dim: int = 32
    deformation_hidden_dim: int = 512
    deformation_layers: int = 6
    # blending (constants of the release's sample_point_feature)
    blend_std: float = 0.1
    background_distance_sq: float = 0.2
    background_sdf: float = 1.0  # at inference the background member always says "outside"

    def __post_init__(self) -> None:
        if self.n_anchors < 1 or not 0 <= 2 * self.n_symmetric_pairs <= self.n_anchors:
            raise ValueError(
                f"NPHMConfig: need n_anchors >= 1 and 2 * n_symmetric_pairs <= n_anchors, "
                f"got n_anchors={self.n_anchors}, n_symmetric_pairs={self.n_symmetric_pairs}"
            )
        if self.identity_layers < 2 or self.deformation_layers < 2:
            raise ValueError(
                f"NPHMConfig: the MLPs need at least 2 hidden layers (skip connection in the middle), "
                f"got identity_layers={self.identity_layers}, deformation_layers={self.deformation_layers}"
            )
        identity_input = 3 + self.identity_global_dim + self.identity_local_dim
        if self.identity_hidden_dim <= identity_input:
            raise ValueError(
                f"NPHMConfig: identity_hidden_dim ({self.identity_hidden_dim}) must exceed the member input "
                f"3 + identity_global_dim + identity_local_dim = {identity_input} (DeepSDF skip layer)"
            )
        deformation_input = 3 + self.compressed_identity_dim + self.expression_dim
        if self.deformation_hidden_dim <= deformation_input:
            raise ValueError(
                f"NPHMConfig: deformation_hidden_dim ({self.deformation_hidden_dim}) must exceed "
                f"3 + compressed_identity_dim + expression_dim = {deformation_input} (DeepSDF skip layer)"
            )

    @property
    def identity_dim(self) -> int:
        """64 global + (39 anchors + 1 background) x 32 local = 1344 for the defaults."""
        return self.identity_global_dim + (self.n_anchors + 1) * self.identity_local_dim
