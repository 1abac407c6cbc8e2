"""The demo's speech: English sentences spoken by espeak-ng, with the mouth motion their phonemes imply.

Each speaker is an espeak-ng voice (accent and variant) with its own rate, pitch and pitch range;
each clip strings randomly chosen sentences together, with a little per-sentence jitter of rate and
pitch, and pauses between them. The phoneme timings espeak reports drive the articulation tracks
(`ops.demo.articulation`), so the motion is exactly as predictable from the audio as the phonetics
make it. Without espeak-ng the formant synthesizer of `ops.demo.speech` stands in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import gcd

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import resample_poly

from ops.demo.articulation import articulation_tracks, stressed_vowels
from ops.demo.espeak import EspeakVoice, Phone, espeak_available, speak_fresh
from ops.demo.speech import SpeechClip, Voice, synthesize_speech

ENGINES = ("auto", "espeak-ng", "formant")

# Short sentences, rich in bilabials, labiodentals and rounded vowels so every viseme shows up often.
SENTENCES = (
    "Please pass me the blue bowl.",
    "Five wives moved over the river.",
    "My mother bought a map of Boston.",
    "We often walk to the old pool.",
    "Bob found a very big apple.",
    "Open the window, it is far too warm.",
    "Few people would move the piano.",
    "The ball bounced off the wooden wall.",
    "Maybe we will visit Paris in May.",
    "A puppy paws at the muddy blanket.",
    "Who wants a cup of warm soup?",
    "Five brave boys fought the wave.",
    "Move the boxes before the phone rings.",
    "Father baked bread for the whole family.",
    "Of all the food, I love plums most.",
    "Mark opened a bottle of lemonade.",
    "The moon was full above the bay.",
    "Paul wore a woolly blue pullover.",
    "Mom made both of us some popcorn.",
    "Violet found a few old photos.",
    "Put the vase by the purple flowers.",
    "Wow, what a wonderful view.",
    "Ben may be home by five.",
    "Fifty boats moved out of the harbour.",
    "A fox jumped over the low fence.",
    "We should move away from the water.",
    "Have you ever seen a blue whale?",
    "Bring me the map, the path is muddy.",
    "Many voices woke the baby.",
    "Both of my brothers play the flute.",
    "Food for the party will arrive at four.",
    "Please bump the volume up a bit.",
)


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an espeak-ng voice, and the formant voice used when espeak-ng is missing."""

    espeak: EspeakVoice
    formant: Voice

    @classmethod
    def random(cls, rng: np.random.Generator) -> Speaker:
        # Voices differ (accent, variant, pitch, rate), but within a moderate range: the demo trains
        # on a handful of speakers, and the test speakers should sound like people it has heard.
        female = rng.random() < 0.5
        accent = ("en-us", "en")[int(rng.integers(2))]
        variant = f"+f{int(rng.integers(1, 3))}" if female else f"+m{int(rng.integers(1, 4))}"
        voice = EspeakVoice(
            name=accent + variant,
            rate_wpm=int(rng.integers(145, 176)),
            pitch=int(rng.integers(55, 71) if female else rng.integers(35, 51)),
            pitch_range=int(rng.integers(40, 71)),
        )
        return cls(voice, Voice.random(rng))


def resolve_engine(engine: str) -> str:
    """The engine to use: "auto" is "espeak-ng" when its library loads, else "formant"."""
    if engine not in ENGINES:
        raise ValueError(f"speech engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "espeak-ng" if espeak_available() else "formant"
    if engine == "espeak-ng" and not espeak_available():
        raise ValueError("speech engine 'espeak-ng': libespeak-ng is not installed (apt-get install espeak-ng)")
    return engine


def demo_speech(
    duration: float, fps: float, sample_rate: int, speaker: Speaker, rng: np.random.Generator, engine: str = "auto"
) -> SpeechClip:
    """duration seconds of speech and its per-frame mouth targets, by `engine` (see ENGINES)."""
    if resolve_engine(engine) == "formant":
        return synthesize_speech(duration, fps, sample_rate, speaker.formant, rng)
    return espeak_speech(duration, fps, sample_rate, speaker.espeak, rng)


def _speech_span(phones: tuple[Phone, ...]) -> tuple[float, float]:
    """From the first to the end of the last non-pause phone (espeak pads sentences with silence)."""
    spoken = [p for p in phones if not p.symbol.startswith("_")]
    if not spoken:
        return 0.0, 0.0
    return spoken[0].start, spoken[-1].end


def espeak_speech(
    duration: float, fps: float, sample_rate: int, voice: EspeakVoice, rng: np.random.Generator
) -> SpeechClip:
    """Sentences by espeak-ng filling `duration` seconds (the last one cut off), resampled to sample_rate."""
    n_samples, n_frames = round(duration * sample_rate), round(duration * fps)
    # The plan first (sentences, their voices, the pauses), then one fresh espeak-ng process speaks
    # it: the samples depend on the plan only. Sentences last >= ~1 s, so this many always suffice.
    n_planned = int(np.ceil(duration)) + 1
    plan = [
        (
            SENTENCES[int(rng.integers(len(SENTENCES)))],
            replace(
                voice,
                rate_wpm=int(np.clip(voice.rate_wpm + rng.integers(-10, 11), 80, 400)),
                pitch=int(np.clip(voice.pitch + rng.integers(-5, 6), 0, 99)),
            ),
        )
        for _ in range(n_planned)
    ]
    pauses = rng.uniform(0.2, 0.5, size=n_planned)
    t = float(rng.uniform(0.1, 0.35))
    buffer: np.ndarray | None = None
    native_rate = 0
    phones: list[Phone] = []
    for utterance, pause in zip(speak_fresh(plan if duration > 0.5 else []), pauses):
        if t >= duration - 0.4:
            break
        native_rate = utterance.sample_rate
        if buffer is None:
            buffer = np.zeros(int(np.ceil(duration * native_rate)) + 1, np.float32)
        start, stop = _speech_span(utterance.phones)
        lead_in = min(start, 0.03)  # keep the onset of a plosive's burst
        first = round((start - lead_in) * native_rate)
        piece = utterance.waveform[first : round(stop * native_rate) + round(0.03 * native_rate)]
        at = round(t * native_rate)
        take = min(len(piece), len(buffer) - at)
        if take <= 0:
            break
        buffer[at : at + take] += piece[:take]
        shift = t - (start - lead_in)
        for phone in utterance.phones:
            if start <= phone.start < stop and phone.start + shift < duration:
                phones.append(Phone(phone.start + shift, min(phone.end + shift, duration), phone.symbol))
        t += (stop - start + lead_in) + float(pause)
    if buffer is None:  # too short for any sentence: silence
        buffer, native_rate = np.zeros(n_samples, np.float32), sample_rate
    divisor = gcd(sample_rate, native_rate)
    waveform = resample_poly(buffer.astype(np.float64), sample_rate // divisor, native_rate // divisor)
    waveform = np.pad(waveform, (0, max(0, n_samples - len(waveform))))[:n_samples]
    waveform += 10 ** (-55 / 20) * rng.standard_normal(n_samples)  # a quiet room, not digital silence
    if phones:  # peak at 0.8; a clip too short for any sentence stays a quiet room
        waveform = 0.8 * waveform / (np.abs(waveform).max() + 1e-9)
    waveform = waveform.astype(np.float32)

    loudness = _frame_loudness(waveform, sample_rate, n_frames, fps)
    tracks = articulation_tracks(phones, n_frames, fps, lead_s=0.0, loudness=loudness)
    stress = np.zeros(n_frames)
    frame_times = np.arange(n_frames) / fps
    for vowel in stressed_vowels(phones):
        centre = 0.5 * (vowel.start + vowel.end)
        stress = np.maximum(stress, np.exp(-0.5 * ((frame_times - centre) / max(vowel.end - vowel.start, 0.05)) ** 2))
    return SpeechClip(
        waveform=waveform,
        sample_rate=sample_rate,
        mouth_open=tracks["jaw"],
        lip_round=tracks["round"],
        lip_stretch=tracks["spread"],
        stress=stress.astype(np.float32),
        syllables=(),
        lip_close=tracks["close"],
        lip_tuck=tracks["tuck"],
        phones=tuple(phones),
        engine="espeak-ng",
    )


def _frame_loudness(waveform: np.ndarray, sample_rate: int, n_frames: int, fps: float) -> np.ndarray:
    """RMS per motion frame on a dB scale mapped to 0 (30 dB below the loudest frame) .. 1 (it), smoothed
    over ~3 frames (the jaw cannot follow every flicker of the envelope)."""
    hop = sample_rate / fps
    rms = np.array(
        [np.sqrt(np.mean(waveform[round(k * hop) : round((k + 1) * hop)] ** 2) + 1e-12) for k in range(n_frames)]
    )
    db = 20 * np.log10(rms / (rms.max() + 1e-12) + 1e-12)
    return gaussian_filter1d(np.clip(1.0 + db / 30.0, 0.0, 1.0), sigma=1.0)
