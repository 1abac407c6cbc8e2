"""Deterministic demo dataset in the published FaceTalk layout, from the analytic head.

    <root>/<ID>_<SEQ>/audio/cleaned_audio.wav                16-bit PCM (one identity at 44.1 kHz stereo)
    <root>/<ID>_<SEQ>/audio/wave2vec_audio_feats.pkl         pickled float32 [T50, 768] stand-in features
    <root>/<ID>_<SEQ>/nphm_tracking/nphm_expressions/frame_0000.npz   "expression" [200], "identity" [1344]
    <root>/<ID>_<SEQ>/nphm_tracking/nphm_meshes/frame_0000.ply        marching cubes per frame (topology varies)
    <root>/<ID>_<SEQ>/flame_2023_tracking/flame_2023_template.ply     identity's neutral mesh, fixed topology
    <root>/<ID>_<SEQ>/flame_2023_tracking/flame_meshes/frame_0000.ply per-frame vertices, same faces
    <root>/_meta/regions.json        {"topology", "n_vertices", "lip": [...], "upper_face": [...]}
    <root>/_meta/unseen_audio/*.wav  speech from voices not in the dataset
    <root>/_meta/demo_dataset.json   marks the root as the demo dataset (storage.layout.is_demo_dataset)

Names: identities `ID00`, `ID01`, ... and sequences `SEN00`, ... (no underscores inside, so the
identity is the text before the first underscore). Frames are numbered from 0, T = round(seconds
* fps), and every audio file lasts T / fps seconds (to the nearest sample). Same config -> the
same bytes in every file (fixed seeds, no timestamps in archives), so the dataset can be
regenerated instead of shipped. Existing files under root are overwritten; others are left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import multiprocessing
import pickle
import time
import wave
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.heads.analytic import EXPRESSION_DIMS, AnalyticHead
from ops.demo.motion import MotionStyle, expression_track, random_identity_code
from ops.demo.phonetic_speech import Speaker, demo_speech, resolve_engine
from ops.demo.topology import (
    DemoTopology,
    build_demo_topology,
    identity_canonical_vertices,
    pose_vertices,
)
from ops.geometry.meshing import extract_mesh
from ops.tracking.ply import write_ply
from storage.layout import DEMO_MARKER

_FEATURE_DIM = 768
_FEATURE_RATE = 50  # Wav2Vec2 CNN frames per second
_UNSEEN_CLIPS = 2
MOUTH_EXPRESSIONS = ("jaw_open", "lip_round", "lip_stretch", "lip_press", "lip_tuck")


@dataclass(frozen=True)
class DemoDataConfig:
    n_identities: int = 10  # split by identity: 6 train, 2 val, 2 test (6 test sequences)
    n_sequences: int = 3  # per identity
    seconds: float = 4.0
    fps: int = 24
    sample_rate: int = 16000
    nphm_mesh_resolution: int = 64  # = the renders' grid, so both panels are alike; 0 skips the meshes (the slow part)
    seed: int = 0
    speech: str = "auto"  # "espeak-ng" (phonetic), "formant" (the fallback), "auto": espeak-ng when installed

    def __post_init__(self) -> None:
        if self.n_identities < 1 or self.n_identities > 100 or self.n_sequences < 1 or self.n_sequences > 100:
            raise ValueError("n_identities and n_sequences must be in 1..100")
        if self.seconds <= 0 or self.fps <= 0 or self.sample_rate < 8000:
            raise ValueError("seconds and fps must be > 0 and sample_rate >= 8000")
        if self.nphm_mesh_resolution != 0 and self.nphm_mesh_resolution < 16:
            raise ValueError("nphm_mesh_resolution must be 0 (skip) or >= 16")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        resolve_engine(self.speech)  # a clear error for a bad or unusable engine, before any work

    @property
    def n_frames(self) -> int:
        return round(self.seconds * self.fps)


@dataclass(frozen=True)
class DemoDatasetSummary:
    root: Path
    n_identities: int
    n_sequences: int  # in total
    n_frames: int  # in total, over all sequences
    sequence_dirs: tuple[Path, ...]
    regions_path: Path
    unseen_audio: tuple[Path, ...]
    seconds: float  # wall time of the generation
    n_vertices: int = field(default=0)  # of the fixed topology
    speech: str = "formant"  # the engine that spoke the audio


def sequence_name(identity_index: int, sequence_index: int) -> str:
    return f"ID{identity_index:02d}_SEN{sequence_index:02d}"


def generate_demo_dataset(
    root: Path,
    config: DemoDataConfig = DemoDataConfig(),
    progress: Callable[[str], None] | None = None,
    workers: int = 1,
) -> DemoDatasetSummary:
    """Write the demo dataset under `root` (see the module doc) and say what was written.

    `workers` > 1 writes identities in parallel processes; the files are the same either way.
    """
    started = time.perf_counter()
    root = Path(root)
    say = progress or (lambda message: None)
    n_frames = config.n_frames
    engine = resolve_engine(config.speech)
    config = dataclasses.replace(config, speech=engine)  # workers use the same engine as the marker says
    with _single_threaded_torch():
        topology = build_demo_topology(AnalyticHead())
        meta = root / "_meta"
        meta.mkdir(parents=True, exist_ok=True)
        regions_path = meta / "regions.json"
        _write_regions(regions_path, topology)
        # Tells `facetalk ingest` this root may use the random demo encoder (storage.layout.is_demo_dataset).
        (root / DEMO_MARKER).write_text(
            json.dumps({"generator": "ops.demo.dataset", "seed": config.seed, "speech": engine}) + "\n"
        )
        sequence_dirs: list[Path] = []
        if workers > 1 and config.n_identities > 1:
            context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
            with ProcessPoolExecutor(min(workers, config.n_identities), mp_context=context) as pool:
                jobs = [pool.submit(_write_identity, root, i, config, topology) for i in range(config.n_identities)]
                for job in jobs:
                    for folder in job.result():
                        sequence_dirs.append(folder)
                        say(f"{folder.name}: {n_frames} frames")
        else:
            for i in range(config.n_identities):
                for folder in _write_identity(root, i, config, topology):
                    sequence_dirs.append(folder)
                    say(f"{folder.name}: {n_frames} frames")
        unseen = []
        unseen_dir = meta / "unseen_audio"
        unseen_dir.mkdir(exist_ok=True)
        for k in range(_UNSEEN_CLIPS):
            rng = np.random.default_rng([config.seed, 1_000_000 + k])
            clip = demo_speech(
                n_frames / config.fps, config.fps, config.sample_rate, Speaker.random(rng), rng, config.speech
            )
            path = unseen_dir / f"unseen_{k:02d}.wav"
            _write_wav(path, clip.waveform, config.sample_rate, channels=1)
            unseen.append(path)
        say(f"unseen audio: {len(unseen)} clips")
    return DemoDatasetSummary(
        root=root,
        n_identities=config.n_identities,
        n_sequences=len(sequence_dirs),
        n_frames=len(sequence_dirs) * n_frames,
        sequence_dirs=tuple(sequence_dirs),
        regions_path=regions_path,
        unseen_audio=tuple(unseen),
        seconds=time.perf_counter() - started,
        n_vertices=topology.n_vertices,
        speech=engine,
    )


def _write_identity(root: Path, i: int, config: DemoDataConfig, topology: DemoTopology) -> list[Path]:
    """All sequences of identity i; seeded by (seed, i[, j]) only, so any process order gives the same files."""
    with _single_threaded_torch():
        head = AnalyticHead()
        rng = np.random.default_rng([config.seed, i])
        identity = random_identity_code(rng)
        speaker, style = Speaker.random(rng), MotionStyle.random(rng)
        canonical = identity_canonical_vertices(head, topology, torch.from_numpy(identity))
        # One identity is recorded at 44.1 kHz stereo, as raw inputs often are.
        odd_audio = config.n_identities > 1 and i == 1
        sample_rate, channels = (44100, 2) if odd_audio else (config.sample_rate, 1)
        folders = []
        for j in range(config.n_sequences):
            folder = root / sequence_name(i, j)
            seq_rng = np.random.default_rng([config.seed, i, j])
            _write_sequence(
                folder, head, topology, identity, canonical, speaker, style, sample_rate, channels, config, seq_rng
            )
            folders.append(folder)
        return folders


def _write_sequence(
    folder: Path,
    head: AnalyticHead,
    topology: DemoTopology,
    identity: np.ndarray,
    canonical: np.ndarray,
    speaker: Speaker,
    style: MotionStyle,
    sample_rate: int,
    channels: int,
    config: DemoDataConfig,
    rng: np.random.Generator,
) -> None:
    n_frames = config.n_frames
    clip = demo_speech(n_frames / config.fps, config.fps, sample_rate, speaker, rng, config.speech)
    codes = expression_track(clip, config.fps, style, rng)  # [T, 200]
    audio_dir = folder / "audio"
    expressions_dir = folder / "nphm_tracking" / "nphm_expressions"
    nphm_mesh_dir = folder / "nphm_tracking" / "nphm_meshes"
    flame_dir = folder / "flame_2023_tracking"
    for directory in (audio_dir, expressions_dir, flame_dir / "flame_meshes"):
        directory.mkdir(parents=True, exist_ok=True)
    _write_wav(audio_dir / "cleaned_audio.wav", clip.waveform, sample_rate, channels)
    features = _stand_in_features(clip.waveform, sample_rate, n_frames / config.fps)
    (audio_dir / "wave2vec_audio_feats.pkl").write_bytes(pickle.dumps(features, protocol=4))

    identity_t = torch.from_numpy(identity)
    neutral = torch.zeros(head.expression_dim)
    write_ply(
        flame_dir / "flame_2023_template.ply", pose_vertices(head, canonical, identity_t, neutral), topology.faces
    )
    if config.nphm_mesh_resolution:
        nphm_mesh_dir.mkdir(parents=True, exist_ok=True)
    for t in range(n_frames):
        frame = f"frame_{t:04d}"
        _write_npz(expressions_dir / f"{frame}.npz", expression=codes[t], identity=identity)
        expression = torch.from_numpy(codes[t])
        vertices = pose_vertices(head, canonical, identity_t, expression)
        write_ply(flame_dir / "flame_meshes" / f"{frame}.ply", vertices, topology.faces)
        if config.nphm_mesh_resolution:
            mesh = extract_mesh(head, identity_t, expression, resolution=config.nphm_mesh_resolution)
            write_ply(nphm_mesh_dir / f"{frame}.ply", mesh.vertices, mesh.faces)


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """The SDF runs many small elementwise ops; on a busy box thread hand-offs cost more than they save."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_regions(path: Path, topology: DemoTopology) -> None:
    regions = {
        "topology": topology.name,
        "n_vertices": topology.n_vertices,
        "lip": topology.lip.tolist(),
        "upper_face": topology.upper_face.tolist(),
        "expression": {  # the analytic head's code layout, for the mouth metrics of evaluation
            "mouth_dims": [EXPRESSION_DIMS[name] for name in MOUTH_EXPRESSIONS],
            "jaw_dim": EXPRESSION_DIMS["jaw_open"],
        },
    }
    path.write_text(json.dumps(regions) + "\n")


def _write_wav(path: Path, waveform: np.ndarray, sample_rate: int, channels: int) -> None:
    """16-bit PCM; a stereo file gets a slightly quieter right channel (not a pure copy)."""
    samples = np.clip(waveform, -1.0, 1.0)
    if channels == 2:
        samples = np.stack([samples, 0.9 * samples], axis=1)
    pcm = np.round(samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but with fixed zip timestamps so the bytes depend on the data only."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    path.write_bytes(buffer.getvalue())


def _stand_in_features(waveform: np.ndarray, sample_rate: int, duration: float) -> np.ndarray:
    """[round(duration * 50), 768] float32: log band energies per 20 ms, fixed random projection.

    Only there because the published layout has the file; the pipeline computes its own
    features from the audio and never trusts this pickle.
    """
    n = round(duration * _FEATURE_RATE)
    hop = sample_rate / _FEATURE_RATE
    window = int(hop)
    bands = 16
    energies = np.zeros((n, bands))
    for k in range(n):
        start = round(k * hop)
        chunk = waveform[start : start + window]
        if len(chunk) < 8:
            continue
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(len(chunk)))) ** 2
        energies[k] = [band.sum() for band in np.array_split(spectrum, bands)]
    projection = np.random.default_rng(768).standard_normal((bands, _FEATURE_DIM)) / np.sqrt(bands)
    return np.tanh(np.log(energies + 1e-6) @ projection / 10.0).astype(np.float32)
