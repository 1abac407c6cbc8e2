"""espeak-ng through its C library: a waveform and the start time of every phoneme in it.

The `espeak-ng` command prints phoneme timings only for MBROLA voices (`--pho`), which `make` does
not install; the library reports them for its own voices too, as phoneme events in the synthesis
callback (`espeakINITIALIZE_PHONEME_EVENTS`), with the audio position of each phoneme. Synthesis is
deterministic: the same text and settings give the same samples and events.

The library is one global synthesizer per process, so calls are serialized by a lock. It also
carries state from one call to the next (pitch flutter: a repeated sentence comes out a few samples
longer or shorter), and cannot be restarted in the same process; `speak_fresh` therefore speaks a
list of utterances in a new process, so the same list always gives the same samples.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# speak_lib.h (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_OPTIONS = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_LOCK = threading.Lock()


class EspeakError(RuntimeError):
    """espeak-ng is missing or refused the request."""


@dataclass(frozen=True)
class Phone:
    start: float  # seconds from the start of the waveform
    end: float  # seconds: the next phoneme's start (or the end of the sound)
    symbol: str  # espeak's phoneme mnemonic (Kirshenbaum-like): "p", "aI", "@", "_:" ...


@dataclass(frozen=True)
class Utterance:
    waveform: np.ndarray  # [n] float32 in [-1, 1]
    sample_rate: int  # espeak's own (22050 Hz)
    phones: tuple[Phone, ...]


@dataclass(frozen=True)
class EspeakVoice:
    """espeak-ng settings: voice name (language + variant), words per minute, pitch and range (0-99)."""

    name: str = "en-us"
    rate_wpm: int = 165
    pitch: int = 50
    pitch_range: int = 50
    word_gap: int = 0  # extra pause between words, 10 ms units


@lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL, int] | None:
    path = ctypes.util.find_library("espeak-ng")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
    sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _OPTIONS)
    if sample_rate <= 0:
        return None
    return lib, sample_rate


def espeak_available() -> bool:
    """True when libespeak-ng loads and initializes (it comes with the `espeak-ng` package)."""
    return _library() is not None


def speak(text: str, voice: EspeakVoice = EspeakVoice()) -> Utterance:
    """Synthesize `text`; the phones cover the waveform from the first phoneme to its end."""
    loaded = _library()
    if loaded is None:
        raise EspeakError("espeak-ng: libespeak-ng is not installed (apt-get install espeak-ng)")
    lib, sample_rate = loaded
    chunks: list[np.ndarray] = []
    events: list[tuple[int, str]] = []  # (sample index, phoneme)

    def collect(wav, n_samples, event_list) -> int:
        if n_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        k = 0
        while event_list[k].type != _EVENT_LIST_TERMINATED:
            event = event_list[k]
            if event.type == _EVENT_PHONEME:
                events.append((int(event.sample), event.id.string.decode("ascii", "replace")))
            k += 1
        return 0

    callback = _CALLBACK(collect)  # kept alive until synthesis returns
    encoded = text.encode("utf-8")
    with _LOCK:
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.name.encode("ascii")) != 0:
            raise EspeakError(f"espeak-ng: no voice {voice.name!r} (see `espeak-ng --voices`)")
        for parameter, value in ((_RATE, voice.rate_wpm), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range),
                                 (_WORDGAP, voice.word_gap)):  # fmt: skip
            lib.espeak_SetParameter(parameter, int(value), 0)
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
    if status != 0:
        raise EspeakError(f"espeak-ng: synthesis failed (status {status}) for {text[:40]!r}")
    waveform = (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)).astype(np.float32) / 32768.0
    end = len(waveform) / sample_rate
    phones = []
    for k, (sample, symbol) in enumerate(events):
        stop = events[k + 1][0] if k + 1 < len(events) else len(waveform)
        if stop > sample:
            phones.append(Phone(sample / sample_rate, min(stop / sample_rate, end), symbol))
    return Utterance(waveform, sample_rate, tuple(phones))


def speak_fresh(requests: Sequence[tuple[str, EspeakVoice]]) -> list[Utterance]:
    """`speak` each (text, voice) in order, in a new process: reproducible whatever ran before."""
    if not requests:
        return []
    if not espeak_available():
        raise EspeakError("espeak-ng: libespeak-ng is not installed (apt-get install espeak-ng)")
    payload = pickle.dumps([(text, dataclasses.asdict(voice)) for text, voice in requests])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-m", "ops.demo.espeak"], input=payload, capture_output=True, env=env, check=False
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise EspeakError(f"espeak-ng: the synthesis process failed: {message[-1] if message else done.returncode}")
    return [
        Utterance(waveform, rate, tuple(Phone(*phone) for phone in phones))
        for waveform, rate, phones in pickle.loads(done.stdout)
    ]


def _serve() -> None:
    """`python -m ops.demo.espeak`: pickled [(text, voice fields)] on stdin -> pickled plain tuples
    [(waveform, sample_rate, [(start, end, symbol)])] on stdout (no classes of this __main__)."""
    requests = pickle.loads(sys.stdin.buffer.read())
    utterances = [speak(text, EspeakVoice(**fields)) for text, fields in requests]
    plain = [(u.waveform, u.sample_rate, [(p.start, p.end, p.symbol) for p in u.phones]) for u in utterances]
    sys.stdout.buffer.write(pickle.dumps(plain))


if __name__ == "__main__":
    _serve()
