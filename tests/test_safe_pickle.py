"""storage.safe_pickle: numpy pickles round-trip; pickles that would run code are refused unexecuted."""

from __future__ import annotations

import builtins
import os
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest

from storage.safe_pickle import (
    PickleFormatError,
    UnsafePickleError,
    load_numpy_pickle,
    load_pickled_arrays,
)


class _RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _RunsExec:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (builtins.exec, (self.source,))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_array_round_trips(tmp_path: Path, dtype, protocol: int) -> None:
    array = np.random.default_rng(0).standard_normal((37, 768)).astype(dtype)
    path = tmp_path / "wave2vec_audio_feats.pkl"
    path.write_bytes(pickle.dumps(array, protocol=protocol))

    loaded = load_numpy_pickle(path)

    assert loaded.dtype == dtype
    assert loaded.shape == (37, 768)
    np.testing.assert_array_equal(loaded, array)


def test_fortran_order_and_containers_round_trip(tmp_path: Path) -> None:
    value = {
        "feats": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        "fps": 24,
        "scale": np.float64(0.5),
        "parts": [np.zeros(3, np.int16), (np.ones(2, np.complex64), "name")],
    }
    path = tmp_path / "bundle.pkl"
    path.write_bytes(pickle.dumps(value, protocol=4))

    loaded = load_pickled_arrays(path)

    np.testing.assert_array_equal(loaded["feats"], value["feats"])
    assert loaded["fps"] == 24 and loaded["scale"] == 0.5 and isinstance(loaded["scale"], np.float64)
    np.testing.assert_array_equal(loaded["parts"][1][0], value["parts"][1][0])
    assert loaded["parts"][1][1] == "name"


def test_numpy1_spelling_of_reconstruct_is_accepted(tmp_path: Path) -> None:
    # NumPy 1.x wrote `numpy.core.multiarray`; rewrite a NumPy 2 protocol-2 pickle to that spelling.
    array = np.linspace(0.0, 1.0, 10, dtype=np.float32)
    payload = pickle.dumps(array, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(payload)

    np.testing.assert_array_equal(load_numpy_pickle(path), array)


@pytest.mark.parametrize(
    "make_payload, forbidden",
    [
        (lambda marker: _RunsShellCommand(f"touch {marker}"), "system"),
        (lambda marker: _RunsExec(f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        # hidden inside an otherwise valid container next to a real array
        (lambda marker: {"feats": np.zeros(3), "x": _RunsShellCommand(f"touch {marker}")}, "system"),
    ],
)
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, make_payload, forbidden: str) -> None:
    marker = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    path = tmp_path / "wave2vec_audio_feats.pkl"
    path.write_bytes(pickle.dumps(make_payload(marker)))

    with pytest.raises(UnsafePickleError) as raised:
        load_numpy_pickle(path)

    assert str(path) in str(raised.value)
    assert forbidden in str(raised.value)
    assert not marker.exists()


def test_torch_style_pickle_is_refused(tmp_path: Path) -> None:
    # what torch.save's legacy pickle starts with; written by hand so the test needs no torch
    payload = b"ctorch._utils\n_rebuild_tensor_v2\n."
    path = tmp_path / "tensor.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"torch\._utils\._rebuild_tensor_v2"):
        load_numpy_pickle(path)


def test_bad_files_raise_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pkl"
    with pytest.raises(PickleFormatError, match="not found") as raised:
        load_numpy_pickle(missing)
    assert str(missing) in str(raised.value)

    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(PickleFormatError, match="empty"):
        load_numpy_pickle(empty)

    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps(np.ones((50, 50)), protocol=4)[:-100])
    with pytest.raises(PickleFormatError, match="truncated or corrupt") as raised:
        load_numpy_pickle(truncated)
    assert str(truncated) in str(raised.value)

    not_an_array = tmp_path / "list.pkl"
    not_an_array.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(PickleFormatError, match="expected a pickled numpy array, found list"):
        load_numpy_pickle(not_an_array)
