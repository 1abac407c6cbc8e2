"""Frozen Wav2Vec2 audio encoder with FaceFormer's frame alignment, loaded from local files only.

FaceFormer (and FaceTalk after it) does not use Wav2Vec2's own 50 Hz output: it runs the CNN
feature encoder (one frame per 320 samples at 16 kHz, 400-sample receptive field), linearly
interpolates those features along time to the motion frame count, and only then applies the
feature projection and the transformer encoder, so every output vector belongs to one motion frame.

Accepted weights (`load_audio_encoder`), never fetched from a hub:
- a directory written by `save_pretrained` of a `Wav2Vec2Model`, or of a model that wraps one
  under `wav2vec2.` (e.g. `Wav2Vec2ForCTC` as in facebook/wav2vec2-base-960h; its CTC head is
  ignored): `config.json` with model_type "wav2vec2" + model.safetensors / pytorch_model.bin;
- a checkpoint file (.pt/.pth/.bin/.ckpt, loaded with torch.load(weights_only=True), or
  .safetensors) holding a state dict whose Wav2Vec2 weights are bare or under `audio_encoder.`
  (FaceFormer's and CodeTalker's released vocaset/BIWI checkpoints) or `wav2vec2.`; the architecture
  comes from a `config.json` beside the file, else Wav2Vec2Config() defaults, which are the
  wav2vec2-base-960h architecture both of those models use.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

CNN_RATE_HZ = 50  # Wav2Vec2 CNN output frames per second at 16 kHz
CNN_STRIDE = 320  # samples per CNN frame (product of the conv strides)
CNN_RECEPTIVE_FIELD = 400  # samples seen by one CNN frame
SAMPLE_RATE = 16_000
RANDOM_INIT_MARKER = "facetalk_random_init"  # config attribute set by create_random_encoder
DEMO_TRAINED_MARKER = "facetalk_demo_trained"  # config attribute: trained on the demo's synthetic speech only

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_STATE_DICT_PREFIXES = ("audio_encoder.", "wav2vec2.", "")  # FaceFormer/CodeTalker, HF task heads, bare


class AudioEncoderLoadError(ValueError):
    """The path does not hold loadable Wav2Vec2 weights; the message names it and says why."""


def normalize_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per row, as Wav2Vec2FeatureExtractor(do_normalize=True) does for the
    base-960h checkpoint: (x - mean) / sqrt(var + 1e-7), population variance. [B, n] -> [B, n]."""
    mean = waveform.mean(dim=-1, keepdim=True)
    variance = waveform.var(dim=-1, keepdim=True, unbiased=False)
    return (waveform - mean) / torch.sqrt(variance + 1e-7)


def cnn_frame_count(n_samples: int) -> int:
    """Number of 50 Hz CNN frames for `n_samples` at 16 kHz (valid convolutions, no padding)."""
    return 0 if n_samples < CNN_RECEPTIVE_FIELD else (n_samples - CNN_RECEPTIVE_FIELD) // CNN_STRIDE + 1


def interpolate_to_frames(features: torch.Tensor, n_frames: int) -> torch.Tensor:
    """FaceFormer's `linear_interpolation`: [B, L, C] at 50 Hz -> [B, n_frames, C], end points aligned."""
    return F.interpolate(features.transpose(1, 2), size=n_frames, mode="linear", align_corners=True).transpose(1, 2)


def interpolate_at(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of [B, L, C] at fractional frame positions [n] -> [B, n, C].

    With positions = arange(n) * (L - 1) / (n - 1) this equals `interpolate_to_frames`; windowed
    encoding uses it to evaluate the global frame grid inside one window.
    """
    positions = positions.to(features.device, torch.float32).clamp(0, features.shape[1] - 1)
    left = positions.floor().long().clamp(max=features.shape[1] - 1)
    right = (left + 1).clamp(max=features.shape[1] - 1)
    weight = (positions - left.to(positions.dtype))[None, :, None].to(features.dtype)
    return features[:, left] * (1 - weight) + features[:, right] * weight


class AudioEncoder(nn.Module):
    """A frozen Wav2Vec2Model plus where it came from."""

    def __init__(self, model: nn.Module, source: str) -> None:
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.eval()
        self.source = source
        self.random_init = bool(getattr(model.config, RANDOM_INIT_MARKER, False))
        # Phonetic features learned from espeak-ng voices only (ops.demo.encoder_training): real speech needs real weights.
        self.demo_trained = bool(getattr(model.config, DEMO_TRAINED_MARKER, None))
        self.hidden_size = int(model.config.hidden_size)

    def train(self, mode: bool = True) -> AudioEncoder:
        # Frozen: dropout and SpecAugment masking stay off even inside a module put in training mode.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        """Flat facts for run metadata."""
        config = self.model.config
        return {
            "encoder_source": self.source,
            "encoder_random_weights": self.random_init,
            "encoder_demo_trained": self.demo_trained,
            "encoder_hidden_size": self.hidden_size,
            "encoder_layers": int(config.num_hidden_layers),
            "encoder_parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def cnn_features(self, waveform: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """[B, n] 16 kHz -> [B, L, conv_dim[-1]] CNN features at 50 Hz."""
        if waveform.ndim != 2:
            raise ValueError(f"expected a waveform batch [B, n], got shape {tuple(waveform.shape)}")
        if waveform.shape[1] < CNN_RECEPTIVE_FIELD:
            raise ValueError(
                f"waveform has {waveform.shape[1]} samples; the encoder needs at least "
                f"{CNN_RECEPTIVE_FIELD} (25 ms at 16 kHz)"
            )
        waveform = waveform.to(self.device, torch.float32)
        if normalize:
            waveform = normalize_waveform(waveform)
        return self.model.feature_extractor(waveform).transpose(1, 2)

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """Feature projection + transformer encoder: [B, T, conv_dim[-1]] -> [B, T, hidden]."""
        hidden, _ = self.model.feature_projection(features)
        return self.model.encoder(hidden).last_hidden_state

    def encode(self, waveform_16k: torch.Tensor, n_frames: int, normalize: bool = True) -> torch.Tensor:
        """[B, n] 16 kHz waveform -> [B, n_frames, hidden], one vector per motion frame (FaceFormer)."""
        if n_frames < 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        features = self.cnn_features(waveform_16k, normalize)  # [B, L, C] at 50 Hz
        return self.transform(interpolate_to_frames(features, n_frames))

    def encode_at(self, waveform_16k: torch.Tensor, positions: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Like `encode`, but sampling the CNN features at explicit fractional 50 Hz frame positions
        (relative to the waveform's first sample) instead of a grid spanning the whole waveform.
        [B, n] -> [B, len(positions), hidden]. Normalization defaults off: windows of one recording
        should share the recording's statistics, applied once by the caller."""
        features = self.cnn_features(waveform_16k, normalize)
        return self.transform(interpolate_at(features, positions))


# ------------------------------------------------------------------------------------------ loading


def load_audio_encoder(path: str | Path, device: str | torch.device = "cpu") -> AudioEncoder:
    """Load frozen Wav2Vec2 weights from a local directory or checkpoint file (see module docstring)."""
    raw = str(path)
    path = Path(path).expanduser()
    if not path.exists():
        hint = (
            " (it looks like a hub model id; download it once and pass the local directory)"
            if _looks_like_hub_id(raw)
            else ""
        )
        raise AudioEncoderLoadError(f"{raw}: audio encoder weights not found{hint}; nothing is fetched from a hub")
    model = _load_from_directory(path) if path.is_dir() else _load_from_checkpoint_file(path)
    return AudioEncoder(model, source=str(path)).to(device)


def _looks_like_hub_id(raw: str) -> bool:
    parts = raw.split("/")
    return len(parts) == 2 and all(parts) and not raw.startswith((".", "~"))


def _read_wav2vec2_config(config_path: Path, what: Path):
    from transformers import Wav2Vec2Config

    try:
        config_dict = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise AudioEncoderLoadError(f"{what}: unreadable {config_path.name}: {error}") from error
    model_type = config_dict.get("model_type") if isinstance(config_dict, dict) else None
    if model_type != "wav2vec2":
        raise AudioEncoderLoadError(
            f"{what}: {config_path.name} describes model_type {model_type!r}, not a Wav2Vec2 model ('wav2vec2')"
        )
    return Wav2Vec2Config.from_dict(config_dict)


def _load_from_directory(directory: Path) -> nn.Module:
    from transformers import Wav2Vec2Model

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise AudioEncoderLoadError(f"{directory}: not a saved model directory: no config.json")
    config = _read_wav2vec2_config(config_path, directory)
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        raise AudioEncoderLoadError(f"{directory}: no weights file (expected one of {', '.join(_WEIGHT_FILES)})")
    with _quiet_transformers():
        model, info = Wav2Vec2Model.from_pretrained(
            directory, config=config, local_files_only=True, output_loading_info=True
        )
    _refuse_missing_weights(directory, info["missing_keys"])
    return model


def _load_from_checkpoint_file(checkpoint: Path) -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if checkpoint.suffix not in _CHECKPOINT_SUFFIXES:
        raise AudioEncoderLoadError(
            f"{checkpoint}: expected a model directory or a checkpoint file ({', '.join(_CHECKPOINT_SUFFIXES)})"
        )
    sidecar = checkpoint.parent / "config.json"
    config = _read_wav2vec2_config(sidecar, checkpoint) if sidecar.is_file() else Wav2Vec2Config()
    state = _read_state_dict(checkpoint)

    # Find the prefix before building the model: a random base-size init costs seconds.
    anchor = "feature_extractor.conv_layers.0.conv.weight"
    prefix = next((p for p in _STATE_DICT_PREFIXES if f"{p}{anchor}" in state), None)
    if prefix is None:
        raise AudioEncoderLoadError(
            f"{checkpoint}: no Wav2Vec2 weights in this checkpoint (looked for keys like "
            f"'audio_encoder.{anchor}', 'wav2vec2.{anchor}', '{anchor}')"
        )
    candidate = {_modern_weight_norm_name(k[len(prefix) :]): v for k, v in state.items() if k.startswith(prefix)}
    model = Wav2Vec2Model(config)
    expected = set(model.state_dict())
    try:
        result = model.load_state_dict({k: v for k, v in candidate.items() if k in expected}, strict=False)
    except RuntimeError as error:  # shape mismatch: the config does not describe these weights
        raise AudioEncoderLoadError(f"{checkpoint}: weights do not fit the Wav2Vec2 config: {error}") from error
    _refuse_missing_weights(checkpoint, result.missing_keys)
    return model


def _read_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    try:
        if checkpoint.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(checkpoint))
        else:
            # weights_only: a checkpoint is a pickle, and these come from the internet
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise AudioEncoderLoadError(f"{checkpoint}: unreadable checkpoint: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # Lightning checkpoints
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AudioEncoderLoadError(f"{checkpoint}: expected a state dict, found {type(state).__name__}")
    return state


def _modern_weight_norm_name(key: str) -> str:
    """Checkpoints from torch < 2.1 (FaceFormer's) store the positional conv's weight norm as
    weight_g / weight_v; current transformers builds it with torch parametrizations."""
    if key.endswith(".weight_g"):
        return key[: -len("weight_g")] + "parametrizations.weight.original0"
    if key.endswith(".weight_v"):
        return key[: -len("weight_v")] + "parametrizations.weight.original1"
    return key


def _refuse_missing_weights(where: Path, missing_keys) -> None:
    # masked_spec_embed is only used for SpecAugment in training; some checkpoints omit it.
    missing = sorted(k for k in missing_keys if k != "masked_spec_embed")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise AudioEncoderLoadError(f"{where}: weights missing for {len(missing)} encoder parameters: {shown}")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load report for one call, restoring the settings."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------- random demo weights


def create_random_encoder(
    path: str | Path,
    hidden_size: int = 768,
    num_layers: int = 2,
    num_heads: int = 12,
    intermediate_size: int = 512,
    conv_channels: int = 64,
    seed: int = 0,
) -> Path:
    """Save a small, seeded, randomly initialised Wav2Vec2Model to `path` for the demo and tests.

    Keeps the real conv kernel/stride stack (so 50 Hz frames and the 400-sample receptive field
    match a real encoder) but with `conv_channels` channels, a 16-tap positional conv, and few
    layers: ~28 MB with the defaults. The config carries `facetalk_random_init = True`, which
    `AudioEncoder.random_init` reports, so outputs can say their features are meaningless.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        conv_dim=(conv_channels,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        mask_time_prob=0.0,
        vocab_size=32,
    )
    setattr(config, RANDOM_INIT_MARKER, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Vec2Model(config)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(path)
    return path
