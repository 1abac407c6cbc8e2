from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import SHARED_DATA  # ../shared/data beside the checkout


def shared_file(name: str) -> Path:
    """A file from ../shared/data, or skip: the project must not need them."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random Wav2Vec2 saved with save_pretrained, loaded through the real code path."""
    from models.audio_encoder import create_random_encoder

    path = tmp_path_factory.mktemp("encoder") / "wav2vec2-tiny"
    create_random_encoder(path, hidden_size=64, num_layers=1, num_heads=4, intermediate_size=64, conv_channels=32)
    return path


@pytest.fixture
def one_torch_thread():
    """Small tensors: one thread avoids OpenMP spin-waiting on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_facetalk_env(tmp_path, monkeypatch):
    """No test reads or writes the developer's var/ or Dagster instance by accident."""
    monkeypatch.setenv("FACETALK_HOME", str(tmp_path / "facetalk_home"))
    for name in ("FACETALK_DATA_ROOT", "FACETALK_STORE", "FACETALK_AUDIO_ENCODER", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
