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
from ops.demo.articulation import articulation_tracks
from ops.demo.dataset import DemoDataConfig, generate_demo_dataset
from ops.demo.espeak import EspeakError, EspeakVoice, Phone, espeak_available, speak, speak_fresh
from ops.demo.phonetic_speech import Speaker, demo_speech, resolve_engine

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
    assert regions["topology"] and 5000 <= V <= 15000 and summary.n_vertices == V
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


def test_jaw_motion_goes_with_the_audio_envelope(dataset):
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
    # The jaw follows vowel openness and loudness, not the envelope alone (a voiced "m" is loud with
    # the lips shut): clearly positive, not tight (the phonetics are tested with the articulation).
    assert np.mean(correlations) > 0.3 and min(correlations) > 0.1, correlations


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


# ----------------------------------------------------------------------------- speech: espeak-ng and the fallback

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng not installed")


@needs_espeak
def test_espeak_gives_deterministic_audio_and_phoneme_timings():
    voice = EspeakVoice("en-us+m3", rate_wpm=160, pitch=40)
    text = "Please move the big blue box."
    # In one process the synthesizer drifts by a few samples from call to call; a fresh process per
    # list of utterances is reproducible.
    first, again = speak_fresh([(text, voice), (text, voice)]), speak_fresh([(text, voice), (text, voice)])
    for one, other in zip(first, again):
        np.testing.assert_array_equal(one.waveform, other.waveform)
        assert one.phones == other.phones
    first = first[0]
    symbols = [p.symbol for p in first.phones]
    for expected in ("p", "m", "b", "u:", "v"):
        assert expected in symbols, symbols
    starts = [p.start for p in first.phones]
    assert starts == sorted(starts) and all(p.end > p.start for p in first.phones)
    assert first.phones[-1].end <= len(first.waveform) / first.sample_rate + 1e-6
    faster = speak(text, EspeakVoice("en-us+m3", rate_wpm=260, pitch=40))
    assert len(faster.waveform) < 0.8 * len(first.waveform)  # the rate is applied
    with pytest.raises(EspeakError, match="no voice"):
        speak("hello", EspeakVoice("xx-nonexistent"))


def test_articulation_closes_lips_on_bilabials_tucks_on_labiodentals_and_opens_on_open_vowels():
    fps = 100.0  # fine frames: the test reads the value at each phone's centre
    phones = [Phone(0.0, 0.15, "_"), Phone(0.15, 0.25, "m"), Phone(0.25, 0.45, "a"), Phone(0.45, 0.55, "f"),
              Phone(0.55, 0.75, "u:"), Phone(0.75, 0.85, "p"), Phone(0.85, 1.05, "i:"), Phone(1.05, 1.4, "_")]  # fmt: skip
    tracks = articulation_tracks(phones, int(1.4 * fps), fps, lead_s=0.0)

    def at(name: str, phone: int) -> float:
        return float(tracks[name][round(0.5 * (phones[phone].start + phones[phone].end) * fps)])

    assert at("close", 1) > 0.8 and at("close", 5) > 0.8 and at("close", 2) < 0.3  # m, p closed; a open
    assert at("tuck", 3) > 0.8 and at("tuck", 1) < 0.2  # f tucks, m does not
    assert at("jaw", 2) > 0.7 and at("jaw", 2) > 2 * at("jaw", 6) and at("jaw", 1) < 0.2  # a >> i, m shut
    assert at("round", 4) > 0.6 and at("round", 6) < 0.3 and at("spread", 6) > 0.6  # u rounds, i spreads
    # Coarticulation, mostly carry-over: the rounding of "u" lingers into the "p" after it more than
    # it reaches into the "f" before it; and the tracks are smooth.
    assert at("round", 5) > 0.3 and at("round", 5) > 2 * at("round", 3)
    assert max(float(np.abs(np.diff(track)).max()) for track in tracks.values()) < 0.3  # no jumps at 100 fps
    assert tracks["jaw"][-5:].max() < 0.05 and tracks["close"][-5:].max() < 0.05  # rest after speech


@needs_espeak
def test_espeak_clip_is_deterministic_fills_the_duration_and_drives_every_viseme():
    speaker = Speaker.random(np.random.default_rng(5))
    clip = demo_speech(4.0, 24, 16000, speaker, np.random.default_rng(1), engine="espeak-ng")
    again = demo_speech(4.0, 24, 16000, speaker, np.random.default_rng(1), engine="espeak-ng")
    np.testing.assert_array_equal(clip.waveform, again.waveform)
    np.testing.assert_array_equal(clip.mouth_open, again.mouth_open)
    assert clip.engine == "espeak-ng" and len(clip.waveform) == 64000 and len(clip.mouth_open) == 96
    assert clip.phones and clip.phones[-1].start < 4.0
    assert clip.mouth_open.max() > 0.5 and clip.lip_close.max() > 0.8 and clip.lip_round.max() > 0.5
    # The jaw follows the sound: open while loud, shut in the pauses.
    hop = 16000 / 24
    rms = np.array([np.sqrt(np.mean(clip.waveform[round(t * hop) : round((t + 1) * hop)] ** 2)) for t in range(96)])
    assert np.corrcoef(clip.mouth_open, rms)[0, 1] > 0.4


def test_formant_fallback_and_engine_errors():
    speaker = Speaker.random(np.random.default_rng(2))
    clip = demo_speech(2.0, 24, 16000, speaker, np.random.default_rng(0), engine="formant")
    assert clip.engine == "formant" and clip.lip_close is None and len(clip.mouth_open) == 48
    assert clip.mouth_open.max() > 0.3
    assert resolve_engine("auto") == ("espeak-ng" if espeak_available() else "formant")
    with pytest.raises(ValueError, match="speech engine must be one of"):
        DemoDataConfig(speech="festival")


def test_formant_dataset_is_deterministic_and_marked(tmp_path):
    small = DemoDataConfig(n_identities=1, n_sequences=1, seconds=1.0, nphm_mesh_resolution=0, speech="formant")
    first = generate_demo_dataset(tmp_path / "a", small)
    second = generate_demo_dataset(tmp_path / "b", small)
    assert first.speech == "formant" and tree_hash(first.root) == tree_hash(second.root)
    assert json.loads((first.root / "_meta" / "demo_dataset.json").read_text())["speech"] == "formant"


def test_without_espeak_auto_falls_back_to_formant_and_espeak_is_a_clear_error(monkeypatch, tmp_path):
    import ops.demo.espeak as espeak

    monkeypatch.setattr(espeak, "_library", lambda: None)  # as on a machine without libespeak-ng
    assert resolve_engine("auto") == "formant"
    with pytest.raises(ValueError, match="libespeak-ng is not installed"):
        DemoDataConfig(speech="espeak-ng")
    summary = generate_demo_dataset(tmp_path, DemoDataConfig(n_identities=1, n_sequences=1, seconds=1.0,
                                                             nphm_mesh_resolution=0))  # fmt: skip
    assert summary.speech == "formant"
