"""Experiment configuration: small dataclasses, loadable from (and writable to) YAML.

A config file has up to four sections, each optional (defaults below):

    model:     ModelConfig      the denoiser's shape
    diffusion: DiffusionConfig  noise schedule, losses, augmentation, guidance
    data:      DataConfig       which motion the model learns (NPHM codes or FLAME offsets)
    train:     TrainConfig      optimisation and Lightning settings
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ModelConfig:
    motion_dim: int = 200  # NPHM expression code size; PCA components for the FLAME variant
    audio_dim: int = 768  # Wav2Vec2-base hidden size
    width: int = 256
    layers: int = 4
    heads: int = 4
    ff: int = 1024
    dropout: float = 0.1
    positional: str = "ppe"  # "ppe" (periodic, FaceFormer) or "sinusoidal"
    period: int = 24  # PPE period in frames (24 = 1 s at 24 fps)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"model.width ({self.width}) must be divisible by model.heads ({self.heads})")
        if self.positional not in ("ppe", "sinusoidal"):
            raise ValueError(f"model.positional must be 'ppe' or 'sinusoidal', got {self.positional!r}")
        if self.width % 2:
            raise ValueError(f"model.width must be even for the positional encoding, got {self.width}")


@dataclass(frozen=True)
class DiffusionConfig:
    steps: int = 1000
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal 2021) or "linear" (Ho et al. 2020)
    cond_drop_prob: float = 0.25  # per-sample probability of training on the null audio condition
    scale_augment: tuple[float, float] = (1.0, 1.0)  # expression codes scaled by r ~ U(a, b); (1, 1) = off
    velocity_loss_weight: float = 0.0  # weight of MSE between frame-to-frame differences of x0
    guidance: float = 1.0  # default classifier-free guidance weight w at sampling time
    normalize: bool = True  # per-dimension mean/std normalisation, stats from the train split

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_augment", tuple(float(v) for v in self.scale_augment))
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"diffusion.schedule must be 'cosine' or 'linear', got {self.schedule!r}")
        if self.steps < 2:
            raise ValueError(f"diffusion.steps must be at least 2, got {self.steps}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError(f"diffusion.cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        low, high = self.scale_augment
        if len(self.scale_augment) != 2 or not 0 < low <= high:
            raise ValueError(f"diffusion.scale_augment must be [a, b] with 0 < a <= b, got {list(self.scale_augment)}")


@dataclass(frozen=True)
class DataConfig:
    variant: str = "nphm"  # "nphm": learn `expression`; "flame": learn PCA of `flame_offsets`
    pca_components: int = 128  # FLAME only: K; must equal model.motion_dim
    pca_fit_frames: int = 10000  # FLAME only: frames sampled from the train split to fit the basis
    preload_max_mb: float = 1024.0  # train/val arrays smaller than this are read into RAM once

    def __post_init__(self) -> None:
        if self.variant not in ("nphm", "flame"):
            raise ValueError(f"data.variant must be 'nphm' or 'flame', got {self.variant!r}")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    max_steps: int = 100_000
    val_every: int = 1000  # steps between validation passes (and best-checkpoint updates)
    val_batches: int = 50  # cap on validation batches per pass
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    precision: str = "auto"  # "auto": bf16-mixed on a GPU with bf16, 32-true elsewhere
    accelerator: str = "auto"
    num_workers: int = 4
    log_every: int = 50
    cpu_threads: int = 0  # torch intra-op threads when training on CPU; 0 = torch's default
    # Frame arrays go onto the training device once when they take at most this share of its memory
    # (GPU memory on CUDA, host RAM on CPU); 0 always streams through a DataLoader.
    device_data_fraction: float = 0.25
    compile: bool = False  # torch.compile the denoiser (CUDA only; ignored with a log line on CPU)
    # Processes (GPUs, or CPU processes with accelerator cpu) and Lightning strategy: "auto" for one,
    # "ddp" for several. Each process draws batch_size segments per step: the effective batch is
    # batch_size * devices (scale lr with it; see the README's multi-GPU section).
    devices: int = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_steps < 1 or self.val_every < 1:
            raise ValueError("train.batch_size, train.max_steps and train.val_every must be positive")
        if not 0.0 <= self.device_data_fraction <= 1.0:
            raise ValueError(f"train.device_data_fraction must be in [0, 1], got {self.device_data_fraction}")
        if self.devices < 1:
            raise ValueError(f"train.devices must be at least 1, got {self.devices}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.variant == "flame" and self.data.pca_components != self.model.motion_dim:
            raise ValueError(
                f"FLAME variant: data.pca_components ({self.data.pca_components}) must equal "
                f"model.motion_dim ({self.model.motion_dim})"
            )

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["diffusion"]["scale_augment"] = list(raw["diffusion"]["scale_augment"])
        return raw

    def replace(self, **sections: Any) -> ExperimentConfig:
        """Copy with some fields changed: `cfg.replace(train={"max_steps": 10})`."""
        raw = self.to_dict()
        for name, updates in sections.items():
            if name not in raw:
                raise ValueError(f"unknown config section {name!r}")
            raw[name].update(updates)
        return config_from_dict(raw)


_SECTIONS = {"model": ModelConfig, "diffusion": DiffusionConfig, "data": DataConfig, "train": TrainConfig}

# Fields that decide parameter/buffer shapes or the meaning of the learned function: a checkpoint
# trained under one value cannot be loaded or resumed under another.
COMPATIBILITY_FIELDS = (
    "model.motion_dim",
    "model.audio_dim",
    "model.width",
    "model.layers",
    "model.heads",
    "model.ff",
    "model.positional",
    "model.period",
    "diffusion.steps",
    "diffusion.schedule",
    "diffusion.normalize",
    "data.variant",
    "data.pca_components",
)


def config_from_dict(raw: dict[str, Any] | None, source: str = "config") -> ExperimentConfig:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise TypeError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; expected some of {sorted(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise TypeError(f"{source}: section {name!r} must be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - known
        if bad:
            raise ValueError(f"{source}: unknown field(s) {sorted(bad)} in section {name!r}; known: {sorted(known)}")
        try:
            sections[name] = cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err
    try:
        return ExperimentConfig(**sections)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    return config_from_dict(raw, source=str(path))


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def as_config(config_or_path: ExperimentConfig | str | Path) -> ExperimentConfig:
    return config_or_path if isinstance(config_or_path, ExperimentConfig) else load_config(config_or_path)


def config_differences(saved: dict[str, Any], current: ExperimentConfig) -> list[str]:
    """Compatibility fields that differ, as 'section.field: saved -> current' lines."""
    now = current.to_dict()
    diffs = []
    for dotted in COMPATIBILITY_FIELDS:
        section, name = dotted.split(".")
        default = getattr(_SECTIONS[section](), name)
        old = (saved.get(section) or {}).get(name, default)
        new = now[section][name]
        if old != new:
            diffs.append(f"{dotted}: checkpoint has {old!r}, config has {new!r}")
    return diffs
