from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
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
    for name in (
        "FACETALK_DATA_ROOT",
        "FACETALK_STORE",
        "FACETALK_AUDIO_ENCODER",
        "DAGSTER_HOME",
        "FACETALK_INSTANCE",
        "FACETALK_MAX_CONCURRENT_RUNS",
    ):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server in a subprocess on 127.0.0.1; stopped by its PID at the end."""
    if importlib.util.find_spec("s3fs") is None or importlib.util.find_spec("moto") is None:
        pytest.skip("needs s3fs and moto[server] (the dev extras)")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch) -> str:
    """`s3://<fresh bucket>/store`, with the endpoint and dummy credentials in the environment."""
    import fsspec

    from storage.location import OPTIONS_ENV

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", OPTIONS_ENV):
        monkeypatch.delenv(name, raising=False)
    bucket = f"facetalk-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", endpoint_url=s3_endpoint).mkdir(bucket)
    return f"s3://{bucket}/store"
