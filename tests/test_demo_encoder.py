"""The demo's audio encoder: trained on espeak-ng phonemes, saved as a plain Wav2Vec2 that loads like
real weights and says where it came from; `facetalk demo-encoder` writes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.audio_encoder import DEMO_TRAINED_MARKER, create_random_encoder, load_audio_encoder
from ops.demo.encoder_training import DemoEncoderConfig, train_demo_encoder
from ops.demo.espeak import espeak_available
from tests.test_cli_usage import facetalk

pytestmark = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng is not installed")

SMALL = DemoEncoderConfig(utterances=6, steps=6, batch=2, hidden_size=32, heads=2)


def test_trained_encoder_loads_as_wav2vec2_and_says_it_is_the_demo_one(tmp_path):
    messages: list[str] = []
    summary = train_demo_encoder(tmp_path / "encoder", SMALL, progress=messages.append)

    assert summary.path == tmp_path / "encoder" and summary.speech_seconds > 10 and summary.phonemes > 20
    assert 0.0 <= summary.accuracy <= 1.0 and any("step 6/6" in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # no staging folder left behind
    encoder = load_audio_encoder(tmp_path / "encoder")
    facts = encoder.describe()
    assert facts["encoder_demo_trained"] and not facts["encoder_random_weights"] and encoder.hidden_size == 32
    recorded = json.loads((tmp_path / "encoder" / "config.json").read_text())[DEMO_TRAINED_MARKER]
    assert recorded["steps"] == 6 and recorded["speech_seconds"] == round(summary.speech_seconds)

    # Training moved the weights away from the random initialisation it started from.
    start = load_audio_encoder(create_random_encoder(tmp_path / "start", hidden_size=32, num_heads=2)).model
    trained = encoder.model.state_dict()
    moved = [name for name, value in start.state_dict().items() if not torch.equal(value, trained[name])]
    assert any("encoder.layers" in name for name in moved) and any("feature_extractor" in name for name in moved)

    features = encoder.encode(torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16_000), np.float32)), 24)
    assert features.shape == (1, 24, 32) and torch.isfinite(features).all()


def test_a_retrained_encoder_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "encoder"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old weights")
    train_demo_encoder(target, SMALL)
    assert not (target / "stale.bin").exists() and (target / "config.json").is_file()


def test_facetalk_demo_encoder_command(tmp_path):
    result = facetalk(tmp_path, "demo-encoder", str(tmp_path / "enc"), "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "phoneme accuracy" in result.stdout and load_audio_encoder(tmp_path / "enc").demo_trained


def test_facetalk_demo_trains_the_encoder_only_when_none_of_the_users_is_set(tmp_path, monkeypatch):
    import argparse

    from pipelines.cli import _ensure_demo_encoder
    from pipelines.settings import default_encoder_path

    monkeypatch.delenv("FACETALK_AUDIO_ENCODER", raising=False)
    default = default_encoder_path()
    _ensure_demo_encoder(argparse.Namespace(encoder=str(tmp_path / "mine")), default)  # the user's: no training
    assert not default.exists()

    default.mkdir(parents=True)
    (default / "config.json").write_text(json.dumps({"model_type": "wav2vec2", DEMO_TRAINED_MARKER: {"steps": 1}}))
    _ensure_demo_encoder(argparse.Namespace(encoder=None), default)  # trained already: kept as it is
    assert sorted(p.name for p in default.iterdir()) == ["config.json"]
