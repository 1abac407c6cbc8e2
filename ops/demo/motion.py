"""Expression-code tracks driven by synthetic speech, and random identity codes.

The mouth follows the syllable plan of `ops.demo.speech`: jaw_open tracks the openness of each
vowel, slightly ahead of the sound (the articulators move before the acoustics, ~40 ms, as in
real speech), lip_round / lip_stretch follow the vowel. Secondary motion that is not predictable
from audio, as in real tracking: blinks, brow raises on stressed syllables, a slow smile drift,
and small smooth noise in all other dims (which the analytic head ignores, like NPHM dims a
model should learn to leave quiet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from models.heads.analytic import EXPRESSION_DIMS, IDENTITY_CODE_SCALE
from models.heads.base import EXPRESSION_DIM, IDENTITY_DIM
from ops.demo.speech import SpeechClip


@dataclass(frozen=True)
class MotionStyle:
    """Per-speaker habits: how wide the mouth opens, how expressive the brows are."""

    jaw_gain: float = 0.9
    brow_gain: float = 0.5
    blinks_per_second: float = 0.3

    @classmethod
    def random(cls, rng: np.random.Generator) -> MotionStyle:
        return cls(float(rng.uniform(0.75, 1.05)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.45)))


def random_identity_code(rng: np.random.Generator) -> np.ndarray:
    """[1344] float32: N(0, 0.1^2) in every dim (the analytic head reads the first few)."""
    return (IDENTITY_CODE_SCALE * rng.standard_normal(IDENTITY_DIM)).astype(np.float32)


def _lead(track: np.ndarray, frames: float) -> np.ndarray:
    """track shifted earlier in time by `frames` (fractional), holding the last value."""
    t = np.arange(len(track), dtype=np.float64)
    return np.interp(t + frames, t, track)


def expression_track(
    clip: SpeechClip, fps: float, style: MotionStyle, rng: np.random.Generator, lead_s: float = 0.04
) -> np.ndarray:
    """Per-frame expression codes [T, 200] float32 for a speech clip (T = len(clip.mouth_open))."""
    n = len(clip.mouth_open)
    codes = np.zeros((n, EXPRESSION_DIM), dtype=np.float64)
    lead = lead_s * fps
    codes[:, EXPRESSION_DIMS["jaw_open"]] = style.jaw_gain * _lead(clip.mouth_open, lead)
    codes[:, EXPRESSION_DIMS["lip_round"]] = 0.9 * _lead(clip.lip_round, lead)
    codes[:, EXPRESSION_DIMS["lip_stretch"]] = 0.7 * _lead(clip.lip_stretch, lead) - 0.2 * _lead(clip.lip_round, lead)
    brow = gaussian_filter1d(clip.stress.astype(np.float64), sigma=0.08 * fps)
    codes[:, EXPRESSION_DIMS["brow_raise"]] = style.brow_gain * brow / max(brow.max(), 1e-6) * 0.8
    codes[:, EXPRESSION_DIMS["blink"]] = _blinks(n, fps, style.blinks_per_second, rng)
    codes[:, EXPRESSION_DIMS["smile"]] = 0.15 + 0.1 * gaussian_filter1d(rng.standard_normal(n), sigma=fps)
    # Small smooth noise everywhere else (and a little on top of the named dims: tracking jitter).
    noise = gaussian_filter1d(rng.standard_normal((n, EXPRESSION_DIM)), sigma=0.15 * fps, axis=0)
    noise /= max(float(noise.std()), 1e-9)
    named = list(EXPRESSION_DIMS.values())
    scale = np.full(EXPRESSION_DIM, 0.02)
    scale[named] = 0.01
    codes += noise * scale
    return codes.astype(np.float32)


def _blinks(n: int, fps: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Blink track: ~150 ms close-open pulses at random times (a Poisson process)."""
    track = np.zeros(n)
    t = float(rng.exponential(1.0 / rate))
    frames = np.arange(n) / fps
    while t < n / fps:
        track = np.maximum(track, np.exp(-0.5 * ((frames - t) / 0.045) ** 2))
        t += 0.3 + float(rng.exponential(1.0 / rate))
    return track
