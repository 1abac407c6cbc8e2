import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from storage.atomic import atomic_directory, recover_interrupted
from storage.layout import InvalidSequenceName, scan_dataset, validate_sequence_key
from storage.sequence_store import SequenceStore
from storage.zarr_io import rows_per_chunk


@pytest.mark.parametrize(
    "name",
    ["..", "../etc", "ID_..", "a/b_c", "noidentity", "_hidden_x", "ID_seq with space", "ID_seq$", "ID\x00_x", ""],
)
def test_bad_sequence_names_are_refused(name):
    with pytest.raises(InvalidSequenceName):
        validate_sequence_key(name)


def test_scan_reports_bad_folders_and_skips_meta(tmp_path):
    for name in ("ID01_SEN01", "ID02_SEN-02.take1", "bad name_x", "_meta", ".cache", "nounderscore"):
        (tmp_path / name).mkdir()
    scan = scan_dataset(tmp_path)
    assert [s.key for s in scan.sequences] == ["ID01_SEN01", "ID02_SEN-02.take1"]
    assert scan.sequences[1].identity == "ID02"
    rejected = dict(scan.rejected)
    assert set(rejected) == {"bad name_x", "nounderscore"}
    assert "bad name_x" in rejected["bad name_x"]


def test_atomic_directory_publishes_only_complete(tmp_path):
    final = tmp_path / "thing"
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("killed")
    assert not final.exists() and os.listdir(tmp_path) == []
    with atomic_directory(final) as tmp:
        (tmp / "a").write_text("1")
    with atomic_directory(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(os.listdir(final)) == ["b"] and os.listdir(tmp_path) == ["thing"]


def test_recover_restores_original_moved_aside(tmp_path):
    final = tmp_path / "thing"
    # A writer killed between its two renames leaves the original aside and a temporary.
    (tmp_path / ".thing.old-abc").mkdir()
    (tmp_path / ".thing.old-abc" / "data").write_text("original")
    (tmp_path / ".thing.tmp-def").mkdir()
    recover_interrupted(final)
    assert (final / "data").read_text() == "original"
    assert os.listdir(tmp_path) == ["thing"]


def test_sigkill_mid_write_leaves_previous_component(tmp_path):
    store = SequenceStore(tmp_path)
    store.write_component("ID1_S1", "nphm", {"expression": np.ones((10, 200), np.float32)}, {"fingerprint": "old"})
    script = f"""
import numpy as np, os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from storage import zarr_io
from storage.sequence_store import SequenceStore
original = zarr_io.write_group
def dying(path, arrays, attrs):
    original(path, arrays, attrs)
    os.kill(os.getpid(), signal.SIGKILL)  # after the data, before the rename
zarr_io.write_group = dying
import storage.sequence_store as s; s.write_group = dying
SequenceStore({str(tmp_path)!r}).write_component("ID1_S1", "nphm", {{"expression": np.zeros((20, 200), np.float32)}}, {{"fingerprint": "new"}})
"""
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert store.attrs("ID1_S1", "nphm")["fingerprint"] == "old"
    assert store.read("ID1_S1", "nphm", "expression").shape == (10, 200)
    assert [p.name for p in store.group_path("ID1_S1").iterdir() if p.name.startswith(".")] == []


def test_sequence_store_roundtrip_and_chunking(tmp_path):
    store = SequenceStore(tmp_path)
    features = np.random.default_rng(0).standard_normal((1000, 768)).astype(np.float32)
    store.write_component("ID1_S1", "audio_features", {"features": features}, {"fingerprint": "f1", "fps": 24})
    assert store.is_current("ID1_S1", "audio_features", "f1")
    assert not store.is_current("ID1_S1", "audio_features", "f2")
    assert not store.is_current("ID1_S1", "nphm", "f1")
    np.testing.assert_array_equal(store.read("ID1_S1", "audio_features", "features"), features)
    array = zarr.open_group(str(store.group_path("ID1_S1")), mode="r")["audio_features"]["features"]
    assert array.chunks[0] == rows_per_chunk((1000, 768), 4) == 341  # about 1 MB along time
    assert store.sequences_with("audio_features") == ["ID1_S1"]
    assert store.sequences_with("audio_features", "nphm") == []
