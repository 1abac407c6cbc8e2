"""Evaluation on a tiny hand-built store (sequence store + segment store from it, split by identity):
metric tables with the expected rows and finite values, the blocking rule, and evaluation renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from models.checkpoint import load_motion_model
from models.config import config_from_dict
from models.heads.analytic import EXPRESSION_DIMS
from models.train import train
from ops.dataset.segmenting import SegmentingConfig, build_training_segments
from ops.evaluation.evaluate import evaluate_flame_model, evaluate_nphm_model
from ops.evaluation.export import PeerExport
from ops.evaluation.gate import family_gate
from ops.evaluation.metrics import audio_rms_per_frame
from ops.evaluation.regions import CodeRegions, EvaluationError, VertexRegions, read_regions
from ops.evaluation.renders import non_overlapping_windows, render_evaluation_videos, render_flame_evaluation_videos
from ops.inference import InferenceError
from ops.tracking.errors import TrackingError
from ops.tracking.ingest import ingest_nphm_meshes
from ops.tracking.ply import write_ply
from storage.layout import SequenceFolder
from storage.segments import SegmentReader
from storage.sequence_store import SequenceStore
from tests.builders import grid_mesh, speech_like
from tests.video_tools import probe_video

pytestmark = pytest.mark.slow

AUDIO_DIM = 64  # = the tiny encoder fixture's width, so unseen audio can be encoded
FPS, FRAMES, RATE = 24, 72, 16_000
N_IDENTITIES = 6  # -> 4 train, 1 val, 1 test identity
LIP = np.arange(0, 6)  # first row of the 6 x 6 grid mesh
UPPER_FACE = np.arange(24, 36)


def _write_sequence(store: SequenceStore, key: str, seed: int, meshes_root: Path | None) -> None:
    """Audio whose loudness drives both the jaw code and the grid's 'lip' row, like speech does;
    the grid's top rows ('upper face') twitch at random."""
    rng = np.random.default_rng(seed)
    audio = speech_like(FRAMES / FPS, RATE, seed)
    loudness = audio_rms_per_frame(audio, RATE, FRAMES, FPS)
    jaw = (loudness / loudness.max()).astype(np.float32)  # [T]
    features = 0.3 * rng.standard_normal((FRAMES, AUDIO_DIM)).astype(np.float32)
    features[:, :8] += 2.0 * jaw[:, None]
    codes = 0.05 * rng.standard_normal((FRAMES, 200)).astype(np.float32)
    codes[:, 0] = jaw
    template, faces = grid_mesh()
    vertices = np.repeat(template[None], FRAMES, axis=0)
    vertices[:, LIP, 1] -= 0.05 * jaw[:, None]
    vertices[:, UPPER_FACE, 1] += 0.01 * rng.standard_normal(FRAMES).astype(np.float32)[:, None]  # brows twitch
    store.write_component(key, "audio", {"samples": audio}, {"sample_rate": RATE, "n_samples": len(audio)})
    store.write_component(key, "audio_features", {"features": features}, {"fps": FPS, "n_frames": FRAMES})
    store.write_component(key, "nphm", {"expression": codes, "identity": np.zeros(1344, np.float32)}, {"fps": FPS})
    store.write_component(key, "flame", {"vertices": vertices, "template": template, "faces": faces}, {"fps": FPS})
    if meshes_root is not None:  # per-frame PLY meshes in a dataset, topology changing frame to frame
        folder = meshes_root / key / "nphm_tracking" / "nphm_meshes"
        folder.mkdir(parents=True)
        for k in range(FRAMES):
            write_ply(folder / f"frame_{k:04d}.ply", template + 0.01 * k, faces[: len(faces) - k % 3])
        ingest_nphm_meshes(SequenceFolder(key, meshes_root / key), store)  # by reference (the default)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dataset")


@pytest.fixture(scope="module")
def data(tmp_path_factory, dataset_root) -> tuple[SequenceStore, SegmentReader]:
    root = tmp_path_factory.mktemp("store")
    store = SequenceStore(root)
    keys = []
    for identity in range(N_IDENTITIES):
        for sequence in range(2):
            key = f"ID{identity}_seq{sequence}"
            _write_sequence(
                store, key, seed=10 * identity + sequence, meshes_root=dataset_root if sequence == 0 else None
            )
            keys.append(key)
    result = build_training_segments(store, keys, SegmentingConfig(segment_frames=24, stride=12))
    return store, SegmentReader(result.path)


def _train(reader: SegmentReader, out: Path, variant: str):
    model = {"motion_dim": 200 if variant == "nphm" else 8, "audio_dim": AUDIO_DIM, "width": 32, "layers": 1,
             "heads": 2, "ff": 64, "dropout": 0.0}  # fmt: skip
    config = {"model": model, "train": {"batch_size": 8, "max_steps": 30, "lr": 3e-3, "val_every": 30, "val_batches": 1,
              "warmup_steps": 2, "num_workers": 0, "log_every": 10, "cpu_threads": 1}}  # fmt: skip
    if variant == "flame":
        config["data"] = {"variant": "flame", "pca_components": 8, "pca_fit_frames": 500}
    return load_motion_model(train(config_from_dict(config), reader.path, out).model_checkpoint)


@pytest.fixture(scope="module")
def nphm_model(data, tmp_path_factory):
    return _train(data[1], tmp_path_factory.mktemp("nphm_model"), "nphm")


@pytest.fixture(scope="module")
def flame_model(data, tmp_path_factory):
    return _train(data[1], tmp_path_factory.mktemp("flame_model"), "flame")


def test_the_fixture_has_two_test_sequences_of_one_identity(data):
    _, reader = data
    sequences = reader.sequence_names("test")
    assert len(sequences) == 2 and len({s.split("_")[0] for s in sequences}) == 1


NPHM_METRICS = {"expression_l2", "expression_l2_mouth", "lip_sync", "lip_sync_offset", "audio_energy_sync", "diversity"}
FLAME_METRICS = {
    "lve",
    "lve_mm",
    "mve",
    "fdd",
    "fdd_abs",
    "lip_sync",
    "lip_sync_offset",
    "audio_energy_sync",
    "diversity",
}
LIP_ROWS = np.arange(0, 12)  # rows 0 (moves with the jaw) and 1 (still): the lip split at its median height


def test_nphm_metrics_table(data, nphm_model):
    store, reader = data
    messages = []
    regions = CodeRegions(
        tuple(EXPRESSION_DIMS[n] for n in ("jaw_open", "lip_round", "lip_stretch")), EXPRESSION_DIMS["jaw_open"]
    )
    evaluation = evaluate_nphm_model(nphm_model, reader, store, regions=regions, steps=4, n_samples=2,
                                     progress=messages.append)  # fmt: skip
    table = evaluation.table
    assert set(table) == {"model", "null_condition", "mean_code", "zero_code", "ground_truth", "data"}
    for row in ("model", "null_condition", "mean_code", "zero_code"):
        assert set(table[row]) == NPHM_METRICS, row
    assert all(np.isfinite(v) for row in table.values() for v in row.values())
    # Whole sequences, every row on the same frames; K = 2 samples on every test sequence.
    assert table["data"]["n_sequences"] == 2 and table["data"]["n_frames"] == 2 * FRAMES
    assert table["data"]["diversity_samples_per_sequence"] == 2
    assert table["model"]["diversity"] > 0 and table["mean_code"]["diversity"] == 0
    # The ground truth is the ceiling of the lip-sync measure; a constant mouth scores 0 on both measures.
    assert table["ground_truth"]["lip_sync"] == pytest.approx(1.0) and table["ground_truth"]["lip_sync_offset"] == 0
    for row in ("mean_code", "zero_code"):
        assert table[row]["lip_sync"] == 0.0 and table[row]["audio_energy_sync"] == 0.0
    assert table["ground_truth"]["audio_energy_sync"] > 0.9  # the fixture's jaw *is* the audio loudness
    assert table["model"]["expression_l2_mouth"] < table["model"]["expression_l2"]
    assert table["zero_code"]["expression_l2"] > table["mean_code"]["expression_l2"]  # the fixture's codes are not 0
    assert len(messages) == 2
    assert set(evaluation.tracks) == set(reader.sequence_names("test"))
    tracks = next(iter(evaluation.tracks.values()))
    assert {"ground_truth", "model", "null_condition", "audio_envelope"} <= set(tracks)
    assert all(len(track) == FRAMES for track in tracks.values())


def test_nphm_code_regions_are_a_parameter(data, nphm_model):
    store, reader = data
    narrow = evaluate_nphm_model(nphm_model, reader, store, steps=2, n_samples=0, max_sequences=1,
                                 regions=CodeRegions(mouth_dims=(0,), jaw_dim=0)).table  # fmt: skip
    wide = evaluate_nphm_model(nphm_model, reader, store, steps=2, n_samples=0, max_sequences=1,
                               regions=CodeRegions(mouth_dims=tuple(range(50)), jaw_dim=0)).table  # fmt: skip
    assert narrow["model"]["expression_l2"] == pytest.approx(wide["model"]["expression_l2"])
    assert narrow["model"]["expression_l2_mouth"] < wide["model"]["expression_l2_mouth"]
    assert narrow["data"]["diversity_samples_per_sequence"] == 0 and "diversity" not in narrow["model"]
    with pytest.raises(EvaluationError, match="do not fit a 200-d code"):
        evaluate_nphm_model(nphm_model, reader, store, steps=2, regions=CodeRegions((0, 300), 0))


def test_max_frames_cuts_every_row_alike(data, nphm_model):
    store, reader = data
    table = evaluate_nphm_model(nphm_model, reader, store, steps=2, n_samples=0, max_frames=30).table
    assert table["data"]["n_frames"] == 2 * 30


def test_whole_sequences_include_frames_no_window_covers(data):
    store, _ = data
    # 30-frame windows every 12 frames end at frame 66 of 72; evaluation still sees all 72.
    wide = SegmentReader(
        build_training_segments(
            store, store.sequences_with("nphm"), SegmentingConfig(segment_frames=30, stride=12), keep_versions=10
        ).path
    )
    key = wide.sequence_names("test")[0]
    starts = wide.manifest.column("start_frame").to_numpy()[wide.indices("test")]
    assert starts.max() + 30 < FRAMES
    np.testing.assert_array_equal(wide.whole_sequence(key, "expression"), store.read(key, "nphm", "expression"))
    assert wide.whole_sequence(key, "flame_offsets").shape == (FRAMES, 36, 3)


def test_flame_metrics_table(data, flame_model):
    store, reader = data
    regions = VertexRegions(LIP_ROWS, UPPER_FACE, n_vertices=36)
    table = evaluate_flame_model(flame_model, reader, regions, store, steps=4, n_samples=2).table
    assert set(table) == {"model", "null_condition", "mean_offsets", "zero_offsets", "ground_truth", "data"}
    for row in ("model", "null_condition", "mean_offsets", "zero_offsets"):
        assert set(table[row]) == FLAME_METRICS, row
    assert all(np.isfinite(v) for row in table.values() for v in row.values())
    assert table["data"]["n_sequences"] == 2 and table["data"]["n_frames"] == 2 * FRAMES  # whole sequences
    zero = table["zero_offsets"]
    assert (
        zero["lve"] > 0 and zero["fdd"] > 0 and zero["fdd_abs"] == pytest.approx(zero["fdd"])
    )  # the template is still
    assert zero["lve_mm"] == pytest.approx(1000 * np.sqrt(zero["lve"]), rel=0.5)
    assert zero["lip_sync"] == 0.0 and table["mean_offsets"]["lip_sync"] == 0.0
    assert table["ground_truth"]["lip_sync"] == pytest.approx(1.0)
    assert table["ground_truth"]["audio_energy_sync"] > 0.9  # the fixture's lip row follows the loudness


def test_flame_export_rescored_by_the_peer_formula_agrees(data, flame_model, tmp_path):
    """The exported arrays, scored by docs/peer_metrics.py (a standalone transcription of the
    FaceDiffuser / CodeTalker formulas, run as its own process), give our LVE, FDD and MVE."""
    store, reader = data
    regions = VertexRegions(LIP_ROWS, UPPER_FACE, n_vertices=36)
    export = tmp_path / "flame_model"
    table = evaluate_flame_model(flame_model, reader, regions, store, steps=4, n_samples=0,
                                 export=PeerExport(export, regions.lip, regions.upper_face)).table  # fmt: skip
    keys = reader.sequence_names("test")
    identity = keys[0].split("_")[0]
    assert sorted(p.name for p in (export / "vertices_npy").iterdir()) == sorted(f"{k}.npy" for k in keys)
    assert sorted(p.name for p in (export / "result").iterdir()) == sorted(
        f"{k}_condition_{identity}.npy" for k in keys
    )
    assert (export / "regions" / "lve.txt").read_text() == ", ".join(str(i) for i in LIP_ROWS)
    assert np.load(export / "result" / f"{keys[0]}_condition_{identity}.npy").shape == (FRAMES, 36 * 3)
    summary = json.loads((export / "export.json").read_text())
    assert summary["subjects"] == [identity] and summary["n_vertices"] == 36
    script = Path(__file__).resolve().parents[1] / "docs" / "peer_metrics.py"
    out = subprocess.run([sys.executable, str(script), str(export)], capture_output=True, text=True, check=True)
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    assert "Lip Vertex Error:" in out.stdout and peer["frames"] == table["data"]["n_frames"]
    for metric in ("lve", "fdd", "fdd_abs", "mve"):
        assert peer[metric] == pytest.approx(table["model"][metric], rel=1e-5, abs=1e-12), metric


def test_the_gate_on_a_real_table(data, flame_model):
    """An untrained-looking 4-step model: whatever the verdict, it names every lip comparison."""
    store, reader = data
    table = evaluate_flame_model(flame_model, reader, VertexRegions(LIP_ROWS, UPPER_FACE), store, steps=2,
                                 n_samples=0).table  # fmt: skip
    verdict = family_gate("flame", table)
    assert len(verdict.comparisons) == 6  # (lve, lip_sync) x (null_condition, mean_offsets, zero_offsets)
    text = verdict.explanation()
    assert all(b in text for b in ("null_condition", "mean_offsets", "zero_offsets"))
    assert verdict.passed == all(c.model_wins for c in verdict.comparisons)


def test_flame_regions_must_fit_the_topology(data, flame_model):
    _, reader = data
    with pytest.raises(EvaluationError, match="5023-vertex topology.* 36"):
        evaluate_flame_model(flame_model, reader, VertexRegions(LIP, UPPER_FACE, n_vertices=5023), steps=2)


def test_models_of_the_other_variant_are_refused(data, nphm_model, flame_model):
    store, reader = data
    with pytest.raises(EvaluationError, match="NPHM-variant"):
        evaluate_nphm_model(flame_model, reader, store)
    with pytest.raises(EvaluationError, match="FLAME-variant"):
        evaluate_flame_model(nphm_model, reader, VertexRegions(LIP, UPPER_FACE))


def test_non_overlapping_windows(data):
    _, reader = data
    windows = non_overlapping_windows(reader, "test")
    starts = reader.manifest.column("start_frame").to_numpy()[windows]
    assert sorted(starts.tolist()) == [0, 0, 24, 24, 48, 48]


def test_regions_file(tmp_path):
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"topology": "grid", "n_vertices": 36, "lip": [0, 1], "upper_face": [30]}))
    regions = read_regions(path)
    assert regions.lip.tolist() == [0, 1] and regions.upper_face.tolist() == [30] and regions.n_vertices == 36
    path.write_text(json.dumps({"lip": [0, 1]}))
    with pytest.raises(EvaluationError, match=r"regions\.json.*upper_face"):
        read_regions(path)
    path.write_text("{not json")
    with pytest.raises(EvaluationError, match=r"regions\.json.*not valid JSON"):
        read_regions(path)
    with pytest.raises(EvaluationError, match="not found"):
        read_regions(tmp_path / "absent.json")


# ----------------------------------------------------------------------------- renders


def test_evaluation_renders(data, dataset_root, nphm_model, tiny_encoder_dir, tmp_path):
    store, reader = data
    unseen = tmp_path / "unseen.wav"
    soundfile.write(unseen, speech_like(0.75, seed=7), RATE)
    messages: list[str] = []
    result = render_evaluation_videos(
        nphm_model, reader, store, tmp_path / "renders", dataset_root=dataset_root, n_sequences=2, unseen_audio=[unseen],
        encoder_path=tiny_encoder_dir, resolution=16, video_size=48, max_seconds=0.5, steps=2, cpu_threads=1,
        progress=messages.append,
    )  # fmt: skip
    # People waiting on the run log see each video's frames come, with frames/s and ETA.
    assert any(m.startswith("unseen_unseen.mp4 frames: 12/12 frames (100%)") and "frames/s" in m for m in messages)
    assert [p.name for p in result.videos] == [f"test_{k}.mp4" for k in reader.sequence_names("test")] + [
        "unseen_unseen.mp4"
    ]
    for path in result.videos[:2]:  # ground truth | generated, with the sequence's audio
        info = probe_video(path)
        assert info["n_frames"] == 12 and info["width"] == 96 and info["audio_codec"] == "aac"
        assert abs(info["audio_duration"] - 0.5) <= 1 / FPS
    info = probe_video(result.videos[2])
    assert info["n_frames"] == 12 and info["width"] == 48 and info["audio_codec"] == "aac"
    assert result.preview_png == tmp_path / "renders" / "preview.png" and result.preview_png.is_file()
    # One test sequence has stored meshes (read from the dataset); the other's is meshed from its codes.
    assert len([n for n in result.notes if "meshed from its codes" in n]) == 1, result.notes
    with_meshes = next(k for k in reader.sequence_names("test") if store.attrs(k, "nphm_meshes") is not None)
    (dataset_root / with_meshes / "nphm_tracking" / "nphm_meshes" / "frame_0003.ply").unlink()
    with pytest.raises(TrackingError, match="frame_0003.ply.*the file is missing.*re-ingest"):
        render_evaluation_videos(
            nphm_model, reader, store, tmp_path / "again", dataset_root=dataset_root, n_sequences=2,
            resolution=16, video_size=48, max_seconds=0.5, steps=2, cpu_threads=1,
        )  # fmt: skip


def test_unseen_audio_needs_an_encoder(data, nphm_model, tmp_path):
    store, reader = data
    with pytest.raises(InferenceError, match="encoder_path"):
        render_evaluation_videos(nphm_model, reader, store, tmp_path, unseen_audio=[tmp_path / "a.wav"])


def test_flame_evaluation_renders(data, flame_model, tmp_path):
    _, reader = data
    result = render_flame_evaluation_videos(
        flame_model, reader, tmp_path / "flame", n_windows=1, video_size=48, steps=2
    )
    assert len(result.videos) == 1 and result.preview_png.is_file()
    info = probe_video(result.videos[0])
    assert info["n_frames"] == 24 and info["width"] == 96 and info["audio_codec"] is None
