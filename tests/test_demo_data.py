"""The deterministic demo dataset: published FaceTalk layout, timing, determinism, audio-driven motion."""

import hashlib
import json
import pickle
import wave
from pathlib import Path

import numpy as np
import pytest
import trimesh

from models.heads.analytic import EXPRESSION_DIMS
from ops.demo.dataset import DemoDataConfig, generate_demo_dataset

CONFIG = DemoDataConfig(n_identities=3, n_sequences=2, seconds=2.0, fps=24, nphm_mesh_resolution=24, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    messages = []
    summary = generate_demo_dataset(root, CONFIG, progress=messages.append)
    return root, summary, messages


def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as file:
        assert file.getsampwidth() == 2
        data = np.frombuffer(file.readframes(file.getnframes()), dtype="<i2").astype(np.float32) / 32767
        channels = file.getnchannels()
        return data.reshape(-1, channels), file.getframerate(), channels


def test_layout_is_exactly_the_published_one(dataset):
    root, summary, messages = dataset
    T = CONFIG.n_frames
    expected = {
        "_meta/regions.json",
        "_meta/demo_dataset.json",
        "_meta/unseen_audio/unseen_00.wav",
        "_meta/unseen_audio/unseen_01.wav",
    }
    names = [f"ID{i:02d}_SEN{j:02d}" for i in range(3) for j in range(2)]
    for name in names:
        expected |= {f"{name}/audio/cleaned_audio.wav", f"{name}/audio/wave2vec_audio_feats.pkl",
                     f"{name}/flame_2023_tracking/flame_2023_template.ply"}  # fmt: skip
        for t in range(T):
            expected |= {f"{name}/nphm_tracking/nphm_expressions/frame_{t:04d}.npz",
                         f"{name}/nphm_tracking/nphm_meshes/frame_{t:04d}.ply",
                         f"{name}/flame_2023_tracking/flame_meshes/frame_{t:04d}.ply"}  # fmt: skip
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert found == expected
    assert [d.name for d in summary.sequence_dirs] == names
    assert summary.n_sequences == 6 and summary.n_frames == 6 * T and summary.seconds > 0
    assert len(messages) == 7 and "ID00_SEN00" in messages[0]
    assert all("_" not in name.split("_", 1)[0] for name in names)  # identity = text before the first "_"


def test_audio_lasts_exactly_the_motion_and_one_identity_is_44k_stereo(dataset):
    root, _, _ = dataset
    T = CONFIG.n_frames
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith("_")):
        samples, rate, channels = read_wav(folder / "audio" / "cleaned_audio.wav")
        assert abs(len(samples) - T / CONFIG.fps * rate) <= 0.5
        assert (rate, channels) == ((44100, 2) if folder.name.startswith("ID01") else (16000, 1))
        assert 0.3 < np.abs(samples).max() <= 1.0
        features = pickle.loads((folder / "audio" / "wave2vec_audio_feats.pkl").read_bytes())
        assert features.dtype == np.float32 and features.shape == (round(T / CONFIG.fps * 50), 768)
        frame = np.load(folder / "nphm_tracking" / "nphm_expressions" / "frame_0000.npz")
        assert set(frame.files) == {"expression", "identity"}
        assert frame["expression"].shape == (200,) and frame["expression"].dtype == np.float32
        assert frame["identity"].shape == (1344,) and frame["identity"].dtype == np.float32
    for clip in (root / "_meta" / "unseen_audio").iterdir():
        samples, rate, _ = read_wav(clip)
        assert rate == 16000 and abs(len(samples) - T / CONFIG.fps * rate) <= 0.5


def test_meshes_are_readable_with_the_fixed_topology_and_regions(dataset):
    root, summary, _ = dataset
    regions = json.loads((root / "_meta" / "regions.json").read_text())
    V = regions["n_vertices"]
    assert regions["topology"] and 1000 <= V <= 3000 and summary.n_vertices == V
    for key in ("lip", "upper_face"):
        indices = np.asarray(regions[key])
        assert len(indices) > 20 and indices.min() >= 0 and indices.max() < V and len(set(indices)) == len(indices)
    folder = root / "ID02_SEN01"
    template = trimesh.load(folder / "flame_2023_tracking" / "flame_2023_template.ply", process=False)
    frame = trimesh.load(folder / "flame_2023_tracking" / "flame_meshes" / "frame_0030.ply", process=False)
    assert len(template.vertices) == len(frame.vertices) == V
    np.testing.assert_array_equal(template.faces, frame.faces)
    other = trimesh.load(root / "ID00_SEN00" / "flame_2023_tracking" / "flame_2023_template.ply", process=False)
    np.testing.assert_array_equal(other.faces, template.faces)  # one topology for every identity
    assert np.abs(other.vertices - template.vertices).max() > 1e-3  # but each identity its own shape
    nphm = trimesh.load(folder / "nphm_tracking" / "nphm_meshes" / "frame_0030.ply", process=False)
    assert len(nphm.vertices) > 500 and len(nphm.faces) > 1000
    # The fixed-topology frame and the marching-cubes frame are the same head.
    assert np.abs(frame.bounds - nphm.bounds).max() < 0.05


def test_jaw_motion_follows_the_audio_envelope(dataset):
    root, _, _ = dataset
    correlations = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith("_")):
        samples, rate, _ = read_wav(folder / "audio" / "cleaned_audio.wav")
        mono = samples.mean(axis=1)
        T = CONFIG.n_frames
        hop = rate / CONFIG.fps
        rms = np.array([np.sqrt(np.mean(mono[int(t * hop) : int((t + 1) * hop)] ** 2)) for t in range(T)])
        codes = np.stack(
            [
                np.load(folder / "nphm_tracking" / "nphm_expressions" / f"frame_{t:04d}.npz")["expression"]
                for t in range(T)
            ]
        )
        jaw = codes[:, EXPRESSION_DIMS["jaw_open"]]
        correlations.append(np.corrcoef(jaw, rms)[0, 1])
        assert jaw.max() > 0.4 and jaw.min() < 0.1  # the mouth opens and closes
        # Lips move with the jaw in the fixed-topology meshes.
        lip = np.asarray(json.loads((root / "_meta" / "regions.json").read_text())["lip"])
        lip_y = [
            trimesh.load(folder / "flame_2023_tracking" / "flame_meshes" / f"frame_{t:04d}.ply", process=False)
            .vertices[lip, 1]
            .std()
            for t in range(0, T, 4)
        ]
        assert np.corrcoef(lip_y, jaw[::4])[0, 1] > 0.5
    assert min(correlations) > 0.5, correlations


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    small = DemoDataConfig(n_identities=2, n_sequences=1, seconds=1.0, nphm_mesh_resolution=20, seed=7)
    first = generate_demo_dataset(tmp_path / "a", small)
    second = generate_demo_dataset(tmp_path / "b", small)
    other = generate_demo_dataset(tmp_path / "c", DemoDataConfig(**{**small.__dict__, "seed": 8}))
    assert tree_hash(first.root) == tree_hash(second.root)
    assert tree_hash(first.root) != tree_hash(other.root)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="nphm_mesh_resolution"):
        DemoDataConfig(nphm_mesh_resolution=8)
    with pytest.raises(ValueError, match="seconds"):
        DemoDataConfig(seconds=0)
