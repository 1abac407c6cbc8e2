"""The trained model as used for generation: denoiser + schedule + motion codec, no training state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.config import ExperimentConfig
from models.denoiser import Denoiser
from models.diffusion import GaussianDiffusion
from models.motion_codec import MotionCodec
from models.samplers import sample


class AudioTooShortError(ValueError):
    pass


@dataclass(frozen=True)
class MotionMeta:
    """Facts about the training data that generation needs (from the segment store's attrs)."""

    fps: int
    segment_frames: int = 48
    n_vertices: int | None = None  # FLAME variant only


class MotionModel(nn.Module):
    def __init__(self, config: ExperimentConfig, meta: MotionMeta):
        super().__init__()
        self.config = config
        self.meta = meta
        if config.data.variant == "flame" and not meta.n_vertices:
            raise ValueError("the FLAME variant needs meta.n_vertices (the template's vertex count)")
        self.denoiser = Denoiser(config.model)
        self.diffusion = GaussianDiffusion(config.diffusion)
        n_vertices = meta.n_vertices if config.data.variant == "flame" else None
        self.codec = MotionCodec(config.model.motion_dim, n_vertices, config.diffusion.normalize)

    @torch.inference_mode()
    def generate(
        self,
        audio_features: np.ndarray | torch.Tensor,
        *,
        method: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        guidance: float | None = None,
        seed: int = 0,
        require_full_segment: bool = False,
    ) -> np.ndarray:
        """Audio features [T, A] or [B, T, A] -> motion [(B,) T, 200] (NPHM) or [(B,) T, V, 3] (FLAME offsets).

        `guidance` defaults to the config's; `require_full_segment` refuses audio shorter than one
        training segment (the model has never seen a sequence start that short).
        """
        audio = torch.as_tensor(
            np.asarray(audio_features, dtype=np.float32) if not torch.is_tensor(audio_features) else audio_features
        )
        single = audio.ndim == 2
        if single:
            audio = audio[None]
        if audio.ndim != 3 or audio.shape[-1] != self.config.model.audio_dim:
            raise ValueError(
                f"audio features must be [T, {self.config.model.audio_dim}] or [B, T, {self.config.model.audio_dim}], got {tuple(audio.shape)}"
            )
        frames = audio.shape[1]
        if require_full_segment and frames < self.meta.segment_frames:
            raise AudioTooShortError(
                f"audio covers {frames} frames ({frames / self.meta.fps:.2f} s), shorter than one training segment "
                f"of {self.meta.segment_frames} frames ({self.meta.segment_frames / self.meta.fps:.2f} s)"
            )
        device = next(self.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        w = self.config.diffusion.guidance if guidance is None else guidance
        z = sample(
            self.denoiser,
            self.diffusion,
            audio.float().to(device),
            method=method,
            steps=steps,
            eta=eta,
            guidance=w,
            generator=generator,
        )
        motion = self.codec.decode(z.float()).cpu().numpy()
        return motion[0] if single else motion
