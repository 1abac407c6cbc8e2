"""NPHM head model with backward deformation: sdf(x | z_id, z_exp) = identity_sdf(x + delta(x | z_exp, z_id)).

Giebenhain et al., "Learning Neural Parametric Head Models", CVPR 2023, as FaceTalk uses it to
turn identity (1344-d) and expression (200-d) codes into a signed distance field.
The checkpoint layouts that load_nphm reads are described in docs/nphm_checkpoint.md.
"""

from __future__ import annotations

from dataclasses import asdict
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from models.heads.nphm_checkpoint import NPHMCheckpointError, check_state_dict, read_nphm_checkpoint
from models.heads.nphm_config import NPHMConfig
from models.heads.nphm_deformation import BackwardDeformation
from models.heads.nphm_eval import DEFAULT_SKIP_BELOW, NPHMField
from models.heads.nphm_identity import LocalEnsembleSDF

__all__ = ["CHECKPOINT_FILE", "NPHM", "NPHMCheckpointError", "NPHMConfig", "load_nphm", "save_nphm"]

CHECKPOINT_FILE = "nphm.pt"  # what load_nphm reads when given a folder (bench.fit_nphm_head writes it)


class NPHM(nn.Module):
    """Implements the HeadModel protocol (models/heads/base.py) for one identity at a time."""

    def __init__(self, config: NPHMConfig | None = None):
        super().__init__()
        self.config = config or NPHMConfig()
        c = self.config
        self.identity_dim = c.identity_dim
        self.expression_dim = c.expression_dim
        # Inference defaults of sdf / field (see models/heads/nphm_eval.py); plain attributes.
        self.precision = "auto"
        self.skip_below = DEFAULT_SKIP_BELOW
        self.identity = LocalEnsembleSDF(
            n_anchors=c.n_anchors,
            n_symmetric_pairs=c.n_symmetric_pairs,
            global_dim=c.identity_global_dim,
            local_dim=c.identity_local_dim,
            hidden_dim=c.identity_hidden_dim,
            n_layers=c.identity_layers,
            anchor_mlp_dim=c.anchor_mlp_dim,
            blend_std=c.blend_std,
            background_distance_sq=c.background_distance_sq,
            background_sdf=c.background_sdf,
        )
        self.deformation = BackwardDeformation(
            identity_dim=c.identity_dim,
            n_anchors=c.n_anchors,
            expression_dim=c.expression_dim,
            compressed_identity_dim=c.compressed_identity_dim,
            hidden_dim=c.deformation_hidden_dim,
            n_layers=c.deformation_layers,
        )

    def forward(self, points: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """Differentiable: points [N, 3] posed, identity [I], expression [E] -> sdf [N]."""
        anchors = self.identity.anchors(identity)
        canonical = points + self.deformation(points, identity, anchors, expression)
        return self.identity(canonical, identity, anchors)

    def canonical_points(self, points: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """points [N, 3] posed -> [N, 3] in the canonical (neutral) space of this identity."""
        anchors = self.identity.anchors(identity)
        return points + self.deformation(points, identity, anchors, expression)

    @torch.inference_mode()
    def sdf(
        self,
        points: torch.Tensor,
        identity: torch.Tensor,
        expression: torch.Tensor,
        points_per_batch: int | None = None,
        *,
        precision: str | None = None,
        skip_below: float | None = None,
        compile: bool = False,
    ) -> torch.Tensor:
        """points [N, 3], identity [I], expression [E] -> sdf [N] float32 on the device of `points`.

        Evaluates in batches of points_per_batch (default: by device) on the model's device, so a
        256^3 grid fits in memory; the per-code work is done once. `precision` ("auto", "fp32",
        "tf32", "bf16"), `skip_below` (members whose blending weight is below it are not evaluated;
        0 evaluates all) and `compile` are described in models/heads/nphm_eval.py; None takes the
        model's `precision` / `skip_below` attributes.
        """
        self._check_inputs(points, identity, expression)
        return self.field(identity, expression, precision, skip_below, compile).sdf(points, points_per_batch)

    def field(
        self,
        identity: torch.Tensor,
        expression: torch.Tensor,
        precision: str | None = None,
        skip_below: float | None = None,
        compile: bool = False,
    ) -> NPHMField:
        """The inference field (background member constant, no code noise) for fixed codes.

        Meshing calls this once per mesh and then `field.sdf(points)` per batch of grid points.
        """
        self._check_codes(identity, expression)
        was_training = self.training
        self.eval()
        try:
            return NPHMField(
                self,
                identity,
                expression,
                precision=self.precision if precision is None else precision,
                skip_below=self.skip_below if skip_below is None else skip_below,
                compile=compile,
            )
        finally:
            self.train(was_training)

    @property
    def device(self) -> torch.device:
        """Where the weights are; meshing builds its grid there."""
        return self._device()

    def _device(self) -> torch.device:
        return self.identity.anchor_mean.device

    def _check_inputs(self, points: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor) -> None:
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"NPHM.sdf: points must have shape [N, 3], got {list(points.shape)}")
        self._check_codes(identity, expression)

    def _check_codes(self, identity: torch.Tensor, expression: torch.Tensor) -> None:
        if tuple(identity.shape) != (self.identity_dim,):
            raise ValueError(f"NPHM.sdf: identity must have shape [{self.identity_dim}], got {list(identity.shape)}")
        if tuple(expression.shape) != (self.expression_dim,):
            raise ValueError(
                f"NPHM.sdf: expression must have shape [{self.expression_dim}], got {list(expression.shape)}"
            )


def load_nphm(
    checkpoint_path: str | PathLike,
    config: NPHMConfig | None = None,
    device: str | torch.device = "cpu",
    *,
    deformation_path: str | PathLike | None = None,
    anchor_mean_path: str | PathLike | None = None,
) -> NPHM:
    """Load an NPHM in eval mode from one checkpoint file, or from the release's two files.

    One file: `model.state_dict()`, the same under "state_dict"/"model", save_nphm's layout, or
    {"identity": ..., "deformation": ...}. Two files (the NPHM release): checkpoint_path is the
    identity checkpoint, deformation_path the expression checkpoint, anchor_mean_path the
    release's assets/anchors_39.npy. Without `config`, the sizes are read from the checkpoint.
    A folder stands for its CHECKPOINT_FILE (the layout bench.fit_nphm_head writes).
    Loading uses torch.load(weights_only=True): no code in a checkpoint is ever run.
    """
    if Path(checkpoint_path).is_dir():
        checkpoint_path = Path(checkpoint_path) / CHECKPOINT_FILE
        if not checkpoint_path.is_file():
            raise NPHMCheckpointError(
                f"NPHM checkpoint {checkpoint_path.parent} is a directory without {CHECKPOINT_FILE} in it"
            )
    checkpoint = read_nphm_checkpoint(checkpoint_path, deformation_path, anchor_mean_path)
    if config is None:
        config = checkpoint.config
    model = NPHM(config)
    check_state_dict(checkpoint, model.state_dict(), config)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    return model.to(device).eval()


def save_nphm(model: NPHM, path: str | PathLike) -> None:
    """Write the one-file layout that load_nphm reads: both parts plus the config."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "nphm_config": asdict(model.config),
            "identity": {k.removeprefix("identity."): v for k, v in state.items() if k.startswith("identity.")},
            "deformation": {
                k.removeprefix("deformation."): v for k, v in state.items() if k.startswith("deformation.")
            },
        },
        path,
    )
