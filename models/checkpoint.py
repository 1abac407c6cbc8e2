"""Load a trained model for sampling from a Lightning checkpoint, with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.config import ExperimentConfig, config_differences, config_from_dict
from models.motion_model import MotionMeta, MotionModel


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or not a FaceTalk motion model."""


class IncompatibleCheckpointError(CheckpointError):
    """A checkpoint whose model does not match the config it is used with."""


# torch.save writes a zip archive (PK..); files from torch < 1.6 are a bare pickle (protocol byte 0x80).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_KNOWN_KINDS = {b"RIFF": "a WAV audio file", b"fLaC": "a FLAC audio file", b"ID3": "an MP3 audio file",
                b"\x93NUMPY": "a NumPy .npy array", b"ply": "a PLY mesh", b"\x89PNG": "a PNG image"}  # fmt: skip


def not_a_checkpoint(path: Path) -> str | None:
    """What `path` is instead of a PyTorch checkpoint (from its first bytes), or None when it may be one."""
    with open(path, "rb") as file:
        head = file.read(8)
    if head.startswith(_TORCH_MAGIC):
        return None
    kind = next((name for magic, name in _KNOWN_KINDS.items() if head.startswith(magic)), None)
    return kind or ("an empty file" if not head else "not a PyTorch file")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {str(path)!r}")
    if kind := not_a_checkpoint(path):
        raise CheckpointError(
            f"{str(path)!r} is not a model checkpoint ({kind}); a FaceTalk checkpoint is the model.ckpt that "
            "training writes under <store>/checkpoints/"
        )
    try:
        # weights_only: a checkpoint is data, never code to run.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a FaceTalk motion-model checkpoint (no config in hyper_parameters)"
        )
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> ExperimentConfig:
    try:
        return config_from_dict(ckpt["hyper_parameters"]["config"], source=f"checkpoint {str(path)!r}")
    except ValueError as err:
        raise CheckpointError(str(err)) from err


def check_compatible(ckpt: dict[str, Any], config: ExperimentConfig, path: str | Path) -> None:
    diffs = config_differences(ckpt["hyper_parameters"]["config"], config)
    if diffs:
        raise IncompatibleCheckpointError(
            f"checkpoint {str(path)!r} was trained with a different model config: " + "; ".join(diffs)
        )


def load_motion_model(
    path: str | Path,
    *,
    expected_config: ExperimentConfig | None = None,
    map_location: str | torch.device = "cpu",
    use_ema: bool = True,
) -> MotionModel:
    """The model in `path` ready for `generate()`, on `map_location`, in eval mode.

    With `expected_config`, refuse a checkpoint whose shape-deciding fields differ from it."""
    ckpt = read_checkpoint(path, map_location)
    config = checkpoint_config(ckpt, path)
    if expected_config is not None:
        check_compatible(ckpt, expected_config, path)
    meta = MotionMeta(**(ckpt["hyper_parameters"].get("meta") or {}))
    model = MotionModel(config, meta)
    state = ckpt["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if use_ema:
        ema = {f"denoiser.{k.removeprefix('ema.shadow.')}": v for k, v in state.items() if k.startswith("ema.shadow.")}
        if not ema:
            raise CheckpointError(f"checkpoint {str(path)!r} has no EMA weights (ema.shadow.*)")
        weights.update(ema)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    wrong = [
        f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or wrong:
        raise IncompatibleCheckpointError(
            f"checkpoint {str(path)!r} does not match its own config (corrupted or edited?): "
            f"missing {missing[:5]}, shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(weights, strict=False)
    return model.to(map_location).eval()
