"""Frame-aligned audio features: one frozen-Wav2Vec2 vector per motion frame.

Recordings up to `FeatureWindows.direct_max_s` (12 s: a FaceTalk sequence is ~10 s) go through the
encoder in one pass, exactly as FaceFormer does. Longer ones are encoded in windows of the same
size, so peak memory does not grow with the recording's length (the base model's first conv layer
alone holds 512 x n/5 floats, about 0.2 GB per 30 s, and attention grows with the square of the
frame count; bench.scale measures the whole ingest at 10 s and 60 s): the global frame grid is kept, each window encodes `core_s` of frames plus
`context_s` of neighbouring frames on each side, and only the core frames are kept. Results then
differ slightly from a single pass (the CNN's group norm and the attention see one window), mostly
at window seams. Tested on CPU up to 20 minutes, the cleaning limit (28776 frames, 60 windows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models.audio_encoder import (
    CNN_RECEPTIVE_FIELD,
    CNN_STRIDE,
    SAMPLE_RATE,
    AudioEncoder,
    cnn_frame_count,
    normalize_waveform,
)

ProgressCallback = Callable[[int, int], None]  # (windows done, windows total)


@dataclass(frozen=True)
class FeatureWindows:
    direct_max_s: float = 12.0  # encode in one pass up to this duration
    core_s: float = 8.0  # frames each window contributes
    context_s: float = 2.0  # extra frames each side that the window sees but discards (window: 12 s)


@dataclass(frozen=True)
class _Window:
    first: int  # first frame encoded (context included)
    core_start: int  # first frame kept
    core_stop: int  # one past the last frame kept
    stop: int  # one past the last frame encoded


def frame_count(duration_s: float, fps: float) -> int:
    """Motion frames for `duration_s` of audio: nearest integer to duration * fps, halves rounded up,
    at least 1. (11.0 s at 24 fps -> 264; 11.517 s -> 276.) A 1e-9 tolerance rounds values within
    float noise of a half (0.1 * 25 = 2.5000000000000004, or 2.4999999999999996) up as well."""
    if duration_s <= 0 or fps <= 0:
        raise ValueError(f"duration_s and fps must be positive, got {duration_s} and {fps}")
    return max(1, math.floor(duration_s * fps + 0.5 + 1e-9))


def extract_aligned_features(
    encoder: AudioEncoder,
    samples_16k: np.ndarray,
    n_frames: int,
    device: str | torch.device | None = None,
    windows: FeatureWindows = FeatureWindows(),
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """[n] float 16 kHz mono samples -> [n_frames, hidden] float32 features aligned to motion frames.

    `device` moves the encoder there (default: wherever it already is). `progress` is called after
    each window with (done, total); a single-pass recording counts as one window.
    """
    samples = np.asarray(samples_16k)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples of shape [n], got {samples.shape}")
    if samples.size < CNN_RECEPTIVE_FIELD:
        raise ValueError(
            f"audio has {samples.size} samples; at least {CNN_RECEPTIVE_FIELD} (25 ms at 16 kHz) are needed"
        )
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    if device is not None:
        encoder.to(device)

    with torch.inference_mode():
        waveform = normalize_waveform(torch.from_numpy(samples.astype(np.float32, copy=False))[None].to(encoder.device))
        if samples.size <= windows.direct_max_s * SAMPLE_RATE:
            features = encoder.encode(waveform, n_frames, normalize=False)[0]
            if progress is not None:
                progress(1, 1)
        else:
            features = _encode_windowed(encoder, waveform, n_frames, windows, progress)
        return features.float().cpu().numpy()


def _encode_windowed(
    encoder: AudioEncoder,
    waveform: torch.Tensor,
    n_frames: int,
    windows: FeatureWindows,
    progress: ProgressCallback | None,
) -> torch.Tensor:
    """waveform [1, n] already normalized -> [n_frames, hidden]."""
    n_cnn = cnn_frame_count(waveform.shape[1])
    # Global grid: motion frame i sits at CNN frame i * (L - 1) / (n_frames - 1), as in the single pass.
    scale = (n_cnn - 1) / (n_frames - 1) if n_frames > 1 else 0.0
    positions = torch.arange(n_frames, dtype=torch.float64) * scale
    plan = _plan_windows(n_frames, waveform.shape[1] / SAMPLE_RATE, windows)

    output = torch.empty(n_frames, encoder.hidden_size, device=waveform.device)
    for done, window in enumerate(plan, start=1):
        first_cnn = int(math.floor(positions[window.first]))
        last_cnn = min(n_cnn - 1, int(math.ceil(positions[window.stop - 1])))
        span = waveform[:, first_cnn * CNN_STRIDE : last_cnn * CNN_STRIDE + CNN_RECEPTIVE_FIELD]
        local = (positions[window.first : window.stop] - first_cnn).float()
        encoded = encoder.encode_at(span, local)[0]  # [stop - first, hidden]
        output[window.core_start : window.core_stop] = encoded[
            window.core_start - window.first : window.core_stop - window.first
        ]
        if progress is not None:
            progress(done, len(plan))
    return output


def _plan_windows(n_frames: int, duration_s: float, windows: FeatureWindows) -> list[_Window]:
    fps = n_frames / duration_s
    core = max(1, round(windows.core_s * fps))
    context = max(0, round(windows.context_s * fps))
    plan = []
    for core_start in range(0, n_frames, core):
        core_stop = min(n_frames, core_start + core)
        plan.append(_Window(max(0, core_start - context), core_start, core_stop, min(n_frames, core_stop + context)))
    return plan
