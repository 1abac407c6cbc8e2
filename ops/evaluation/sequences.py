"""Whole held-out sequences for evaluation, read from the segment store's frame data.

Both model families are evaluated on the same thing: every frame of every test sequence (not the
training windows, which overlap and drop the leftover frames), generated in one pass the way
`facetalk animate` generates long audio. The waveform, when the sequence store has it, is only for
the audio-energy proxy and the plots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.motion_model import MotionModel
from ops.evaluation.regions import EvaluationError
from storage.segments import SegmentReader
from storage.sequence_store import SequenceStore


@dataclass(frozen=True)
class HeldOutSequence:
    key: str  # <ID>_<SEQ>
    identity: str  # <ID>
    features: np.ndarray  # [T, A]
    codes: np.ndarray  # [T, 200] ground-truth NPHM expression
    flame_template: np.ndarray | None  # [V, 3]
    flame_offsets: np.ndarray | None  # [T, V, 3]: vertices = template + offsets
    audio: np.ndarray | None  # 16 kHz samples covering the T frames
    sample_rate: int

    @property
    def n_frames(self) -> int:
        return len(self.features)

    @property
    def flame_vertices(self) -> np.ndarray:
        if self.flame_offsets is None or self.flame_template is None:
            raise ValueError(f"sequence {self.key!r} has no FLAME")
        return self.flame_template[None] + self.flame_offsets


def held_out_sequences(
    reader: SegmentReader,
    store: SequenceStore | None = None,
    split: str = "test",
    flame: bool = False,
    max_frames: int | None = None,
    max_sequences: int | None = None,
    fps: float = 24.0,
) -> list[HeldOutSequence]:
    """The `split` sequences (with FLAME only, when `flame`), each whole or cut to `max_frames`."""
    keys = reader.sequence_names(split, flame=flame)[:max_sequences]
    identities = dict(
        zip(reader.manifest.column("sequence").to_pylist(), reader.manifest.column("identity").to_pylist())
    )
    out = []
    for key in keys:
        features = reader.whole_sequence(key, "audio_features")[:max_frames]
        n = len(features)
        offsets = reader.whole_sequence(key, "flame_offsets")[:n] if flame else None
        audio, rate = None, 16_000
        if store is not None and store.attrs(key, "audio") is not None:
            rate = int(store.attrs(key, "audio").get("sample_rate", rate))
            audio = store.read(key, "audio", "samples")[: round(n / fps * rate)]
        out.append(
            HeldOutSequence(
                key=key,
                identity=str(identities[key]),
                features=features,
                codes=reader.whole_sequence(key, "expression")[:n],
                flame_template=reader.sequence_template(key) if flame else None,
                flame_offsets=offsets,
                audio=audio,
                sample_rate=rate,
            )
        )
    return out


def check_features(features: np.ndarray, model: MotionModel, where: str) -> None:
    """Refuse audio features of another width than the model was trained on."""
    if features.ndim < 2 or features.shape[-1] != model.config.model.audio_dim:
        raise EvaluationError(
            f"{where}: audio features are {features.shape[-1]}-d, the model expects {model.config.model.audio_dim}-d "
            "(made by a different audio encoder?)"
        )
