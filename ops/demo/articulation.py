"""Phonemes -> mouth articulation over time, with coarticulation (Cohen & Massaro's dominance model).

Each phoneme has a target per articulatory parameter (jaw opening by vowel openness, lip closure
for p/b/m, lower lip to upper teeth for f/v, rounding for o/u/w, spreading for i/e) and a
dominance: how strongly it imposes that target on its neighbours. A parameter's track is the
dominance-weighted mean of the targets, each dominance a bump around its phoneme that reaches into
what follows, so rounding lingers after a "u" and a schwa takes its jaw from the vowel before it,
while a "p" still closes the lips fully (its closure dominance swamps everything nearby).
`lead_s` > 0 shifts the tracks earlier (articulators moving ahead of the sound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ops.demo.espeak import Phone

PARAMETERS = ("jaw", "round", "spread", "close", "tuck")


@dataclass(frozen=True)
class Target:
    jaw: float = 0.15
    round: float = 0.0
    spread: float = 0.0
    close: float = 0.0
    tuck: float = 0.0
    dominance: tuple[float, float, float, float, float] = (0.4, 0.4, 0.4, 0.4, 0.4)  # per PARAMETERS


_VOWEL = (1.0, 0.8, 0.8, 0.6, 0.6)  # vowels own the jaw and the lip shape, and want the lips apart
_WEAK = (0.15, 0.1, 0.1, 0.3, 0.3)  # alveolars, velars: take jaw and lips from the vowels
_BILABIAL = (4.0, 0.5, 0.5, 6.0, 2.0)
_LABIODENTAL = (3.0, 0.5, 0.5, 2.0, 6.0)
_ROUNDED_CONSONANT = (0.6, 3.0, 1.0, 0.5, 0.5)
_PAUSE = (0.6, 0.5, 0.5, 0.6, 0.6)

# Vowel qualities by the first letters of espeak's English mnemonics (longest prefix wins).
_VOWELS = {
    "a": Target(jaw=1.0, spread=0.2, dominance=_VOWEL),
    "A": Target(jaw=0.95, dominance=_VOWEL),
    "V": Target(jaw=0.75, dominance=_VOWEL),
    "0": Target(jaw=0.8, round=0.55, dominance=_VOWEL),
    "O": Target(jaw=0.75, round=0.75, dominance=_VOWEL),
    "o": Target(jaw=0.55, round=0.85, dominance=_VOWEL),
    "E": Target(jaw=0.65, spread=0.5, dominance=_VOWEL),
    "e": Target(jaw=0.5, spread=0.65, dominance=_VOWEL),
    "3": Target(jaw=0.45, round=0.25, dominance=_VOWEL),
    "@": Target(jaw=0.35, dominance=(0.5, 0.4, 0.4, 0.3, 0.3)),  # schwa: weak, takes colour from neighbours
    "I": Target(jaw=0.25, spread=0.8, dominance=_VOWEL),
    "i": Target(jaw=0.2, spread=1.0, dominance=_VOWEL),
    "U": Target(jaw=0.3, round=0.85, dominance=_VOWEL),
    "u": Target(jaw=0.25, round=1.0, dominance=_VOWEL),
}
_CONSONANTS = {
    **{c: Target(jaw=0.0, close=1.0, dominance=_BILABIAL) for c in ("p", "b", "m")},
    **{c: Target(jaw=0.08, tuck=1.0, dominance=_LABIODENTAL) for c in ("f", "v")},
    "w": Target(jaw=0.1, round=1.0, dominance=_ROUNDED_CONSONANT),
    **{c: Target(jaw=0.12, round=0.55, dominance=(0.6, 1.5, 1.0, 0.4, 0.4)) for c in ("S", "Z", "tS", "dZ")},
    "r": Target(jaw=0.15, round=0.35, dominance=(0.3, 1.0, 0.5, 0.3, 0.3)),
    **{c: Target(jaw=0.2, dominance=(0.5, 0.2, 0.2, 0.3, 0.3)) for c in ("T", "D")},
    **{c: Target(jaw=0.1, spread=0.3, dominance=(0.6, 0.2, 0.4, 0.3, 0.3)) for c in ("s", "z")},
}
_REST_PULL = (0.02, 0.15, 0.15, 0.15, 0.15)  # per PARAMETERS
_DEFAULT_CONSONANT = Target(jaw=0.15, dominance=_WEAK)
_REST = Target(jaw=0.0, dominance=_PAUSE)
_DIPHTHONGS = {"aI": ("a", "i"), "aU": ("a", "u"), "eI": ("e", "i"), "OI": ("O", "i"), "oU": ("o", "u"),
               "@U": ("@", "u"), "e@": ("e", "@"), "i@": ("i", "@"), "U@": ("U", "@"), "A@": ("A", "@"),
               "O@": ("O", "@")}  # fmt: skip


def is_vowel(symbol: str) -> bool:
    return bool(symbol) and symbol[0] in _VOWELS


def targets_for(symbol: str) -> list[Target]:
    """One target, or two for a diphthong (its first and second half)."""
    if not symbol or symbol.startswith("_"):
        return [_REST]
    for diphthong, (first, second) in _DIPHTHONGS.items():
        if symbol.startswith(diphthong):
            return [_VOWELS[first], _VOWELS[second]]
    if symbol[0] in _VOWELS:
        return [_VOWELS[symbol[0]]]
    for length in (2, 1):
        if symbol[:length] in _CONSONANTS:
            return [_CONSONANTS[symbol[:length]]]
    return [_DEFAULT_CONSONANT]


def articulation_tracks(
    phones: Sequence[Phone], n_frames: int, fps: float, lead_s: float = 0.0, loudness: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-frame tracks {parameter: [n_frames] float32 in [0, 1]} for phones on the clip's time axis.

    `loudness` [n_frames] (0..1), when given, scales the jaw: louder speech opens wider, and the
    jaw settles toward closed in the quiet stretches (closures, pauses).
    """
    times = np.arange(n_frames) / fps + lead_s  # what the articulators do at t leads the sound by lead_s
    numerator = np.zeros((len(PARAMETERS), n_frames))
    # A weak pull toward rest (all zero) everywhere, so a closure or rounding fades out in the
    # silence around speech instead of holding; weaker on the jaw, which vowels must own.
    denominator = np.array(_REST_PULL)[:, None] * np.ones(n_frames)
    for phone in phones:
        parts = targets_for(phone.symbol)
        length = (phone.end - phone.start) / len(parts)
        for k, target in enumerate(parts):
            centre = phone.start + (k + 0.5) * length
            # Vowels reach well into what follows them; consonants are brief, sharp gestures. The
            # reach is mostly forward in time (carry-over): the motion at t follows from the sound
            # up to t, which a causal model can learn (anticipation would need the audio ahead).
            if is_vowel(phone.symbol):
                before, after = max(0.35 * length, 0.03), max(1.0 * length, 0.06)
            else:
                before, after = max(0.25 * length, 0.02), max(0.5 * length, 0.035)
            width = np.where(times < centre, before, after)
            bump = np.exp(-0.5 * ((times - centre) / width) ** 2)
            values = (target.jaw, target.round, target.spread, target.close, target.tuck)
            for p, (value, dominance) in enumerate(zip(values, target.dominance)):
                numerator[p] += dominance * bump * value
                denominator[p] += dominance * bump
    tracks = numerator / denominator
    if loudness is not None:
        tracks[0] *= 0.3 + 0.7 * np.clip(loudness, 0.0, 1.0)
    return {name: np.clip(tracks[p], 0.0, 1.0).astype(np.float32) for p, name in enumerate(PARAMETERS)}


def stressed_vowels(phones: Sequence[Phone]) -> list[Phone]:
    """Vowels clearly longer than the clip's median vowel: espeak lengthens stressed syllables."""
    vowels = [p for p in phones if is_vowel(p.symbol)]
    if not vowels:
        return []
    median = float(np.median([p.end - p.start for p in vowels]))
    return [p for p in vowels if p.end - p.start > 1.25 * median]
