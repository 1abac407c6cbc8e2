"""`facetalk ingest` / `facetalk remove` as a user runs them: real subprocesses, a Dagster instance on disk."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr
from dagster import DagsterInstance

from ops.demo.dataset import DemoDataConfig, generate_demo_dataset
from storage.layout import is_demo_dataset
from storage.sequence_store import COMPONENTS, SequenceStore
from tests.builders import write_sequence

REPO = Path(__file__).resolve().parents[1]
GOOD, OTHER, BAD = "ID0_SEN01", "ID1_SEN01", "ID2_SEN01"


def _facetalk(tmp_path, *args, encoder=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    env.update(FACETALK_HOME=str(tmp_path / "home"), FACETALK_DATA_ROOT=str(tmp_path / "data"))
    env.pop("FACETALK_AUDIO_ENCODER", None)
    if encoder:
        env["FACETALK_AUDIO_ENCODER"] = str(encoder)
    command = [sys.executable, "-m", "pipelines.cli", *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _arrays(store: SequenceStore, key: str) -> dict:
    arrays = {}
    for component in COMPONENTS:
        if store.attrs(key, component) is not None:
            group = zarr.open_group(str(store.component_path(key, component)), mode="r")
            arrays.update({f"{component}/{name}": array[...] for name, array in group.arrays()})
    return arrays


def test_real_data_without_an_encoder_is_refused_unless_allowed(tmp_path):
    write_sequence(tmp_path / "data", GOOD, n_frames=24, flame=False, nphm_meshes=False)
    refused = _facetalk(tmp_path, "ingest", "--store", str(tmp_path / "store"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    for words in ("is not the demo dataset", "--encoder PATH", "FACETALK_AUDIO_ENCODER", "--allow-random-encoder"):
        assert words in refused.stderr
    assert "Real Wav2Vec2 weights" in refused.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "dagster_home").exists()  # no work done

    allowed = _facetalk(tmp_path, "ingest", "--store", str(tmp_path / "store"), "--allow-random-encoder")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert f"[1/1] {GOOD}: ok" in allowed.stdout
    assert SequenceStore(tmp_path / "store").attrs(GOOD, "audio_features")["encoder_random_weights"] is True

    demo = tmp_path / "demo"  # the generated demo dataset carries its marker: no refusal there
    generate_demo_dataset(demo, DemoDataConfig(n_identities=1, n_sequences=1, seconds=0.5, nphm_mesh_resolution=0))
    assert is_demo_dataset(demo) and not is_demo_dataset(tmp_path / "data")


def test_parallel_ingest_reports_failures_in_a_table_and_matches_sequential(tmp_path, tiny_encoder_dir):
    data = tmp_path / "data"
    write_sequence(data, GOOD, n_frames=36, seed=0, nphm_meshes=True)
    write_sequence(data, OTHER, n_frames=30, seed=1, flame=False, nphm_meshes=True)
    write_sequence(data, BAD, n_frames=24, seed=2, nphm_meshes=False)
    bad_frame = data / BAD / "nphm_tracking" / "nphm_expressions" / "frame_0003.npz"
    np.savez(bad_frame, something_else=np.zeros(200, np.float32))
    (data / "not a sequence").mkdir()
    config = tmp_path / "run.yaml"
    config.write_text("ops:\n  audio_features:\n    config:\n      max_drift_s: 0.5\n")

    stores = {workers: tmp_path / f"store{workers}" for workers in (2, 1)}
    outputs = {}
    for workers, store in stores.items():
        result = _facetalk(
            tmp_path, "ingest", "--store", str(store), "--workers", str(workers), "-c", str(config),
            encoder=tiny_encoder_dir,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        outputs[workers] = result.stdout + result.stderr

    text = outputs[2]
    assert "Traceback" not in text and "Traceback" not in outputs[1], text
    assert f"{BAD}: FAILED nphm_expressions: " in text and f"{GOOD}: ok (" in text
    table = text[text.index("failures (1 sequences):") :].splitlines()
    assert table[1].split() == ["sequence", "asset", "file", "reason"]
    assert table[2].split()[:3] == [BAD, "nphm_expressions", f"{BAD}/nphm_tracking/nphm_expressions/frame_0003.npz"]
    assert "3 sequences: 2 ok, 0 unchanged, 1 failed; 1 folders skipped" in text
    assert len(text.splitlines()) < 20

    parallel, sequential = (SequenceStore(stores[w]) for w in (2, 1))
    for key in (GOOD, OTHER):
        expected = _arrays(sequential, key)
        got = _arrays(parallel, key)
        assert expected.keys() == got.keys() and "nphm_meshes/n_vertices" in got  # the index (reference mode)
        for name, array in expected.items():  # features: torch threads per worker change the summation order
            if name.startswith("audio_features/"):
                np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-5, err_msg=f"{key} {name}")
            else:
                np.testing.assert_array_equal(got[name], array, err_msg=f"{key} {name}")

    instance = DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    runs = instance.get_runs()
    assert {run.job_name for run in runs} == {"ingest_sequence"} and len(runs) == 6
    assert {run.run_config["ops"]["audio_features"]["config"]["max_drift_s"] for run in runs} == {0.5}  # -c

    removed = _facetalk(tmp_path, "remove", GOOD, "--store", str(stores[2]))
    assert removed.returncode == 0 and f"removed {GOOD} (partition + store)" in removed.stdout
    assert "still exists" in removed.stdout  # the folder would come back on the next ingest
    assert not parallel.group_path(GOOD).exists() and GOOD not in instance.get_dynamic_partitions("sequences")
    unknown = _facetalk(tmp_path, "remove", "ID7_NONE", "--store", str(stores[2]))
    assert unknown.returncode == 2 and "no sequence 'ID7_NONE'" in unknown.stderr

    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("ops:\n  audio_features:\n    config:\n      max_drift: 1\n")
    refused = _facetalk(tmp_path, "ingest", "-c", str(bad_config), encoder=tiny_encoder_dir)
    assert refused.returncode == 2 and f"-c {bad_config}" in refused.stderr and "max_drift" in refused.stderr
