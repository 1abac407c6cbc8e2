"""Evaluate trained motion models on the held-out split, against audio-free baselines, and render them.

What is compared (every table is {row: {metric: value}}):

- NPHM variant (`evaluate_nphm_model`): whole test *sequences* from the sequence store, generated
  from their stored audio features in one pass, as `facetalk animate` would (the model is causal and
  its positional encoding is periodic, so any length works; `max_frames` caps the cost). Rows:
  `model`; `null_condition` (the same network sampled with the audio dropped, i.e. guidance 0:
  x0 = x0_uncond, what classifier-free training taught it without audio); `mean_code` (the
  train-split mean code for every frame); `ground_truth` (its own lip sync, for reference).
  Metrics: `expression_l2` (all 200 dims) and `expression_l2_mouth` (the mouth dims of
  `CodeRegions`), pooled over all frames; `lip_sync` (best-lag Pearson r of the audio RMS per frame
  against the jaw-opening dimension, mean over sequences; NPHM codes carry no vertex positions, so
  the jaw dim stands in for mouth opening: exact for the analytic demo head, a proxy for learned
  NPHM codes, where `CodeRegions.jaw_dim` must name the dimension that opens the mouth);
  `diversity` (mean pairwise distance of `n_samples` samples for the first
  `n_diversity_sequences` sequences).
- FLAME variant (`evaluate_flame_model`): non-overlapping test windows of the segment store
  (consecutive windows of one sequence overlap by segment - stride frames; the first window and
  every one starting at or after the previous one's end are kept), vertices = the sequence's
  template + offsets. Rows: `model`, `null_condition`, `mean_offsets` (train-split mean),
  `zero_offsets` (the neutral template). Metrics: `lve` (input units^2), `lve_mm`, `mve`, `fdd`
  (per window), `diversity`.

`better_than_baseline` is the rule the blocking asset check applies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.motion_model import MotionModel
from ops.audio.cleaning import clean_audio_file
from ops.evaluation.metrics import (
    diversity,
    expression_l2,
    face_dynamics_deviation,
    lip_sync_score,
    lip_vertex_error,
    lip_vertex_error_mm,
    mean_vertex_error,
)
from ops.geometry.render import MeshFrame, RenderConfig
from ops.geometry.talking_head import (
    expression_meshes,
    render_expression_video,
    render_talking_head,
    talking_head_render_config,
)
from ops.inference import (
    InferenceError,
    audio_features_for,
    identity_for,
    load_encoder_for,
    load_head,
)
from storage.segments import SegmentReader
from storage.sequence_store import SequenceStore

Progress = Callable[[str], None]
Table = dict[str, dict[str, float]]
READ_BLOCK = 64  # segments per read when averaging the train split
LIP_SYNC_MAX_LAG = 3  # frames; lip_sync_score needs at least 2 * lag + 3 frames


class EvaluationError(ValueError):
    """Nothing to evaluate, or data that does not fit the model; the message names the store."""


@dataclass(frozen=True)
class CodeRegions:
    """Which expression-code dimensions mean what; a property of the dataset's head model, read from
    `_meta/regions.json` ("expression": {"mouth_dims": [...], "jaw_dim": n}) or given in the config."""

    mouth_dims: tuple[int, ...]
    jaw_dim: int  # grows as the mouth opens: the lip-sync signal

    @classmethod
    def whole_code(cls, n_dims: int) -> CodeRegions:
        """Without knowledge of the code: every dimension counts as mouth, dimension 0 as the jaw."""
        return cls(tuple(range(n_dims)), 0)


def read_code_regions(path: str | Path) -> CodeRegions | None:
    """The "expression" entry of a regions file, or None when the file or the entry is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get("expression")
    except (OSError, ValueError, AttributeError) as error:
        raise EvaluationError(f"{path}: not a readable regions JSON object ({error})") from error
    if entry is None:
        return None
    try:
        return CodeRegions(tuple(int(d) for d in entry["mouth_dims"]), int(entry["jaw_dim"]))
    except (KeyError, TypeError, ValueError) as error:
        raise EvaluationError(f"{path}: 'expression' needs 'mouth_dims' (list) and 'jaw_dim' (int): {error}") from error


@dataclass(frozen=True)
class VertexRegions:
    """Vertex index sets of one fixed topology (FLAME, or the demo's)."""

    lip: np.ndarray  # [L] int64
    upper_face: np.ndarray  # [U] int64
    n_vertices: int | None = None  # of the topology, when known: checked against the model

    @classmethod
    def from_mapping(cls, raw: dict, source: str = "regions") -> VertexRegions:
        missing = [key for key in ("lip", "upper_face") if key not in raw]
        if missing:
            raise EvaluationError(f"{source}: missing region(s) {missing}; it has {sorted(raw)}")
        lip, upper = (np.asarray(raw[key], dtype=np.int64).reshape(-1) for key in ("lip", "upper_face"))
        if lip.size == 0 or upper.size == 0:
            raise EvaluationError(f"{source}: the 'lip' and 'upper_face' regions must not be empty")
        n_vertices = int(raw["n_vertices"]) if raw.get("n_vertices") is not None else None
        return cls(lip, upper, n_vertices)


def read_regions(path: str | Path) -> VertexRegions:
    """`<data_root>/_meta/regions.json`: {"topology", "n_vertices", "lip": [...], "upper_face": [...]}."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: region file not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise EvaluationError(f"{path}: expected a JSON object of regions, got {type(raw).__name__}")
    return VertexRegions.from_mapping(raw, source=str(path))


# ----------------------------------------------------------------------------- shared helpers


def split_sequences(reader: SegmentReader, split: str = "test") -> list[str]:
    """Sequence keys with segments in `split`, in manifest order."""
    indices = reader.indices(split)
    names = np.asarray(reader.manifest.column("sequence").to_pylist(), dtype=object)[indices]
    return list(dict.fromkeys(names))


def _check_features(features: np.ndarray, model: MotionModel, where: str) -> None:
    if features.ndim < 2 or features.shape[-1] != model.config.model.audio_dim:
        raise EvaluationError(
            f"{where}: audio features are {features.shape[-1]}-d, the model expects {model.config.model.audio_dim}-d "
            "(made by a different audio encoder?)"
        )


def _train_mean(reader: SegmentReader, field_name: str) -> np.ndarray:
    """Mean over train segments and frames of a per-frame field: [*item_shape[1:]]."""
    indices = reader.indices("train", flame=field_name == "flame_offsets")
    if len(indices) == 0:
        raise EvaluationError(f"segment store {str(reader.path)!r} has no train segments with {field_name} to average")
    total, count = None, 0
    for start in range(0, len(indices), READ_BLOCK):
        block = reader.read(field_name, indices[start : start + READ_BLOCK]).astype(np.float64)  # [B, L, ...]
        summed = block.sum(axis=(0, 1))
        total = summed if total is None else total + summed
        count += block.shape[0] * block.shape[1]
    return (total / count).astype(np.float32)


def _pooled(values: Sequence[float], weights: Sequence[float]) -> float:
    return float(np.average(values, weights=weights))


# ----------------------------------------------------------------------------- NPHM


@dataclass
class _Clip:
    key: str
    features: np.ndarray  # [T, A]
    codes: np.ndarray  # [T, 200] ground truth
    audio: np.ndarray | None  # samples covering the T frames
    sample_rate: int
    identity: np.ndarray | None  # [1344]


def _load_clip(store: SequenceStore, key: str, fps: float, max_frames: int | None) -> _Clip:
    features = store.read(key, "audio_features", "features")
    codes = store.read(key, "nphm", "expression")
    n = min(len(features), len(codes), max_frames or len(codes))
    nphm = store.open_component(key, "nphm")
    identity = nphm["identity"][...] if "identity" in nphm else None
    audio, rate = None, 16_000
    audio_attrs = store.attrs(key, "audio")
    if audio_attrs is not None:
        rate = int(audio_attrs.get("sample_rate", rate))
        audio = store.read(key, "audio", "samples")[: round(n / fps * rate)]
    return _Clip(key, features[:n].astype(np.float32), codes[:n].astype(np.float32), audio, rate, identity)


def _lip_sync(clip: _Clip, jaw: np.ndarray, fps: float) -> float | None:
    if clip.audio is None or len(jaw) < 2 * LIP_SYNC_MAX_LAG + 3:
        return None
    return lip_sync_score(clip.audio, clip.sample_rate, jaw, fps, LIP_SYNC_MAX_LAG)


def evaluate_nphm_model(
    model: MotionModel,
    reader: SegmentReader,
    store: SequenceStore,
    split: str = "test",
    regions: CodeRegions | None = None,
    n_samples: int = 3,
    n_diversity_sequences: int = 2,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    max_frames: int | None = 24 * 60,
    max_sequences: int | None = None,
    progress: Progress | None = None,
) -> Table:
    """Metrics of an NPHM-variant model on the `split` sequences (see the module docstring).

    Rows model / null_condition / mean_code / ground_truth, plus `data` (counts and settings).
    The cleaned audio in the sequence store (16 kHz) drives the lip-sync metric; sequences without
    it are left out of that metric only.
    """
    if model.config.data.variant != "nphm":
        raise EvaluationError(f"evaluate_nphm_model needs an NPHM-variant model, got {model.config.data.variant!r}")
    say = progress or (lambda message: None)
    fps = float(model.meta.fps)
    keys = [
        k
        for k in split_sequences(reader, split)
        if store.attrs(k, "nphm") is not None and store.attrs(k, "audio_features") is not None
    ]
    if max_sequences is not None:
        keys = keys[:max_sequences]
    if not keys:
        raise EvaluationError(
            f"segment store {str(reader.path)!r} has no {split!r} sequences with nphm and audio_features in "
            f"the sequence store {str(store.root)!r}"
        )
    mean_code = _train_mean(reader, "expression")  # [200]
    regions = regions or CodeRegions.whole_code(len(mean_code))
    mouth = list(regions.mouth_dims)
    rows = {
        name: {"l2": [], "l2_mouth": [], "sync": [], "frames": []} for name in ("model", "null_condition", "mean_code")
    }
    truth_sync: list[float] = []
    diversity_values: dict[str, list[float]] = {"model": [], "null_condition": []}
    started = time.perf_counter()
    for number, key in enumerate(keys):
        clip = _load_clip(store, key, fps, max_frames)
        _check_features(clip.features, model, f"sequence {key!r}")
        predictions = {
            "model": model.generate(clip.features, steps=steps, guidance=guidance, seed=seed + number),
            "null_condition": model.generate(clip.features, steps=steps, guidance=0.0, seed=seed + number),
            "mean_code": np.broadcast_to(mean_code, clip.codes.shape),
        }
        for name, codes in predictions.items():
            rows[name]["l2"].append(expression_l2(codes, clip.codes))
            rows[name]["l2_mouth"].append(expression_l2(codes[:, mouth], clip.codes[:, mouth]))
            rows[name]["frames"].append(len(codes))
            sync = _lip_sync(clip, codes[:, regions.jaw_dim], fps)
            if sync is not None:
                rows[name]["sync"].append(sync)
        truth = _lip_sync(clip, clip.codes[:, regions.jaw_dim], fps)
        if truth is not None:
            truth_sync.append(truth)
        if number < n_diversity_sequences and n_samples >= 2:
            batch = np.repeat(clip.features[None], n_samples, axis=0)  # [K, T, A]: K noise draws
            diversity_values["model"].append(
                diversity(model.generate(batch, steps=steps, guidance=guidance, seed=seed + 1000 + number))
            )
            diversity_values["null_condition"].append(
                diversity(model.generate(batch, steps=steps, guidance=0.0, seed=seed + 1000 + number))
            )
        say(f"[{number + 1}/{len(keys)}] {key}: {len(clip.codes)} frames, expression_l2 {rows['model']['l2'][-1]:.4f}")

    table: Table = {}
    for name, values in rows.items():
        table[name] = {
            "expression_l2": _pooled(values["l2"], values["frames"]),
            "expression_l2_mouth": _pooled(values["l2_mouth"], values["frames"]),
            "lip_sync": float(np.mean(values["sync"])) if values["sync"] else 0.0,
            "diversity": float(np.mean(diversity_values[name])) if diversity_values.get(name) else 0.0,
        }
    table["ground_truth"] = {"lip_sync": float(np.mean(truth_sync)) if truth_sync else 0.0}
    table["data"] = {
        "n_sequences": float(len(keys)),
        "n_frames": float(sum(rows["model"]["frames"])),
        "n_lip_sync_sequences": float(len(truth_sync)),
        "n_diversity_sequences": float(len(diversity_values["model"])),
        "sampling_steps": float(steps),
        "seconds": time.perf_counter() - started,
    }
    return table


# ----------------------------------------------------------------------------- FLAME


def non_overlapping_windows(reader: SegmentReader, split: str = "test", flame: bool = False) -> np.ndarray:
    """Segment indices of `split` (with FLAME only, when `flame`) that do not overlap, per sequence
    (greedy by start frame)."""
    manifest = reader.manifest
    sequences = np.asarray(manifest.column("sequence").to_pylist(), dtype=object)
    starts = manifest.column("start_frame").to_numpy()
    lengths = manifest.column("n_frames").to_numpy()
    kept, next_free = [], {}
    for index in sorted(reader.indices(split, flame=flame), key=lambda i: (sequences[i], starts[i])):
        if starts[index] >= next_free.get(sequences[index], -1):
            kept.append(index)
            next_free[sequences[index]] = starts[index] + lengths[index]
    return np.asarray(kept, dtype=np.int64)


def _templates(reader: SegmentReader, indices: np.ndarray) -> np.ndarray:
    """Per-window neutral template [N, V, 3]: the sequence's own when stored, else the mean one."""
    if reader.has("flame_templates"):
        rows = reader.manifest.column("flame_index").to_numpy()[indices]
        return reader.static("flame_templates")[rows].astype(np.float32)
    if reader.has("flame_template"):
        return np.repeat(reader.static("flame_template")[None].astype(np.float32), len(indices), axis=0)
    raise EvaluationError(f"segment store {str(reader.path)!r} has no flame_templates or flame_template")


def evaluate_flame_model(
    model: MotionModel,
    reader: SegmentReader,
    regions: VertexRegions,
    split: str = "test",
    n_samples: int = 3,
    n_diversity_windows: int = 2,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    units_to_mm: float = 1000.0,
    max_windows: int | None = None,
    progress: Progress | None = None,
) -> Table:
    """LVE, LVE in mm, MVE, FDD and diversity of a FLAME-variant model on non-overlapping `split`
    windows, against the null condition and the mean / zero offsets (see the module docstring).

    `units_to_mm` converts vertex units to millimeters for `lve_mm` (1000 for FLAME's meters).
    """
    if model.config.data.variant != "flame":
        raise EvaluationError(f"evaluate_flame_model needs a FLAME-variant model, got {model.config.data.variant!r}")
    if "flame_offsets" not in reader.fields:
        raise EvaluationError(f"segment store {str(reader.path)!r} has no flame_offsets (built without FLAME tracking)")
    say = progress or (lambda message: None)
    windows = non_overlapping_windows(reader, split, flame=True)
    if max_windows is not None:
        windows = windows[:max_windows]
    if len(windows) == 0:
        raise EvaluationError(f"segment store {str(reader.path)!r} has no {split!r} segments with FLAME")
    n_vertices = reader.item_shape("flame_offsets")[1]
    if regions.n_vertices is not None and regions.n_vertices != n_vertices:
        raise EvaluationError(
            f"the regions are for a {regions.n_vertices}-vertex topology, segment store {str(reader.path)!r} has {n_vertices}"
        )
    mean_offsets = _train_mean(reader, "flame_offsets")  # [V, 3]
    names = ("model", "null_condition", "mean_offsets", "zero_offsets")
    sums: dict[str, dict[str, list[float]]] = {name: {"lve": [], "lve_mm": [], "mve": [], "fdd": []} for name in names}
    diversity_values: dict[str, list[float]] = {"model": [], "null_condition": []}
    started = time.perf_counter()
    for batch_number, start in enumerate(range(0, len(windows), batch_size)):
        indices = windows[start : start + batch_size]
        audio = reader.read("audio_features", indices)
        _check_features(audio, model, f"segment store {str(reader.path)!r}")
        truth = reader.read("flame_offsets", indices)  # [B, L, V, 3]
        templates = _templates(reader, indices)[:, None]  # [B, 1, V, 3]
        predictions = {
            "model": model.generate(audio, steps=steps, guidance=guidance, seed=seed + batch_number),
            "null_condition": model.generate(audio, steps=steps, guidance=0.0, seed=seed + batch_number),
            "mean_offsets": np.broadcast_to(mean_offsets, truth.shape),
            "zero_offsets": np.zeros_like(truth),
        }
        for name, offsets in predictions.items():
            for b in range(len(indices)):
                pred, gt = templates[b] + offsets[b], templates[b] + truth[b]  # [L, V, 3]
                sums[name]["lve"].append(lip_vertex_error(pred, gt, regions.lip))
                sums[name]["lve_mm"].append(lip_vertex_error_mm(pred, gt, regions.lip, units_to_mm))
                sums[name]["mve"].append(mean_vertex_error(pred, gt))
                # FDD averages per-sequence terms, so one window at a time gives the same mean.
                sums[name]["fdd"].append(face_dynamics_deviation([pred], [gt], [templates[b, 0]], regions.upper_face))
        if start < n_diversity_windows and n_samples >= 2:
            for b in range(min(len(indices), n_diversity_windows - start)):
                batch = np.repeat(audio[b : b + 1], n_samples, axis=0)
                for name, weight in (("model", guidance), ("null_condition", 0.0)):
                    samples = model.generate(batch, steps=steps, guidance=weight, seed=seed + 1000 + start + b)
                    diversity_values[name].append(diversity(samples))
        say(f"windows {start + len(indices)}/{len(windows)}")

    table: Table = {}
    for name in names:
        # Equal-length windows: the mean over windows is the mean over all pooled frames.
        table[name] = {
            "lve": float(np.mean(sums[name]["lve"])),
            "lve_mm": float(np.mean(sums[name]["lve_mm"])),
            "mve": float(np.mean(sums[name]["mve"])),
            "fdd": float(np.mean(sums[name]["fdd"])),
            "diversity": float(np.mean(diversity_values[name])) if diversity_values.get(name) else 0.0,
        }
    table["data"] = {
        "n_windows": float(len(windows)),
        "n_frames": float(len(windows) * reader.item_shape("flame_offsets")[0]),
        "n_diversity_windows": float(len(diversity_values["model"])),
        "sampling_steps": float(steps),
        "seconds": time.perf_counter() - started,
    }
    return table


# ----------------------------------------------------------------------------- the check


PRIMARY_METRICS = ("expression_l2_mouth", "lve")  # lower is better; NPHM and FLAME tables


def better_than_baseline(table: Table, baselines: Iterable[str] = ("null_condition",)) -> tuple[bool, str]:
    """Does the model beat the audio-free baselines on the metric that needs the audio?

    Rule: for each primary metric in the `model` row (`expression_l2_mouth` for NPHM, `lve` for
    FLAME), the model's value must be strictly below every requested baseline row's. The default
    baseline is the null condition (the same network without audio, sampled the same way): a
    sample is compared with a sample, so beating it means the audio is used. Mean-code/offset rows
    are reported for reading but not required by default: for any sampler, E|x - y| over two
    draws is up to sqrt(2) x the spread around the mean, so a correct stochastic model can lose to
    the mean on L2 metrics. Returns (passed, a one-line explanation).
    """
    model = table.get("model")
    if not model:
        return False, "no 'model' row in the metrics table"
    metrics = [m for m in PRIMARY_METRICS if m in model]
    if not metrics:
        return False, f"the model row has none of the metrics {PRIMARY_METRICS}; it has {sorted(model)}"
    verdicts, passed = [], True
    for baseline in baselines:
        row = table.get(baseline)
        if row is None:
            passed = False
            verdicts.append(f"baseline {baseline!r} missing")
            continue
        for metric in metrics:
            if metric not in row:
                passed = False
                verdicts.append(f"{baseline} has no {metric}")
                continue
            ours, theirs = model[metric], row[metric]
            ok = bool(np.isfinite(ours) and np.isfinite(theirs) and ours < theirs)
            passed &= ok
            verdicts.append(f"{metric}: model {ours:.4g} {'<' if ok else 'not <'} {baseline} {theirs:.4g}")
    return passed, ("passed: " if passed else "failed: ") + "; ".join(verdicts)


# ----------------------------------------------------------------------------- renders


class RaggedMeshSequence(Sequence[MeshFrame]):
    """The `nphm_meshes` component (topology varies per frame), read frame by frame from the store."""

    def __init__(self, store: SequenceStore, key: str, n_frames: int | None = None):
        self.group = store.open_component(key, "nphm_meshes")
        self.vertex_offsets = self.group["vertex_offsets"][...]
        self.face_offsets = self.group["face_offsets"][...]
        available = len(self.vertex_offsets) - 1
        self.n = available if n_frames is None else min(n_frames, available)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, frame):  # type: ignore[override]
        if isinstance(frame, slice):
            return [self[i] for i in range(*frame.indices(self.n))]
        if not 0 <= frame < self.n:
            raise IndexError(f"frame {frame} out of range [0, {self.n})")
        v0, v1 = self.vertex_offsets[frame : frame + 2]
        f0, f1 = self.face_offsets[frame : frame + 2]
        return self.group["vertices"][v0:v1], self.group["faces"][f0:f1]  # faces are frame-local


@dataclass
class EvaluationRenders:
    videos: list[Path]
    preview_png: Path | None  # first frame of the first video, for asset metadata
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def render_evaluation_videos(
    model: MotionModel,
    reader: SegmentReader,
    store: SequenceStore,
    out_dir: str | Path,
    *,
    n_sequences: int = 2,
    split: str = "test",
    unseen_audio: Sequence[str | Path] = (),
    encoder_path: str | Path | None = None,
    head: str = "analytic",
    nphm_checkpoint: str | Path | None = None,
    identity_code: np.ndarray | None = None,
    resolution: int = 48,
    video_size: int = 256,
    render_config: RenderConfig | None = None,
    max_seconds: float = 10.0,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    cpu_threads: int | None = None,
    progress: Progress | None = None,
) -> EvaluationRenders:
    """MP4s with audio: ground truth beside generated for the first `n_sequences` held-out
    sequences and generated-only for every `unseen_audio` file, all cut to `max_seconds`.

    Ground truth is the stored `nphm_meshes` when present, else the ground-truth codes meshed with
    the same head. The unseen files are cleaned and encoded like `facetalk animate` does
    (`encoder_path` is then required, with the width the model was trained on); they are voiced
    by `identity_code` (default zeros). Returns the videos and a preview PNG of the first one.
    """
    if model.config.data.variant != "nphm":
        raise EvaluationError(
            "render_evaluation_videos renders NPHM-variant models; use render_flame_evaluation_videos"
        )
    if unseen_audio and encoder_path is None:
        raise InferenceError(f"rendering unseen audio {[str(p) for p in unseen_audio]} needs encoder_path")
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = render_config or talking_head_render_config(video_size)
    head_model = load_head(head, nphm_checkpoint)
    fps = float(model.meta.fps)
    max_frames = max(1, round(max_seconds * fps))
    started = time.perf_counter()
    result = EvaluationRenders([], None)

    keys = [
        k
        for k in split_sequences(reader, split)
        if store.attrs(k, "nphm") is not None and store.attrs(k, "audio_features") is not None
    ]
    for number, key in enumerate(keys[:n_sequences]):
        clip = _load_clip(store, key, fps, max_frames)
        _check_features(clip.features, model, f"sequence {key!r}")
        codes = model.generate(clip.features, steps=steps, guidance=guidance, seed=seed + number)
        identity = identity_for(head_model, clip.identity if identity_code is None else identity_code)
        if store.attrs(key, "nphm_meshes") is not None:
            truth = RaggedMeshSequence(store, key, len(codes))
        else:
            result.notes.append(f"{key}: no nphm_meshes stored; ground truth meshed from its codes")
            truth = expression_meshes(head_model, identity, clip.codes, resolution)
        path = out_dir / f"{split}_{key}.mp4"
        render_expression_video(
            head_model, identity, codes, path, audio_samples=clip.audio, sample_rate=clip.sample_rate,
            fps=fps, resolution=resolution, render_config=config, ground_truth=truth,
            preview_png=out_dir / "preview.png" if result.preview_png is None else None, cpu_threads=cpu_threads,
        )  # fmt: skip
        if result.preview_png is None:
            result.preview_png = out_dir / "preview.png"
        result.videos.append(path)
        say(f"rendered {path} ({len(codes)} frames)")

    if unseen_audio:
        encoder = load_encoder_for(model, "<evaluated model>", encoder_path, next(model.parameters()).device)
        identity = identity_for(head_model, identity_code)
        for number, audio_path in enumerate(unseen_audio):
            cleaned = clean_audio_file(audio_path)
            features = audio_features_for(cleaned, encoder, fps, max_seconds=max_seconds)
            codes = model.generate(features, steps=steps, guidance=guidance, seed=seed + number)
            path = out_dir / f"unseen_{Path(audio_path).stem}.mp4"
            render_expression_video(
                head_model, identity, codes, path, audio_samples=cleaned.samples, sample_rate=cleaned.sample_rate,
                fps=fps, resolution=resolution, render_config=config, cpu_threads=cpu_threads,
                preview_png=out_dir / "preview.png" if result.preview_png is None else None,
            )  # fmt: skip
            if result.preview_png is None:
                result.preview_png = out_dir / "preview.png"
            result.videos.append(path)
            say(f"rendered {path} ({len(codes)} frames)")
    result.seconds = time.perf_counter() - started
    return result


def render_flame_evaluation_videos(
    model: MotionModel,
    reader: SegmentReader,
    out_dir: str | Path,
    *,
    n_windows: int = 2,
    split: str = "test",
    video_size: int = 256,
    render_config: RenderConfig | None = None,
    steps: int = 50,
    guidance: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationRenders:
    """Ground truth beside generated for the first `n_windows` held-out FLAME windows (no audio:
    the segment store keeps features, not waveforms). Faces come from the store's `flame_faces`."""
    if model.config.data.variant != "flame":
        raise EvaluationError(
            f"render_flame_evaluation_videos needs a FLAME-variant model, got {model.config.data.variant!r}"
        )
    if not reader.has("flame_faces"):
        raise EvaluationError(f"segment store {str(reader.path)!r} has no flame_faces to render")
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = reader.static("flame_faces")
    config = render_config or talking_head_render_config(video_size)
    windows = non_overlapping_windows(reader, split, flame=True)[:n_windows]
    sequences = reader.manifest.column("sequence").to_pylist()
    starts = reader.manifest.column("start_frame").to_numpy()
    started = time.perf_counter()
    result = EvaluationRenders([], None)
    for number, index in enumerate(windows):
        audio = reader.read("audio_features", [index])[0]
        _check_features(audio, model, f"segment store {str(reader.path)!r}")
        template = _templates(reader, np.array([index]))[0]
        generated = template + model.generate(audio, steps=steps, guidance=guidance, seed=seed + number)
        truth = template + reader.read("flame_offsets", [index])[0]
        path = out_dir / f"{split}_flame_{sequences[index]}_{int(starts[index])}.mp4"
        render_talking_head(
            generated, faces, out_mp4=path, fps=float(model.meta.fps), render_config=config, ground_truth=truth,
            ground_truth_faces=faces, preview_png=out_dir / "preview_flame.png" if result.preview_png is None else None,
        )  # fmt: skip
        if result.preview_png is None:
            result.preview_png = out_dir / "preview_flame.png"
        result.videos.append(path)
        say(f"rendered {path}")
    result.seconds = time.perf_counter() - started
    return result
