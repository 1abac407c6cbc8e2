"""Evaluation on a tiny hand-built store (sequence store + segment store from it, split by identity):
metric tables with the expected rows and finite values, the blocking rule, and evaluation renders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from models.checkpoint import load_motion_model
from models.config import config_from_dict
from models.heads.analytic import EXPRESSION_DIMS
from models.train import train
from ops.dataset.segmenting import SegmentingConfig, build_training_segments
from ops.evaluation.evaluate import (
    CodeRegions,
    EvaluationError,
    VertexRegions,
    better_than_baseline,
    evaluate_flame_model,
    evaluate_nphm_model,
    non_overlapping_windows,
    read_regions,
    render_evaluation_videos,
    render_flame_evaluation_videos,
    split_sequences,
)
from ops.evaluation.metrics import audio_rms_per_frame
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
    sequences = split_sequences(reader, "test")
    assert len(sequences) == 2 and len({s.split("_")[0] for s in sequences}) == 1


def test_nphm_metrics_table(data, nphm_model):
    store, reader = data
    messages = []
    regions = CodeRegions(
        tuple(EXPRESSION_DIMS[n] for n in ("jaw_open", "lip_round", "lip_stretch")), EXPRESSION_DIMS["jaw_open"]
    )
    table = evaluate_nphm_model(nphm_model, reader, store, regions=regions, steps=4, n_samples=2,
                                progress=messages.append)  # fmt: skip
    assert set(table) == {"model", "null_condition", "mean_code", "ground_truth", "data"}
    for row in ("model", "null_condition", "mean_code"):
        assert set(table[row]) == {"expression_l2", "expression_l2_mouth", "lip_sync", "diversity"}
    assert all(np.isfinite(v) for row in table.values() for v in row.values())
    assert table["data"]["n_sequences"] == 2 and table["data"]["n_frames"] == 2 * FRAMES
    assert table["model"]["diversity"] > 0 and table["mean_code"]["diversity"] == 0
    assert table["mean_code"]["lip_sync"] == 0.0  # a constant jaw does not correlate with anything
    assert table["ground_truth"]["lip_sync"] > 0.9  # the fixture's jaw *is* the audio loudness
    assert table["model"]["expression_l2_mouth"] < table["model"]["expression_l2"]
    assert len(messages) == 2


def test_nphm_code_regions_are_a_parameter(data, nphm_model):
    store, reader = data
    narrow = evaluate_nphm_model(nphm_model, reader, store, steps=2, n_samples=0, max_sequences=1,
                                 regions=CodeRegions(mouth_dims=(0,), jaw_dim=0))  # fmt: skip
    wide = evaluate_nphm_model(nphm_model, reader, store, steps=2, n_samples=0, max_sequences=1,
                               regions=CodeRegions(mouth_dims=tuple(range(50)), jaw_dim=0))  # fmt: skip
    assert narrow["model"]["expression_l2"] == pytest.approx(wide["model"]["expression_l2"])
    assert narrow["model"]["expression_l2_mouth"] < wide["model"]["expression_l2_mouth"]
    assert narrow["data"]["n_diversity_sequences"] == 0


def test_flame_metrics_table(data, flame_model):
    _, reader = data
    regions = VertexRegions(LIP, UPPER_FACE, n_vertices=36)
    table = evaluate_flame_model(flame_model, reader, regions, steps=4, n_samples=2)
    assert set(table) == {"model", "null_condition", "mean_offsets", "zero_offsets", "data"}
    for row in ("model", "null_condition", "mean_offsets", "zero_offsets"):
        assert set(table[row]) == {"lve", "lve_mm", "mve", "fdd", "diversity"}
    assert all(np.isfinite(v) for row in table.values() for v in row.values())
    # 2 test sequences x 72 frames, windows of 24 every 12 -> 3 disjoint windows each
    assert table["data"]["n_windows"] == 6
    zero = table["zero_offsets"]
    assert zero["lve"] > 0 and zero["fdd"] > 0  # the template does not move; the ground truth does
    assert zero["lve_mm"] == pytest.approx(1000 * np.sqrt(zero["lve"]), rel=0.5)


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


# ----------------------------------------------------------------------------- the blocking rule


def _nphm_table(model: float, null: float, mean: float) -> dict:
    return {name: {"expression_l2": 1.0, "expression_l2_mouth": value}
            for name, value in (("model", model), ("null_condition", null), ("mean_code", mean))}  # fmt: skip


def test_better_than_baseline_nphm():
    passed, message = better_than_baseline(_nphm_table(0.2, 0.5, 0.1))
    assert passed and "expression_l2_mouth: model 0.2 < null_condition 0.5" in message
    passed, message = better_than_baseline(_nphm_table(0.5, 0.5, 0.9))  # a tie is not better
    assert not passed and message.startswith("failed") and "not <" in message
    passed, _ = better_than_baseline(_nphm_table(0.2, 0.5, 0.1), baselines=("null_condition", "mean_code"))
    assert not passed
    passed, _ = better_than_baseline(_nphm_table(float("nan"), 0.5, 0.9))
    assert not passed


def test_better_than_baseline_flame_and_malformed_tables():
    table = {"model": {"lve": 1e-5, "mve": 1.0}, "null_condition": {"lve": 2e-5, "mve": 0.5}}
    assert better_than_baseline(table)[0]  # only LVE decides, not MVE
    table["model"]["lve"] = 3e-5
    assert not better_than_baseline(table)[0]
    passed, message = better_than_baseline({"model": {"lve": 1.0}})
    assert not passed and "baseline 'null_condition' missing" in message
    assert not better_than_baseline({})[0]
    passed, message = better_than_baseline({"model": {"fdd": 1.0}, "null_condition": {"fdd": 2.0}})
    assert not passed and "none of the metrics" in message


# ----------------------------------------------------------------------------- renders


def test_evaluation_renders(data, dataset_root, nphm_model, tiny_encoder_dir, tmp_path):
    store, reader = data
    unseen = tmp_path / "unseen.wav"
    soundfile.write(unseen, speech_like(0.75, seed=7), RATE)
    result = render_evaluation_videos(
        nphm_model, reader, store, tmp_path / "renders", dataset_root=dataset_root, n_sequences=2, unseen_audio=[unseen],
        encoder_path=tiny_encoder_dir, resolution=16, video_size=48, max_seconds=0.5, steps=2, cpu_threads=1,
    )  # fmt: skip
    assert [p.name for p in result.videos] == [f"test_{k}.mp4" for k in split_sequences(reader)] + ["unseen_unseen.mp4"]
    for path in result.videos[:2]:  # ground truth | generated, with the sequence's audio
        info = probe_video(path)
        assert info["n_frames"] == 12 and info["width"] == 96 and info["audio_codec"] == "aac"
        assert abs(info["audio_duration"] - 0.5) <= 1 / FPS
    info = probe_video(result.videos[2])
    assert info["n_frames"] == 12 and info["width"] == 48 and info["audio_codec"] == "aac"
    assert result.preview_png == tmp_path / "renders" / "preview.png" and result.preview_png.is_file()
    # One test sequence has stored meshes (read from the dataset); the other's is meshed from its codes.
    assert len(result.notes) == 1 and "meshed from its codes" in result.notes[0]
    with_meshes = next(k for k in split_sequences(reader) if store.attrs(k, "nphm_meshes") is not None)
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
