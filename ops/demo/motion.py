"""Expression-code tracks driven by synthetic speech, and random identity codes.

The mouth follows the clip's articulation (espeak-ng phonemes, or the formant fallback's syllable
plan): jaw_open tracks the openness of each vowel, in step with the sound (real articulators lead
it by ~40 ms, `lead_s`; the demo's causal denoiser sees audio only up to the current frame, so the
demo data keeps the lead at 0), lip_round / lip_stretch follow the vowel,
lip_press closes the lips on p/b/m and lip_tuck brings the lower lip to the teeth on f/v. Secondary motion that is not predictable
from audio, as in real tracking: blinks, brow raises on stressed syllables, a slow smile drift and
a little jitter. The remaining dims (which the analytic head ignores) carry a fixed mix of the
named ones, as NPHM's dense codes spread an expression over every dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from models.heads.analytic import EXPRESSION_DIMS, IDENTITY_CODE_SCALE
from models.heads.base import EXPRESSION_DIM, IDENTITY_DIM
from ops.demo.speech import SpeechClip

# Full closure / tuck is code 0.5 (the head's range): brief, all-or-nothing gestures get a modest
# share of the mouth codes' variance, the jaw (which the whole lower face follows) the largest.
PRESS_TUCK_CODE = 0.5


@dataclass(frozen=True)
class MotionStyle:
    """Per-speaker habits: how wide the mouth opens, how expressive the brows are."""

    jaw_gain: float = 0.9
    brow_gain: float = 0.5
    blinks_per_second: float = 0.3

    @classmethod
    def random(cls, rng: np.random.Generator) -> MotionStyle:
        # Jaw gains vary little: how wide an unseen speaker opens is not in the audio, and the demo
        # should show what the audio does determine.
        return cls(float(rng.uniform(0.9, 1.05)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.2, 0.45)))


def random_identity_code(rng: np.random.Generator) -> np.ndarray:
    """[1344] float32: N(0, 0.1^2) in every dim (the analytic head reads the first few)."""
    return (IDENTITY_CODE_SCALE * rng.standard_normal(IDENTITY_DIM)).astype(np.float32)


def _lead(track: np.ndarray, frames: float) -> np.ndarray:
    """track shifted earlier in time by `frames` (fractional), holding the last value."""
    t = np.arange(len(track), dtype=np.float64)
    return np.interp(t + frames, t, track)


def expression_track(
    clip: SpeechClip, fps: float, style: MotionStyle, rng: np.random.Generator, lead_s: float = 0.0
) -> np.ndarray:
    """Per-frame expression codes [T, 200] float32 for a speech clip (T = len(clip.mouth_open))."""
    n = len(clip.mouth_open)
    codes = np.zeros((n, EXPRESSION_DIM), dtype=np.float64)
    lead = lead_s * fps
    codes[:, EXPRESSION_DIMS["jaw_open"]] = style.jaw_gain * _lead(clip.mouth_open, lead)
    # Lip shape (rounding, spreading) is moderate next to the jaw: vowel quality is what the demo's
    # random audio encoder carries least of, and a demo trained on a few minutes of speech cannot
    # learn it well; the jaw, which follows vowel openness and loudness, carries the motion.
    codes[:, EXPRESSION_DIMS["lip_round"]] = 0.5 * _lead(clip.lip_round, lead)
    codes[:, EXPRESSION_DIMS["lip_stretch"]] = 0.4 * _lead(clip.lip_stretch, lead) - 0.1 * _lead(clip.lip_round, lead)
    if clip.lip_close is not None:
        codes[:, EXPRESSION_DIMS["lip_press"]] = PRESS_TUCK_CODE * _lead(clip.lip_close, lead)
    if clip.lip_tuck is not None:
        codes[:, EXPRESSION_DIMS["lip_tuck"]] = PRESS_TUCK_CODE * _lead(clip.lip_tuck, lead)
    brow = gaussian_filter1d(clip.stress.astype(np.float64), sigma=0.08 * fps)
    codes[:, EXPRESSION_DIMS["brow_raise"]] = style.brow_gain * brow / max(brow.max(), 1e-6) * 0.8
    codes[:, EXPRESSION_DIMS["blink"]] = _blinks(n, fps, style.blinks_per_second, rng)
    # A slight, slowly drifting smile: audio-independent lip motion, kept small so that what the
    # lips do is mostly what the speech makes them do.
    codes[:, EXPRESSION_DIMS["smile"]] = 0.15 + 0.03 * gaussian_filter1d(rng.standard_normal(n), sigma=fps)
    # The other dims move with the face, as NPHM's dense codes do: a fixed linear mix of the named
    # motion (so they are exactly as predictable from the audio as the mouth and brows are), plus a
    # little smooth tracking jitter everywhere.
    named = list(EXPRESSION_DIMS.values())
    others = np.setdiff1d(np.arange(EXPRESSION_DIM), named)
    codes[:, others] = codes[:, named] @ _dense_mix(len(named), len(others))
    noise = gaussian_filter1d(rng.standard_normal((n, EXPRESSION_DIM)), sigma=0.15 * fps, axis=0)
    noise /= max(float(noise.std()), 1e-9)
    codes += noise * 0.004
    return codes.astype(np.float32)


def _dense_mix(n_named: int, n_others: int) -> np.ndarray:
    """[n_named, n_others] fixed weights (the same for every identity and sequence), ~0.05 per dim."""
    return (0.05 / np.sqrt(n_named)) * np.random.default_rng(200).standard_normal((n_named, n_others))


def _blinks(n: int, fps: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Blink track: ~150 ms close-open pulses at random times (a Poisson process)."""
    track = np.zeros(n)
    t = float(rng.exponential(1.0 / rate))
    frames = np.arange(n) / fps
    while t < n / fps:
        track = np.maximum(track, np.exp(-0.5 * ((frames - t) / 0.045) ** 2))
        t += 0.3 + float(rng.exponential(1.0 / rate))
    return track
