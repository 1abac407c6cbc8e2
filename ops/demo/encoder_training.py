"""The demo's audio encoder: the small Wav2Vec2 of `create_random_encoder`, taught the demo voices' phonemes.

A real FaceTalk setup freezes wav2vec2-base-960h, a Wav2Vec2 pretrained on speech and fine-tuned
to recognise it (CTC on LibriSpeech); its features say which sound is being spoken. Those weights
cannot be downloaded here, and a randomly initialised encoder's features barely separate the
sounds: with them the demo model cannot learn lip shapes from a few minutes of speech. This trains
the same architecture (at a quarter of base's width) for under a minute to recognise espeak-ng's
phonemes frame by frame, on a corpus of its own: sentences of `CORPUS` and of the demo's list,
spoken by voices drawn afresh (not the dataset's speakers, whose recordings it never hears), so the
demo exercises what the real encoder provides: phonetic features.

The task, per motion frame (features interpolated to the motion rate exactly as `AudioEncoder.encode`
does): the phoneme sounding now, and the one sounding 125 ms later (mouths move ahead of the sound),
from two linear heads that are thrown away. The saved directory is a plain `save_pretrained` Wav2Vec2
that `load_audio_encoder` reads; its config says `facetalk_demo_trained` (what it learned from), so
features and models can say that they came from a demo-only encoder. It knows synthetic voices only:
real data needs real weights (README, "Real Wav2Vec2 weights").
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from ops.demo.espeak import Utterance, espeak_available, speak_fresh
from ops.demo.phonetic_speech import SENTENCES, Speaker

SAMPLE_RATE = 16_000
LOOK_AHEAD_S = 0.125

# The encoder's own corpus: none of these is a demo dataset sentence (ops.demo.phonetic_speech.SENTENCES).
CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Bright vixens jump while the quiet zebra waits.",
    "She sells fresh fish at the market by the shore.",
    "Cheap shoes rarely fit a wide foot.",
    "Judge the size of the vast empty room.",
    "The thin thread went through the needle.",
    "Many boys were playing with a yellow ball.",
    "A wise old owl lived in an oak.",
    "Please measure the beam before you buy it.",
    "Up above the world the moon shines bright.",
    "Every morning Paul feeds the purple parrot.",
    "Bubbles float above the warm bath water.",
    "Her voice was soft but very firm.",
    "Who knew the view would move us so?",
    "Boil the water and pour it over the leaves.",
    "The farmer fixed the fence in five minutes.",
    "Look at the pool, the few blue boats are full.",
    "Vera found a very old violin.",
    "Mix the butter with a cup of warm milk.",
    "We owe the bank more money than we thought.",
    "The man behind the wheel waved at me.",
    "Papa put the puppets back in the box.",
    "A fleet of ships moved past the bay.",
    "I would prefer a peach or a plum.",
    "Maybe Bob will bring the map tomorrow.",
    "Over the hill a few wolves howled.",
    "Good food makes a happy home.",
    "The oboe and the bassoon played a tune.",
    "Feel the breeze move through the open window.",
    "Paper boats float on the pond in May.",
    "The woman bought a woolen shawl.",
    "Bees buzz above the blooming flowers.",
)


@dataclass(frozen=True)
class DemoEncoderConfig:
    utterances: int = 96  # ~4 s each (two sentences): ~6 minutes of speech
    steps: int = 300
    batch: int = 16
    crop_frames: int = 48  # 2 s at 24 fps per training example
    lr: float = 1e-3
    warmup_steps: int = 30
    hidden_size: int = 256  # the feature width (wav2vec2-base has 768; the model adapts to either)
    heads: int = 4
    fps: float = 24.0
    seed: int = 0


@dataclass(frozen=True)
class DemoEncoderSummary:
    path: Path
    seconds: float
    speech_seconds: float
    phonemes: int  # classes, pause included
    accuracy: float  # phoneme-now accuracy over the last 20 training batches


def train_demo_encoder(
    path: str | Path,
    config: DemoEncoderConfig = DemoEncoderConfig(),
    progress: Callable[[str], None] | None = None,
) -> DemoEncoderSummary:
    """Train the demo encoder (see the module doc) and save it to `path`, replacing what is there: a killed
    run leaves the old encoder or none (the next `facetalk demo` trains again), never a half-written one."""
    import torch

    if not espeak_available():
        raise RuntimeError("the demo encoder learns espeak-ng's phonemes: libespeak-ng is not installed")
    say = progress or (lambda message: None)
    started = time.perf_counter()
    rng = np.random.default_rng([config.seed, 7])
    waves, labels, vocabulary = _corpus(config, rng)
    speech_seconds = sum(len(w) for w in waves) / SAMPLE_RATE
    say(f"demo encoder: {len(waves)} utterances, {speech_seconds:.0f} s of speech, {len(vocabulary)} phonemes")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, accuracy = _train(staging, waves, labels, len(vocabulary), config, rng, say)
        from models.audio_encoder import DEMO_TRAINED_MARKER, RANDOM_INIT_MARKER

        setattr(model.config, RANDOM_INIT_MARKER, False)
        setattr(model.config, DEMO_TRAINED_MARKER, {
            "corpus": "espeak-ng speaking ops.demo.encoder_training.CORPUS and the demo sentences",
            "speech_seconds": round(speech_seconds), "steps": config.steps, "phoneme_accuracy": round(accuracy, 3),
        })  # fmt: skip
        model.save_pretrained(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    say(f"demo encoder: phoneme accuracy {accuracy:.0%} after {config.steps} steps, {seconds:.0f} s -> {path}")
    return DemoEncoderSummary(path, seconds, speech_seconds, len(vocabulary), accuracy)


def _corpus(
    config: DemoEncoderConfig, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, int]]:
    """Waveforms at 16 kHz and per-frame phoneme ids; id 0 is the pause."""
    pool = CORPUS + SENTENCES
    plan = []
    for _ in range(config.utterances):
        voice = Speaker.random(rng).espeak
        # Wider than the dataset's speakers, so the test speakers fall inside what the encoder heard.
        voice = dataclasses.replace(voice, rate_wpm=int(rng.integers(120, 201)), pitch=int(rng.integers(25, 81)))
        text = " ".join(pool[int(k)] for k in rng.choice(len(pool), size=2, replace=False))
        plan.append((text, voice))
    vocabulary = {"_": 0}
    waves, labels = [], []
    for utterance in speak_fresh(plan):
        waveform, frame_labels = _frames(utterance, config.fps, vocabulary)
        if len(frame_labels) > config.crop_frames:
            waves.append(waveform)
            labels.append(frame_labels)
    if not waves:
        raise RuntimeError("the demo encoder's corpus came out empty: espeak-ng produced no usable speech")
    return waves, labels, vocabulary


def _frames(utterance: Utterance, fps: float, vocabulary: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import resample_poly

    divisor = gcd(SAMPLE_RATE, utterance.sample_rate)
    waveform = resample_poly(
        utterance.waveform.astype(np.float64), SAMPLE_RATE // divisor, utterance.sample_rate // divisor
    ).astype(np.float32)
    n_frames = int(len(waveform) / SAMPLE_RATE * fps)
    centres = (np.arange(n_frames) + 0.5) / fps
    ids = np.zeros(n_frames, np.int64)
    for phone in utterance.phones:
        if not phone.symbol.startswith("_"):
            ids[(centres >= phone.start) & (centres < phone.end)] = vocabulary.setdefault(phone.symbol, len(vocabulary))
    return waveform[: round(n_frames / fps * SAMPLE_RATE)], ids


def _train(staging, waves, labels, n_classes, config, rng, say):
    import torch
    import torch.nn.functional as F
    from transformers import Wav2Vec2Model

    from models.audio_encoder import create_random_encoder, interpolate_to_frames, normalize_waveform

    encoder_dir = create_random_encoder(
        staging, hidden_size=config.hidden_size, num_heads=config.heads, seed=config.seed
    )
    model = Wav2Vec2Model.from_pretrained(encoder_dir, local_files_only=True)
    model.train()
    samples = round(config.crop_frames / config.fps * SAMPLE_RATE)
    width = model.config.hidden_size
    now_head, ahead_head = torch.nn.Linear(width, n_classes), torch.nn.Linear(width, n_classes)
    parameters = [*model.parameters(), *now_head.parameters(), *ahead_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01)
    crop, ahead = config.crop_frames, max(1, round(LOOK_AHEAD_S * config.fps))
    recent: list[float] = []
    for step in range(config.steps):
        audio, now, later = _batch(waves, labels, config, crop, ahead, samples, rng)
        cnn = model.feature_extractor(normalize_waveform(torch.from_numpy(audio))).transpose(1, 2)
        cnn = interpolate_to_frames(cnn, crop)  # to the motion frames first, as AudioEncoder.encode does
        progress = max(0.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        for group in optimizer.param_groups:  # warm-up, then cosine decay to a tenth
            group["lr"] = (
                config.lr * min(1.0, (step + 1) / config.warmup_steps) * (0.55 + 0.45 * np.cos(np.pi * progress))
            )
        hidden, _ = model.feature_projection(cnn)
        hidden = model.encoder(hidden).last_hidden_state
        logits = now_head(hidden)
        loss = F.cross_entropy(logits.reshape(-1, n_classes), torch.from_numpy(now).reshape(-1))
        later_logits = ahead_head(hidden).reshape(-1, n_classes)
        loss = loss + 0.5 * F.cross_entropy(later_logits, torch.from_numpy(later).reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        recent = [*recent, float((logits.argmax(-1).numpy() == now).mean())][-20:]
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            say(f"demo encoder: step {step + 1}/{config.steps}  loss {loss.item():.3f}  accuracy {np.mean(recent):.0%}")
    model.eval()
    return model, float(np.mean(recent))


def _batch(waves, labels, config, crop, ahead, samples, rng):
    """`batch` random crops with gain and room noise, and their phonemes now and `ahead` frames later."""
    audio = np.zeros((config.batch, samples), np.float32)
    now = np.zeros((config.batch, crop), np.int64)
    later = np.zeros((config.batch, crop), np.int64)
    for b in range(config.batch):
        k = int(rng.integers(len(waves)))
        frames = labels[k]
        start = int(rng.integers(len(frames) - crop))
        first = round(start / config.fps * SAMPLE_RATE)
        piece = waves[k][first : first + samples]
        noise = rng.standard_normal(len(piece)).astype(np.float32) * 10 ** rng.uniform(-4.5, -2.5)
        audio[b, : len(piece)] = piece * rng.uniform(0.3, 1.0) + noise
        now[b] = frames[start : start + crop]
        padded = np.concatenate([frames, np.full(ahead, frames[-1])])
        later[b] = padded[start + ahead : start + ahead + crop]
    return audio, now, later
