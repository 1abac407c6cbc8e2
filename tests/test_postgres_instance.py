"""The instance on a real PostgreSQL server (loopback), runs through the queue and the daemon.

`FACETALK_INSTANCE=postgres` + DAGSTER_PG_* make `ensure_dagster_home` write the Postgres
`dagster.yaml`; `dagster dev` (webserver, daemon, code server) serves it; partition runs of
`ingest_sequence` are submitted together, wait in the queue, and run several at a time (at most
`FACETALK_MAX_CONCURRENT_RUNS`). Every materialization, check result and partition must be
recorded exactly once, and every component must be in the store.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from pipelines.assets.ingestion import per_sequence_assets
from pipelines.instance_config import InstanceSettingError, instance_yaml
from pipelines.settings import ensure_dagster_home
from storage.sequence_store import COMPONENTS, SequenceStore
from tests.builders import write_sequence
from tests.dagster_server import launch_job_run, running_dagster_dev, wait_for_run, wait_until_ready
from tests.postgres_server import postgres_bin_dir, running_postgres

BIN_DIR = postgres_bin_dir()
if BIN_DIR is None:
    pytest.skip(
        "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install Debian's `postgresql` "
        "package (`make install` does)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
KEYS = [f"ID{i}_SEN0{j}" for i in range(2) for j in (1, 2)]  # four partitions
MAX_RUNS = 2  # so the queue must hold runs back


@pytest.fixture(scope="module")
def postgres():
    with running_postgres(BIN_DIR) as server:
        yield server


@pytest.fixture
def postgres_home(postgres, tmp_path, monkeypatch) -> Path:
    """DAGSTER_HOME with the yaml FACETALK_INSTANCE=postgres writes; the settings in os.environ."""
    for name, value in {
        **postgres.env(),
        "FACETALK_INSTANCE": "postgres",
        "FACETALK_MAX_CONCURRENT_RUNS": str(MAX_RUNS),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }.items():
        monkeypatch.setenv(name, value)
    return ensure_dagster_home()


def test_postgres_yaml_loads_with_the_queue_and_needs_its_settings(postgres_home, monkeypatch):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    text = (postgres_home / "dagster.yaml").read_text()
    assert "{env: DAGSTER_PG_PASSWORD}" in text and os.environ["DAGSTER_PG_PASSWORD"] not in text
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == MAX_RUNS

    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    with pytest.raises(InstanceSettingError, match="DAGSTER_PG_PASSWORD"):
        instance_yaml()
    monkeypatch.setenv("FACETALK_INSTANCE", "mysql")
    with pytest.raises(InstanceSettingError, match="FACETALK_INSTANCE must be one of sqlite, postgres"):
        ensure_dagster_home()
    monkeypatch.setenv("FACETALK_INSTANCE", "sqlite")  # the facetalk-written file follows the setting back
    assert "postgres" not in (ensure_dagster_home() / "dagster.yaml").read_text().split("\n", 1)[1]


def _overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that share a moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_partition_runs_through_the_queue_on_postgres(postgres_home, tmp_path, tiny_encoder_dir):
    data, store = tmp_path / "data", tmp_path / "store"
    for seed, key in enumerate(KEYS):
        write_sequence(data, key, n_frames=24, seed=seed)
    env = {
        **os.environ,
        "FACETALK_DATA_ROOT": str(data),
        "FACETALK_STORE": str(store),
        "FACETALK_AUDIO_ENCODER": str(tiny_encoder_dir),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("sequences", KEYS)
    instance.add_dynamic_partitions("sequences", KEYS[:2])  # registering again must not duplicate

    started = time.monotonic()
    with running_dagster_dev(REPO / "workspace.yaml", env, tmp_path / "dagster_dev.log") as server:
        wait_until_ready(server, "facetalk", timeout=180)
        run_ids = {key: launch_job_run(server, "ingest_sequence", {"dagster/partition": key}) for key in KEYS}
        for run_id in run_ids.values():
            wait_for_run(server, run_id, timeout=300)
    print(f"{len(KEYS)} partition runs through the queue in {time.monotonic() - started:.0f} s")

    records = instance.get_run_records(RunsFilter(run_ids=list(run_ids.values())))
    assert {r.dagster_run.status for r in records} == {DagsterRunStatus.SUCCESS}
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == sorted(KEYS)
    peak = _overlap([(r.start_time, r.end_time) for r in records])
    assert peak == MAX_RUNS, f"{peak} runs in flight at once; the queue allows {MAX_RUNS} of {len(KEYS)}"

    assert sorted(instance.get_dynamic_partitions("sequences")) == sorted(KEYS)
    expected_checks = {(a.key, spec.name) for a in per_sequence_assets for spec in a.check_specs}
    assert expected_checks, "the ingestion assets declare checks"
    materialized, checked = Counter(), Counter()
    for key, run_id in run_ids.items():
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.dagster_event
            materialized[(event.asset_key, event.partition)] += 1
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            assert evaluation.passed, (key, evaluation)
            checked[(evaluation.asset_key, evaluation.check_name, key)] += 1
    assert materialized == Counter({(a.key, key): 1 for a in per_sequence_assets for key in KEYS})
    assert checked == Counter({(asset, name, key): 1 for asset, name in expected_checks for key in KEYS})
    for asset in per_sequence_assets:  # the asset index agrees with the event log
        assert instance.get_materialized_partitions(asset.key) == set(KEYS), asset.key
    assert SequenceStore(store).sequences_with(*COMPONENTS) == sorted(KEYS)
