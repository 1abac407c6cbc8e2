"""SIGKILL during ingestion and segment writing, at deterministic points; then re-run and compare.

Each killed run is the real command (`pipelines.cli.main(["ingest"])`, `["segments", ...]`) in its
own process, against a persistent Dagster instance and store, that SIGKILLs itself at the k-th
pass through a chosen point (see KILL_POINTS in FORK_SERVER). Processes are forked from one server
that has imported dagster, torch and the pipeline once, so a run costs its work, not 10 s of
imports. After every kill the store must validate (each published component opens and equals the
clean run's; nothing published earlier is gone); a final run without a kill must complete and leave
exactly what a clean run leaves.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from storage.segments import CURRENT, MANIFEST, SegmentReader, current_segments_dir, segments_root
from storage.sequence_store import COMPONENTS, FINGERPRINT_ATTR, SequenceStore
from tests import bad_inputs as bad
from tests.builders import write_sequence

REPO = Path(__file__).resolve().parents[1]
KEYS = ["ID0_SEN01", "ID1_SEN01"]  # 2 x 5 components: enough kill points, cheap runs
INGEST = ["ingest", "--workers", "1"]  # the kill points are installed in this process, not in pool workers
N_FRAMES = 48

# Reads one JSON request per line: {"argv", "env", "kill": "point:k" | null, "log"}; forks a child
# that installs the kill point, runs the CLI with its output in `log`, and exits; answers
# {"exit_code": n} or {"signal": n}. The server itself never runs torch (forking after OpenMP
# threads exist is unsafe), it only imports.
FORK_SERVER = r"""
import contextlib, json, os, signal, sys, traceback

import dagster, torch, zarr  # noqa: F401  (imported once, shared by every forked run)
from transformers import Wav2Vec2Config, Wav2Vec2Model  # noqa: F401  (the encoder loads lazily)
import models.audio_encoder, ops.audio.features, ops.dataset.checks, ops.dataset.segmenting  # noqa: F401
import pipelines.assets.ingestion, pipelines.assets.segments, pipelines.runner  # noqa: F401
import storage.frame_store, storage.segments, storage.sequence_store
from pipelines.cli import main


def install_kill_point(spec):
    point, k = spec.rsplit(":", 1)
    passes = [0]

    def tick():
        passes[0] += 1
        if passes[0] == int(k):
            sys.stdout.flush(); sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "array_created":  # a component or segment store half-written in its temporary dir
        original_create = zarr.Group.create_array
        def create_array(self, *args, **kwargs):
            tick()
            return original_create(self, *args, **kwargs)
        zarr.Group.create_array = create_array
    elif point == "component_written":  # a component complete in its temporary dir, not renamed
        original_write = storage.sequence_store.write_group
        def write_group(*args, **kwargs):
            group = original_write(*args, **kwargs)
            tick()
            return group
        storage.sequence_store.write_group = write_group
    elif point == "component_published":  # renamed into place, before Dagster records it
        original_atomic = storage.sequence_store.atomic_directory
        @contextlib.contextmanager
        def atomic_directory(final):
            with original_atomic(final) as tmp:
                yield tmp
            tick()
        storage.sequence_store.atomic_directory = atomic_directory
    elif point == "replacing":  # the old component moved aside, the new one not yet renamed in
        original_rename = os.rename
        def rename(src, dst, *args, **kwargs):
            original_rename(src, dst, *args, **kwargs)
            if ".old-" in os.path.basename(dst):
                tick()
        os.rename = rename
    elif point == "segment_blocks":  # after k sequences appended to the segments' frame data
        writer = storage.frame_store.FrameStoreWriter
        original_append = writer.append_sequence
        def append_sequence(self, *args, **kwargs):
            original_append(self, *args, **kwargs)
            tick()
        writer.append_sequence = append_sequence
    elif point == "current_written":  # new CURRENT in its temporary file, not yet replaced
        original_replace = os.replace
        def replace(src, dst, *args, **kwargs):
            if os.path.basename(dst) == "CURRENT":
                tick()
            return original_replace(src, dst, *args, **kwargs)
        os.replace = replace
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def run_child(request):
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    code = 3
    try:
        os.environ.update(request["env"])
        if request["kill"]:
            install_kill_point(request["kill"])
        code = main(request["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 3)


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        run_child(request)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print(json.dumps({"signal": os.WTERMSIG(status)}), flush=True)
    else:
        print(json.dumps({"exit_code": os.WEXITSTATUS(status)}), flush=True)
"""


class ForkServer:
    """A Python process with the pipeline imported, forking one child per run."""

    def __init__(self, log: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
        self.log = log
        self._stderr = open(log, "w")  # noqa: SIM115 - closed after the process ends
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )  # fmt: skip
        self._answer("start")

    def run(self, argv: list[str], env: dict[str, str], log: Path, kill: str | None = None) -> dict:
        self.process.stdin.write(json.dumps({"argv": argv, "env": env, "kill": kill, "log": str(log)}) + "\n")
        self.process.stdin.flush()
        return self._answer(f"{argv} kill={kill}")

    def _answer(self, what: str, timeout_s: float = 300.0) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        assert line, f"fork server gave no answer for {what} (died or hung):\n{self.log.read_text()[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._stderr.close()


@dataclass
class Setup:
    server: ForkServer
    data: Path
    encoder: Path
    reference: Path  # store after a clean ingest and a clean `segments -c stride12.yaml` run
    ingested_only: Path  # store after the clean ingest alone
    work: Path

    def env(self, store: Path, home: Path, data: Path | None = None) -> dict[str, str]:
        return {
            "FACETALK_DATA_ROOT": str(data or self.data),
            "FACETALK_STORE": str(store),
            "FACETALK_AUDIO_ENCODER": str(self.encoder),
            "DAGSTER_HOME": str(home),
            "FACETALK_HOME": str(self.work / "facetalk_home"),
        }

    def run(self, argv: list[str], store: Path, home: Path, kill: str | None = None, data: Path | None = None) -> None:
        """Run the CLI; with `kill`, assert the run died of SIGKILL, else that it succeeded."""
        log = self.work / "runs.log"
        with open(log, "a") as handle:
            handle.write(f"\n===== {argv} kill={kill} store={store}\n")
        started = time.perf_counter()
        answer = self.server.run(argv, self.env(store, home, data), log, kill)
        with open(log, "a") as handle:
            handle.write(f"===== {time.perf_counter() - started:.1f} s\n")
        tail = log.read_text()[-4000:]
        if kill:
            assert answer == {"signal": 9}, f"expected SIGKILL at {kill}, got {answer}:\n{tail}"
        else:
            assert answer == {"exit_code": 0}, f"{argv} failed: {answer}:\n{tail}"


def _segments_config(path: Path, stride: int, include_flame: bool = True) -> Path:
    path.write_text(
        f"ops:\n  training_segments:\n    config:\n      segment_frames: 24\n      stride: {stride}\n"
        f"      include_flame: {str(include_flame).lower()}\n"
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dir):
    work = tmp_path_factory.mktemp("faults")
    data = work / "data"
    for seed, key in enumerate(KEYS):
        write_sequence(data, key, N_FRAMES, seed=seed)
    _segments_config(work / "stride24.yaml", 24, include_flame=False)  # other frame data than stride12's
    _segments_config(work / "stride12.yaml", 12)
    server = ForkServer(work / "server.log")
    try:
        setup = Setup(server, data, tiny_encoder_dir, work / "reference", work / "ingested_only", work)
        setup.run(INGEST, setup.reference, work / "reference_home")
        shutil.copytree(setup.reference, setup.ingested_only)
        setup.run(["segments", "-c", str(work / "stride12.yaml")], setup.reference, work / "reference_home")
        yield setup
    finally:
        server.close()


# -------------------------------------------------------------------------------------- checks


def published_components(store_root: Path, reference_root: Path | None) -> dict[tuple[str, str], str]:
    """(key, component) -> fingerprint of every component a reader can see, each read whole.

    With a reference store, each must equal the reference's component array for array: a killed
    run may leave less than a clean run, never something different. A component directory
    without its zarr.json (half-published) is an error.
    """
    store = SequenceStore(store_root)
    reference = SequenceStore(reference_root) if reference_root else None
    found = {}
    if not store.sequences_dir.is_dir():
        return found
    for group in sorted(p for p in store.sequences_dir.iterdir() if p.suffix == ".zarr" and not p.name.startswith(".")):
        key = group.name[: -len(".zarr")]
        for component in COMPONENTS:
            attrs = store.attrs(key, component)  # puts back a component a kill left moved aside
            path = store.component_path(key, component)
            if attrs is None:
                assert not path.exists(), f"{path} is visible but incomplete"
                continue
            opened = store.open_component(key, component)
            arrays = {name: array[...] for name, array in opened.arrays()}
            assert arrays, f"{path} has no arrays"
            found[(key, component)] = attrs[FINGERPRINT_ATTR]
            if reference is not None:
                assert attrs[FINGERPRINT_ATTR] == reference.attrs(key, component)[FINGERPRINT_ATTR], path
                expected = reference.open_component(key, component)
                assert sorted(arrays) == sorted(name for name, _ in expected.arrays()), path
                for name, values in arrays.items():
                    np.testing.assert_array_equal(values, expected[name][...], err_msg=f"{path}/{name}")
    return found


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def segment_versions(store_root: Path) -> list[str]:
    root = segments_root(store_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v-")) if root.is_dir() else []


def read_whole_segment_store(path: Path) -> dict[str, np.ndarray]:
    """Every per-segment field and static array of a segment store, read through SegmentReader."""
    reader = SegmentReader(path)
    arrays = {field: reader.read(field, reader.indices()) for field in reader.fields}
    for name, array in reader.frames.group.arrays():
        if name not in arrays:
            arrays[name] = array[...]
    arrays["manifest"] = reader.manifest
    return arrays


def assert_same_content(a: dict, b: dict) -> None:
    """Two `read_whole_segment_store` results are equal: same manifest, same arrays."""
    assert sorted(a) == sorted(b)
    assert a["manifest"].equals(b["manifest"])
    for name in a.keys() - {"manifest"}:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --------------------------------------------------------------------------------------- tests


def test_ingest_killed_at_several_points_then_rerun_completes(setup: Setup):
    store, home = setup.work / "store_ingest", setup.work / "home_ingest"
    before: dict = {}
    # k counts passes in that run only (cached components are skipped). With 2 sequences:
    # mid-array in ID0's 2nd component; ID0's 3rd component written but not renamed; ID1's audio
    # renamed into place but never recorded by Dagster.
    for kill in ("array_created:3", "component_written:2", "component_published:4"):
        setup.run(INGEST, store, home, kill=kill)
        after = published_components(store, setup.reference)
        assert set(before) <= set(after), f"{kill}: lost {set(before) - set(after)}"
        assert len(after) > len(before), f"{kill}: no progress"
        before = after
    assert len(before) < len(KEYS) * len(COMPONENTS)  # the kills did interrupt the ingestion

    setup.run(INGEST, store, home)
    final = published_components(store, setup.reference)
    assert final == published_components(setup.reference, None)
    assert leftovers(store) == []
    # The killed runs are not left "running" in the UI: the next `facetalk` call marked them failed.
    runs = DagsterInstance.from_config(str(home)).get_runs()
    assert [r.status for r in runs].count(DagsterRunStatus.FAILURE) >= 3
    assert DagsterRunStatus.STARTED not in [r.status for r in runs]


def test_component_replacement_killed_between_renames_keeps_the_old_one(setup: Setup):
    store, home, data = setup.work / "store_replace", setup.work / "home_replace", setup.work / "data_replace"
    shutil.copytree(setup.ingested_only, store)
    shutil.copytree(setup.data, data)
    key = KEYS[0]
    new_code = np.full(200, 0.25, np.float32)
    bad.rewrite_npz(bad.frame(data / key / bad.NPHM_EXPRESSIONS, 0, ".npz"), expression=new_code)
    reference = SequenceStore(setup.ingested_only)

    setup.run(INGEST, store, home, kill="replacing:1", data=data)
    nphm = SequenceStore(store).component_path(key, "nphm")
    assert not nphm.exists() and [p.name for p in nphm.parent.iterdir() if ".old-" in p.name]  # the window was hit
    # A reader puts the old component back: the previous ingestion is intact.
    assert published_components(store, setup.ingested_only) == published_components(setup.ingested_only, None)

    setup.run(INGEST, store, home, data=data)
    assert leftovers(store) == []
    replaced = SequenceStore(store)
    assert replaced.attrs(key, "nphm")[FINGERPRINT_ATTR] != reference.attrs(key, "nphm")[FINGERPRINT_ATTR]
    np.testing.assert_array_equal(replaced.read(key, "nphm", "expression")[0], new_code)
    np.testing.assert_array_equal(
        replaced.read(key, "nphm", "expression")[1:], reference.read(key, "nphm", "expression")[1:]
    )
    for other in KEYS[1:]:
        np.testing.assert_array_equal(
            replaced.read(other, "nphm", "expression"), reference.read(other, "nphm", "expression")
        )


def test_segment_writing_killed_keeps_current_then_rerun_completes(setup: Setup):
    store, home = setup.work / "store_segments", setup.work / "home_segments"
    shutil.copytree(setup.ingested_only, store)
    stride24, stride12 = str(setup.work / "stride24.yaml"), str(setup.work / "stride12.yaml")
    setup.run(["segments", "-c", stride24], store, home)
    (previous,) = segment_versions(store)
    previous_content = read_whole_segment_store(segments_root(store) / previous)

    def assert_previous_is_current() -> None:
        assert current_segments_dir(store).name == previous
        assert_same_content(read_whole_segment_store(segments_root(store) / previous), previous_content)

    setup.run(["segments", "-c", stride12], store, home, kill="segment_blocks:2")  # mid-frames
    assert segment_versions(store) == [previous], "a half-written segment store is visible"
    assert_previous_is_current()

    setup.run(["segments", "-c", stride12], store, home, kill="current_written:1")
    new = sorted(set(segment_versions(store)) - {previous})
    assert len(new) == 1  # complete and renamed into place, but not yet published as current
    SegmentReader(segments_root(store) / new[0])
    assert_previous_is_current()

    setup.run(["segments", "-c", stride12], store, home)
    current = current_segments_dir(store)
    reference = current_segments_dir(setup.reference)
    assert current.name == reference.name and (current / MANIFEST).is_file()
    assert_same_content(read_whole_segment_store(current), read_whole_segment_store(reference))
    assert segment_versions(store) == sorted([previous, current.name])
    stale_current = [p for p in leftovers(store) if p.name.startswith(f".{CURRENT}.tmp-")]
    assert [p for p in leftovers(store) if p not in stale_current] == []
    if stale_current:  # known gap, reported to the lead: nothing sweeps atomic_write_bytes' temporaries
        pytest.xfail(f"killed CURRENT update left {stale_current[0].name} behind (harmless to readers)")
