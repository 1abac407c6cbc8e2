"""Inference building blocks shared by `facetalk animate` and evaluation: the device, the head
model, the frozen audio encoder, features for an audio clip, and identity codes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from models.heads.base import HeadModel
from models.motion_model import MotionModel
from ops.audio.features import extract_aligned_features, frame_count

if TYPE_CHECKING:
    from ops.audio.cleaning import CleanedAudio

HEADS = ("analytic", "nphm")


class InferenceError(ValueError):
    """Inputs that cannot be used together (head, weights, identity); the message names the file(s) concerned."""


class EncoderMismatchError(InferenceError):
    """The audio encoder's feature width is not the one the motion model was trained on."""


def resolve_device(device: str) -> torch.device:
    """`"auto"` -> cuda when available, else cpu; "cuda" without a GPU is an error, not a silent fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested, but torch sees no CUDA GPU (torch {torch.__version__})")
    return torch.device(device)


def load_head(head: str, nphm_checkpoint: str | Path | None = None, device: torch.device | str = "cpu") -> HeadModel:
    """The analytic demo head, or NPHM from its checkpoint (required for "nphm")."""
    if head == "analytic":
        from models.heads.analytic import AnalyticHead

        return AnalyticHead()
    if head == "nphm":
        if nphm_checkpoint is None:
            raise InferenceError("head 'nphm' needs nphm_checkpoint (the NPHM weights); none was given")
        from models.heads.nphm import load_nphm

        return load_nphm(nphm_checkpoint, device=device)
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")


def identity_for(head: HeadModel, identity_code: np.ndarray | None) -> np.ndarray:
    if identity_code is None:
        return np.zeros(head.identity_dim, dtype=np.float32)
    identity = np.asarray(identity_code, dtype=np.float32).reshape(-1)
    if identity.shape != (head.identity_dim,):
        raise InferenceError(f"identity_code must have {head.identity_dim} values, got {identity.size}")
    if not np.isfinite(identity).all():
        raise InferenceError("identity_code contains NaN or Inf")
    return identity


def load_encoder_for(model: MotionModel, checkpoint: str | Path, encoder_path: str | Path, device: torch.device):
    """The frozen audio encoder, refused when its width differs from the model's audio_dim."""
    from models.audio_encoder import load_audio_encoder

    encoder = load_audio_encoder(encoder_path, device=device)
    expected = model.config.model.audio_dim
    if encoder.hidden_size != expected:
        raise EncoderMismatchError(
            f"audio encoder {str(encoder_path)!r} outputs {encoder.hidden_size}-d features, but the motion model "
            f"{str(checkpoint)!r} was trained on {expected}-d features (model.audio_dim); "
            "use the encoder the model was trained with"
        )
    return encoder


def audio_features_for(cleaned: CleanedAudio, encoder, fps: float, max_seconds: float | None = None) -> np.ndarray:
    """Cleaned audio (optionally its first `max_seconds`) -> features [T, A], T = round(duration * fps)."""
    samples = cleaned.samples
    if max_seconds is not None:
        samples = samples[: round(max_seconds * cleaned.sample_rate)]
    n_frames = frame_count(len(samples) / cleaned.sample_rate, fps)
    return extract_aligned_features(encoder, samples, n_frames)


def ignored_identity(head: HeadModel, identity: np.ndarray) -> str | None:
    """What of `identity` the head ignores, in words, or None when it reads every dimension set.

    The analytic demo head reads only its first `len(IDENTITY_DIMS)` identity dimensions (head
    width, nose length, ...); a fitted NPHM identity code puts nearly everything elsewhere, and
    the video would silently show the average head.
    """
    from models.heads.analytic import IDENTITY_DIMS, AnalyticHead

    if not isinstance(head, AnalyticHead):
        return None
    identity = np.asarray(identity, dtype=np.float32).reshape(-1)
    used = np.zeros(identity.size, dtype=bool)
    used[list(IDENTITY_DIMS.values())] = True
    ignored = np.flatnonzero(~used & (np.abs(identity) > 1e-6))
    if not len(ignored):
        return None
    kept = ", ".join(IDENTITY_DIMS)
    return (
        f"the analytic demo head ignores {len(ignored)} of the {identity.size} identity values set (it reads only "
        f"dims 0-{len(IDENTITY_DIMS) - 1}: {kept}); use --head nphm with NPHM weights for a fitted identity"
    )
