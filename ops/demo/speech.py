"""Speech-like audio by formant synthesis, with the mouth motion that goes with it (the fallback of
`ops.demo.phonetic_speech` when espeak-ng is missing).

Not intelligible speech, but it has what an audio -> face model must learn from: voiced syllables
(a glottal pulse train through vowel-dependent formant resonators), a falling pitch contour with
per-syllable movement, consonant noise bursts, syllable loudness envelopes and pauses between
phrases. The per-frame mouth targets come from the same syllable plan, so they are exactly what
the audio implies: open vowels open the jaw more, rounded vowels round the lips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

# Vowel -> (F1, F2, F3, F4 in Hz for an average adult voice, jaw openness, lip rounding, lip stretch).
VOWELS = {
    "a": ((730, 1090, 2440, 3400), 1.00, 0.0, 0.1),
    "e": ((530, 1840, 2480, 3500), 0.60, 0.0, 0.6),
    "i": ((300, 2250, 3000, 3700), 0.25, 0.0, 1.0),
    "o": ((570, 840, 2410, 3300), 0.70, 0.7, 0.0),
    "u": ((310, 870, 2240, 3300), 0.30, 1.0, 0.0),
}
_FORMANT_BANDWIDTHS = (80.0, 100.0, 140.0, 200.0)


@dataclass(frozen=True)
class Voice:
    """Speaker traits: base pitch, vocal-tract length (formant scale), speaking rate."""

    base_pitch_hz: float = 120.0
    formant_scale: float = 1.0
    syllables_per_second: float = 4.5
    breathiness: float = 0.03

    @classmethod
    def random(cls, rng: np.random.Generator) -> Voice:
        low_voice = rng.random() < 0.5
        return cls(
            base_pitch_hz=float(rng.uniform(95, 135) if low_voice else rng.uniform(175, 235)),
            formant_scale=float(rng.uniform(0.93, 1.0) if low_voice else rng.uniform(1.05, 1.15)),
            syllables_per_second=float(rng.uniform(3.8, 5.2)),
            breathiness=float(rng.uniform(0.01, 0.05)),
        )


@dataclass(frozen=True)
class Syllable:
    start: float  # seconds: onset of the vowel (consonant burst just before it)
    duration: float  # seconds of the vowel
    vowel: str
    stressed: bool
    loudness: float  # peak amplitude, before the final normalization


@dataclass(frozen=True)
class SpeechClip:
    waveform: np.ndarray  # [n_samples] float32 in [-1, 1]
    sample_rate: int
    mouth_open: np.ndarray  # [T] per motion frame, 0 closed .. ~1 wide open
    lip_round: np.ndarray  # [T] 0 .. 1
    lip_stretch: np.ndarray  # [T] 0 .. 1
    stress: np.ndarray  # [T] 0 .. 1, peaks on stressed syllables
    syllables: tuple[Syllable, ...]  # the formant plan (empty for espeak-ng speech)
    lip_close: np.ndarray | None = None  # [T] 0 .. 1, lips pressed (p/b/m); None: never
    lip_tuck: np.ndarray | None = None  # [T] 0 .. 1, lower lip to the upper teeth (f/v); None: never
    phones: tuple = ()  # espeak-ng phones (ops.demo.espeak.Phone) the tracks were made from
    engine: str = "formant"  # or "espeak-ng"


def plan_syllables(duration: float, voice: Voice, rng: np.random.Generator) -> list[Syllable]:
    """Phrases of 3-8 syllables separated by pauses; the first syllable of a word is stressed."""
    syllables: list[Syllable] = []
    t = float(rng.uniform(0.1, 0.3))
    vowels = list(VOWELS)
    while t < duration - 0.25:
        for index in range(int(rng.integers(3, 9))):
            length = float(rng.uniform(0.6, 1.3) / voice.syllables_per_second)
            if t + length > duration - 0.1:
                break
            stressed = index == 0 or rng.random() < 0.25
            loudness = float(rng.uniform(0.75, 1.0) * (1.0 if stressed else 0.7))
            syllables.append(Syllable(t, length * 0.75, vowels[int(rng.integers(len(vowels)))], stressed, loudness))
            t += length
        t += float(rng.uniform(0.2, 0.55))  # pause between phrases
    return syllables


def _syllable_envelope(n: int, sample_rate: int) -> np.ndarray:
    """Fast rise, sustained, slower decay: a raised-cosine attack and release."""
    attack = max(1, int(0.035 * sample_rate))
    release = max(1, int(0.07 * sample_rate))
    envelope = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n - n // 2)
    envelope[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
    envelope[n - release :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
    return envelope


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """Two-pole resonator (Klatt), unit gain at DC."""
    r = math.exp(-math.pi * bandwidth / sample_rate)
    theta = 2 * math.pi * frequency / sample_rate
    a = [1.0, -2 * r * math.cos(theta), r * r]
    return lfilter([sum(a)], a, signal)


def _glottal_source(f0: np.ndarray, sample_rate: int) -> np.ndarray:
    """Pulse train with a Rosenberg-like shape: open phase rise, sharp closure (derivative)."""
    phase = np.cumsum(f0 / sample_rate) % 1.0
    open_quotient = 0.6
    pulse = np.where(phase < open_quotient, 0.5 - 0.5 * np.cos(np.pi * phase / open_quotient), 0.0)
    return np.diff(pulse, prepend=0.0) * sample_rate / f0.mean()


def synthesize_speech(
    duration: float, fps: float, sample_rate: int, voice: Voice, rng: np.random.Generator
) -> SpeechClip:
    """duration seconds of speech-like audio and its per-frame mouth targets (T = round(duration*fps))."""
    n_samples = round(duration * sample_rate)
    n_frames = round(duration * fps)
    syllables = plan_syllables(duration, voice, rng)
    t = np.arange(n_samples) / sample_rate
    # Pitch: declination over the clip, a rise-fall on each stressed syllable, slight vibrato.
    f0 = voice.base_pitch_hz * (1.08 - 0.16 * t / max(duration, 1e-9)) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    for syllable in syllables:
        if syllable.stressed:
            centre = syllable.start + 0.4 * syllable.duration
            f0 *= 1 + 0.12 * np.exp(-(((t - centre) / (0.5 * syllable.duration)) ** 2))
    source = _glottal_source(f0, sample_rate)
    noise = rng.standard_normal(n_samples)
    highpass = butter(2, min(2500.0, 0.45 * sample_rate) / (sample_rate / 2), btype="high", output="sos")
    hiss = sosfilt(highpass, noise)

    waveform = np.zeros(n_samples)
    for syllable in syllables:
        start = int(syllable.start * sample_rate)
        stop = min(n_samples, start + int(syllable.duration * sample_rate))
        if stop - start < 16:
            continue
        formants, _, _, _ = VOWELS[syllable.vowel]
        voiced = source[start:stop] + voice.breathiness * noise[start:stop]
        vowel = np.zeros(stop - start)
        for k, (frequency, bandwidth) in enumerate(zip(formants, _FORMANT_BANDWIDTHS)):
            frequency = min(frequency * voice.formant_scale, 0.45 * sample_rate)
            vowel += _resonate(voiced, frequency, bandwidth, sample_rate) * (0.5**k)
        waveform[start:stop] += (
            syllable.loudness * vowel / (np.abs(vowel).max() + 1e-9) * _syllable_envelope(stop - start, sample_rate)
        )
        # Consonant: a short noise burst before the vowel (plosive / fricative-like).
        burst = int(float(rng.uniform(0.02, 0.06)) * sample_rate)
        b0 = max(0, start - burst)
        if start - b0 > 8:
            waveform[b0:start] += (
                0.15
                * syllable.loudness
                * hiss[b0:start]
                / (np.abs(hiss[b0:start]).max() + 1e-9)
                * np.hanning(start - b0)
            )
    waveform = (0.8 * waveform / (np.abs(waveform).max() + 1e-9)).astype(np.float32)

    mouth_open, lip_round, lip_stretch, stress = _mouth_targets(syllables, n_frames, fps)
    return SpeechClip(waveform, sample_rate, mouth_open, lip_round, lip_stretch, stress, tuple(syllables))


def _mouth_targets(syllables: list[Syllable], n_frames: int, fps: float):
    """Per-frame targets from the syllable plan, sampled at frame centres' times (frame / fps)."""
    frame_times = np.arange(n_frames) / fps
    mouth_open = np.zeros(n_frames)
    lip_round = np.zeros(n_frames)
    lip_stretch = np.zeros(n_frames)
    stress = np.zeros(n_frames)
    for syllable in syllables:
        _, openness, rounding, spread = VOWELS[syllable.vowel]
        centre = syllable.start + 0.45 * syllable.duration
        width = 0.5 * syllable.duration + 0.03
        bump = np.exp(-0.5 * ((frame_times - centre) / (0.55 * width)) ** 2)
        loud = syllable.loudness
        mouth_open = np.maximum(mouth_open, bump * openness * loud)
        lip_round = np.maximum(lip_round, bump * rounding)
        lip_stretch = np.maximum(lip_stretch, bump * spread)
        if syllable.stressed:
            stress = np.maximum(stress, bump)
    return (a.astype(np.float32) for a in (mouth_open, lip_round, lip_stretch, stress))
