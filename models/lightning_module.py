"""Lightning training of the motion diffusion model: x0 loss, CFG audio dropout, scale
augmentation, EMA weights (validated, saved, and used for sampling), warm-up + cosine LR."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch

from models.config import ExperimentConfig, config_from_dict
from models.diffusion import diffusion_loss, scale_augment
from models.ema import EMA
from models.motion_model import MotionMeta, MotionModel

VAL_SEED = 1234  # validation draws the same t and noise every pass, so val_loss curves are comparable


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs fused (one kernel for all parameters instead of a loop): on CUDA."""
    return device.type == "cuda"


class MotionDiffusionModule(L.LightningModule):
    def __init__(self, config: dict[str, Any], meta: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()  # config + meta in the checkpoint: enough to rebuild the model
        self.cfg: ExperimentConfig = config_from_dict(config, source="checkpoint hyper_parameters")
        self.model = MotionModel(self.cfg, MotionMeta(**meta))
        self.ema = EMA(self.model.denoiser, self.cfg.train.ema_decay)

    def set_data_statistics(self, mean: np.ndarray, std: np.ndarray, basis: np.ndarray | None = None) -> None:
        self.model.codec.set_stats(torch.as_tensor(mean), torch.as_tensor(std))
        if basis is not None:
            self.model.codec.set_basis(torch.as_tensor(basis))

    def _prepare_motion(self, motion: torch.Tensor, augment: bool) -> torch.Tensor:
        d = self.cfg.diffusion
        if augment:
            motion = scale_augment(motion, *d.scale_augment)
        return self.model.codec.normalize(motion)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        d = self.cfg.diffusion
        x0 = self._prepare_motion(batch["motion"], augment=True)
        loss = diffusion_loss(
            self.model.denoiser,
            self.model.diffusion,
            x0,
            batch["audio"],
            cond_drop_prob=d.cond_drop_prob,
            velocity_weight=d.velocity_loss_weight,
        )
        b = x0.shape[0]
        self.log("train_loss", loss.total, prog_bar=True, batch_size=b)
        self.log("train_x0_mse", loss.x0_mse, batch_size=b)
        if d.velocity_loss_weight:
            self.log("train_velocity_mse", loss.velocity_mse, batch_size=b)
        return loss.total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update(self.model.denoiser, self.global_step)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0 = self._prepare_motion(batch["motion"], augment=False)
        generator = torch.Generator().manual_seed(VAL_SEED + batch_idx)
        loss = diffusion_loss(
            self.ema.shadow,
            self.model.diffusion,
            x0,
            batch["audio"],
            cond_drop_prob=0.0,
            velocity_weight=self.cfg.diffusion.velocity_loss_weight,
            generator=generator,
        )
        self.log("val_loss", loss.total, prog_bar=True, batch_size=x0.shape[0], sync_dist=True)
        return loss.total

    def configure_optimizers(self) -> dict[str, Any]:
        t = self.cfg.train
        decay, no_decay = [], []
        for _name, param in self.model.denoiser.named_parameters():
            (no_decay if param.ndim < 2 else decay).append(param)  # no decay on biases, norms, null embedding
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr,
            # Not with fp16's GradScaler: a fused step unscales itself, after clipping would have run.
            fused=(fused_adamw(self.device) and self._precision() != "16-mixed") or None,
        )

        def lr_factor(step: int) -> float:
            if step < t.warmup_steps:
                return (step + 1) / t.warmup_steps
            progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10% of lr

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _precision(self) -> str:
        return str(self._trainer.precision) if self._trainer is not None else ""

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        if gradient_clip_val and getattr(optimizer, "_step_supports_amp_scaling", False):
            # Lightning refuses to clip for an optimizer that unscales inside step() (fused AdamW) under
            # mixed precision, for fear of clipping scaled gradients. bf16 has no GradScaler: they are not.
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def inference_model(self) -> MotionModel:
        """A MotionModel carrying the EMA weights (what sampling should use)."""
        model = MotionModel(self.cfg, self.model.meta)
        model.load_state_dict(self.model.state_dict())
        model.denoiser.load_state_dict(self.ema.shadow.state_dict())
        return model.eval()
