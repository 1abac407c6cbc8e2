"""The evaluation protocol: a model and its audio-free baselines on every frame of the held-out sequences.

One protocol for both model families:

- **Data.** Every `split` sequence whole (`sequences.held_out_sequences`), generated in one pass from
  its audio features as `facetalk animate` generates long audio. Every row of a table is scored on
  the same frames; `max_frames` (0/None: all) caps each sequence for every row alike.
- **Rows.** `model` (the config's guidance); `null_condition` (the same network sampled with the
  audio dropped, guidance 0, the same seed); the train-split mean for every frame (`mean_code` /
  `mean_offsets`, over all frames of the train sequences); zero (`zero_code`: the neutral code;
  `zero_offsets`: the neutral template); `ground_truth` (the ceiling of the lip-sync measure).
- **NPHM metrics.** `expression_l2` (all dims) and `expression_l2_mouth` (`CodeRegions.mouth_dims`),
  pooled over all frames of all sequences.
- **FLAME metrics.** `lve` (max squared lip error per frame, mean over all frames of all
  sequences, as CodeTalker / FaceDiffuser pool them), `lve_mm` (Imitator's, in mm), `mve` (pooled),
  `fdd` (per sequence, then the mean over sequences; signed, positive: less upper-face motion than
  the ground truth) and `fdd_abs` (the mean of its absolute value, FaceDiffuser's "ABS FDD").
- **Lip sync** (both): the mouth opening of a row (NPHM: the `jaw_dim` code; FLAME: the distance of
  the upper and lower lip centroids) against the ground truth's, Pearson r at the best offset within
  +-`max_offset` frames (`lip_sync`, and that offset, `lip_sync_offset`), mean over sequences.
  The ground truth scores 1 at offset 0 (the ceiling); a constant mouth scores 0.
  `audio_energy_sync` is the old, secondary proxy: the same best-lag correlation of the opening with
  the audio's RMS per frame. It rewards following loudness, so a row can beat the ground truth on it.
- **Diversity.** For every test sequence, K = `n_samples` samples with different noise; the mean
  over pairs of the mean over frames (and vertices) of their L2 distance (codes: over the 200 dims;
  vertices: per vertex, as FaceDiffuser's `compute_diversity`), then the mean over sequences.
  Deterministic rows have 0.

`Evaluation.tracks` keeps the mouth opening of every row and the audio envelope per sequence, for
plots; a `PeerExport` given to `evaluate_flame_model` receives the model's vertices per sequence.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.motion_model import MotionModel
from ops.evaluation.export import PeerExport
from ops.evaluation.lip_sync import lip_opening, mouth_sync, split_lips
from ops.evaluation.metrics import (
    audio_rms_per_frame,
    diversity,
    expression_l2,
    face_dynamics_deviation,
    lip_sync_score,
    lip_vertex_error,
    lip_vertex_error_mm,
    mean_vertex_error,
)
from ops.evaluation.regions import CodeRegions, EvaluationError, VertexRegions
from ops.evaluation.sequences import HeldOutSequence, check_features, held_out_sequences
from storage.segments import SegmentReader
from storage.sequence_store import SequenceStore

Progress = Callable[[str], None]
Table = dict[str, dict[str, float]]
MAX_OFFSET = 3  # frames (125 ms at 24 fps) the lip-sync measure may shift the generated mouth by


@dataclass
class Evaluation:
    family: str  # "nphm" or "flame"
    table: Table
    tracks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # sequence -> row -> opening [T]


class _Accumulator:
    """Per-sequence values of each (row, metric) with weights: frames for pooled metrics, 1 for
    per-sequence means."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)

    def add(self, row: str, metric: str, value: float, weight: float = 1.0) -> None:
        self.values[row, metric].append((float(value), float(weight)))

    def table(self) -> Table:
        out: Table = {}
        for (row, metric), pairs in self.values.items():
            values, weights = zip(*pairs)
            out.setdefault(row, {})[metric] = float(np.average(values, weights=weights))
        return out


def train_mean(reader: SegmentReader, field_name: str) -> np.ndarray:
    """Mean over every frame of the train sequences of a per-frame field -> [*frame_shape]."""
    keys = reader.sequence_names("train", flame=field_name == "flame_offsets")
    if not keys:
        raise EvaluationError(f"segment store {str(reader.path)!r} has no train sequences with {field_name} to average")
    total, count = None, 0
    for key in keys:
        frames = reader.whole_sequence(key, field_name).astype(np.float64)
        total = frames.sum(axis=0) if total is None else total + frames.sum(axis=0)
        count += len(frames)
    return (total / count).astype(np.float32)


def _sequences(reader, store, split, flame, max_frames, max_sequences, fps) -> list[HeldOutSequence]:
    sequences = held_out_sequences(
        reader, store, split, flame=flame, max_frames=max_frames or None, max_sequences=max_sequences, fps=fps
    )
    if not sequences:
        what = "with FLAME " if flame else ""
        raise EvaluationError(f"segment store {str(reader.path)!r} has no {split!r} sequences {what}to evaluate")
    return sequences


def _add_lip_sync(
    acc: _Accumulator, openings: dict[str, np.ndarray], sequence: HeldOutSequence, fps: float, max_offset: int
) -> bool:
    """lip_sync / lip_sync_offset of every row against the ground truth, and the audio proxy."""
    truth = openings["ground_truth"]
    if len(truth) < 2 * max_offset + 3:
        return False
    for row, opening in openings.items():
        sync = mouth_sync(opening, truth, max_offset)
        acc.add(row, "lip_sync", sync.correlation)
        acc.add(row, "lip_sync_offset", sync.offset_frames)
        if sequence.audio is not None:
            acc.add(
                row, "audio_energy_sync", lip_sync_score(sequence.audio, sequence.sample_rate, opening, fps, max_offset)
            )
    return True


def _add_diversity(
    acc: _Accumulator, model: MotionModel, features: np.ndarray, k: int, steps: int, guidance: float | None, seed: int
) -> None:
    if k < 2:
        return
    batch = np.repeat(features[None], k, axis=0)  # [K, T, A]: K noise draws, one audio
    for row, weight in (("model", guidance), ("null_condition", 0.0)):
        acc.add(row, "diversity", diversity(model.generate(batch, steps=steps, guidance=weight, seed=seed)))


def _tracks(openings: dict[str, np.ndarray], sequence: HeldOutSequence, fps: float) -> dict[str, np.ndarray]:
    tracks = {row: np.asarray(opening, np.float32) for row, opening in openings.items()}
    if sequence.audio is not None:
        tracks["audio_envelope"] = audio_rms_per_frame(
            sequence.audio, sequence.sample_rate, sequence.n_frames, fps
        ).astype(np.float32)
    return tracks


def _data_row(acc_frames: int, sequences: list[HeldOutSequence], n_sync: int, n_samples: int, steps: int,
              max_offset: int, started: float) -> dict[str, float]:  # fmt: skip
    return {
        "n_sequences": float(len(sequences)),
        "n_frames": float(acc_frames),
        "n_lip_sync_sequences": float(n_sync),
        "n_audio_sequences": float(sum(s.audio is not None for s in sequences)),
        "diversity_samples_per_sequence": float(n_samples if n_samples >= 2 else 0),
        "sampling_steps": float(steps),
        "lip_sync_max_offset": float(max_offset),
        "seconds": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------------- NPHM


def evaluate_nphm_model(
    model: MotionModel,
    reader: SegmentReader,
    store: SequenceStore | None = None,
    split: str = "test",
    regions: CodeRegions | None = None,
    n_samples: int = 3,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    max_frames: int | None = None,
    max_sequences: int | None = None,
    max_offset: int = MAX_OFFSET,
    progress: Progress | None = None,
) -> Evaluation:
    """The NPHM-variant model vs null condition, mean code and zero code (see the module docstring)."""
    if model.config.data.variant != "nphm":
        raise EvaluationError(f"evaluate_nphm_model needs an NPHM-variant model, got {model.config.data.variant!r}")
    say = progress or (lambda message: None)
    fps = float(model.meta.fps)
    started = time.perf_counter()
    sequences = _sequences(reader, store, split, False, max_frames, max_sequences, fps)
    mean_code = train_mean(reader, "expression")  # [200]
    regions = (regions or CodeRegions.whole_code(len(mean_code))).checked(len(mean_code))
    mouth, jaw = list(regions.mouth_dims), regions.jaw_dim
    acc, tracks, frames, n_sync = _Accumulator(), {}, 0, 0
    for number, sequence in enumerate(sequences):
        check_features(sequence.features, model, f"sequence {sequence.key!r}")
        truth = sequence.codes
        predictions = {
            "model": model.generate(sequence.features, steps=steps, guidance=guidance, seed=seed + number),
            "null_condition": model.generate(sequence.features, steps=steps, guidance=0.0, seed=seed + number),
            "mean_code": np.broadcast_to(mean_code, truth.shape),
            "zero_code": np.zeros_like(truth),
        }
        openings = {"ground_truth": truth[:, jaw]}
        for row, codes in predictions.items():
            acc.add(row, "expression_l2", expression_l2(codes, truth), len(truth))
            acc.add(row, "expression_l2_mouth", expression_l2(codes[:, mouth], truth[:, mouth]), len(truth))
            openings[row] = codes[:, jaw]
        n_sync += _add_lip_sync(acc, openings, sequence, fps, max_offset)
        _add_diversity(acc, model, sequence.features, n_samples, steps, guidance, seed + 1000 + number)
        for row in ("mean_code", "zero_code"):
            acc.add(row, "diversity", 0.0)
        tracks[sequence.key] = _tracks(openings, sequence, fps)
        frames += len(truth)
        say(f"[{number + 1}/{len(sequences)}] {sequence.key}: {len(truth)} frames")
    table = acc.table()
    table["data"] = _data_row(frames, sequences, n_sync, n_samples, steps, max_offset, started)
    return Evaluation("nphm", table, tracks)


# ----------------------------------------------------------------------------- FLAME


def evaluate_flame_model(
    model: MotionModel,
    reader: SegmentReader,
    regions: VertexRegions,
    store: SequenceStore | None = None,
    split: str = "test",
    n_samples: int = 3,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    units_to_mm: float = 1000.0,
    max_frames: int | None = None,
    max_sequences: int | None = None,
    max_offset: int = MAX_OFFSET,
    export: PeerExport | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """The FLAME-variant model vs null condition, mean offsets and the template (see the module docstring).

    `units_to_mm` converts vertex units to millimeters for `lve_mm` (1000 for FLAME's meters).
    `export`, when given, receives every test sequence's ground truth and predicted vertices.
    """
    if model.config.data.variant != "flame":
        raise EvaluationError(f"evaluate_flame_model needs a FLAME-variant model, got {model.config.data.variant!r}")
    if "flame_offsets" not in reader.fields:
        raise EvaluationError(f"segment store {str(reader.path)!r} has no flame_offsets (built without FLAME tracking)")
    n_vertices = reader.item_shape("flame_offsets")[1]
    if regions.n_vertices is not None and regions.n_vertices != n_vertices:
        raise EvaluationError(
            f"the regions are for a {regions.n_vertices}-vertex topology, segment store {str(reader.path)!r} has {n_vertices}"
        )
    say = progress or (lambda message: None)
    fps = float(model.meta.fps)
    started = time.perf_counter()
    sequences = _sequences(reader, store, split, True, max_frames, max_sequences, fps)
    mean_offsets = train_mean(reader, "flame_offsets")  # [V, 3]
    if regions.upper_lip is not None:
        upper_lip, lower_lip = regions.upper_lip, regions.lower_lip
    else:
        upper_lip, lower_lip = split_lips(sequences[0].flame_template, regions.lip)
    acc, tracks, frames, n_sync = _Accumulator(), {}, 0, 0
    for number, sequence in enumerate(sequences):
        check_features(sequence.features, model, f"sequence {sequence.key!r}")
        template, truth = sequence.flame_template, sequence.flame_vertices  # [V, 3], [T, V, 3]
        offsets = {
            "model": model.generate(sequence.features, steps=steps, guidance=guidance, seed=seed + number),
            "null_condition": model.generate(sequence.features, steps=steps, guidance=0.0, seed=seed + number),
            "mean_offsets": np.broadcast_to(mean_offsets, truth.shape),
            "zero_offsets": np.zeros_like(truth),
        }
        openings = {"ground_truth": lip_opening(truth, upper_lip, lower_lip)}
        n = len(truth)
        for row, offset in offsets.items():
            predicted = template[None] + offset
            acc.add(row, "lve", lip_vertex_error(predicted, truth, regions.lip), n)
            acc.add(row, "lve_mm", lip_vertex_error_mm(predicted, truth, regions.lip, units_to_mm), n)
            acc.add(row, "mve", mean_vertex_error(predicted, truth), n)
            fdd = face_dynamics_deviation([predicted], [truth], [template], regions.upper_face)
            acc.add(row, "fdd", fdd)
            acc.add(row, "fdd_abs", abs(fdd))
            openings[row] = lip_opening(predicted, upper_lip, lower_lip)
            if row == "model" and export is not None:
                export.add(sequence.key, sequence.identity, template, truth, predicted)
        n_sync += _add_lip_sync(acc, openings, sequence, fps, max_offset)
        _add_diversity(acc, model, sequence.features, n_samples, steps, guidance, seed + 1000 + number)
        for row in ("mean_offsets", "zero_offsets"):
            acc.add(row, "diversity", 0.0)
        tracks[sequence.key] = _tracks(openings, sequence, fps)
        frames += n
        say(f"[{number + 1}/{len(sequences)}] {sequence.key}: {n} frames")
    if export is not None:
        export.finish()
    table = acc.table()
    table["data"] = _data_row(frames, sequences, n_sync, n_samples, steps, max_offset, started)
    return Evaluation("flame", table, tracks)
