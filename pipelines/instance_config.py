"""The Dagster instance's `dagster.yaml`, chosen by one setting: `FACETALK_INSTANCE`.

- `sqlite` (default): run and event storage in SQLite files under DAGSTER_HOME; one machine.
- `postgres`: run, event-log and schedule storage in PostgreSQL (`dagster-postgres`), for several
  processes or machines (daemon, webserver, run workers, Kubernetes pods) sharing one instance.
  Connection settings are the usual `DAGSTER_PG_HOST`, `DAGSTER_PG_PORT` (default 5432),
  `DAGSTER_PG_USERNAME`, `DAGSTER_PG_PASSWORD`, `DAGSTER_PG_DB`; the yaml refers to them by name
  (`{env: ...}`), so no password is written to disk and every Dagster process must have them set.

Both use the queued run coordinator: runs wait in the queue and the daemon starts at most
`FACETALK_MAX_CONCURRENT_RUNS` (default 4) at once; the `gpu` pool (training) runs one step at a
time per instance (`concurrency.pools.default_limit`), and one `ingest_new_sequences` batch runs at
a time (its lanes already use every core).
"""

from __future__ import annotations

import os

INSTANCE_ENV = "FACETALK_INSTANCE"
MAX_RUNS_ENV = "FACETALK_MAX_CONCURRENT_RUNS"
PG_REQUIRED = ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
PG_PORT = "DAGSTER_PG_PORT"
MARKER = "# Written by facetalk"  # files starting with it are ours to rewrite; any other is the user's
KINDS = ("sqlite", "postgres")
BATCH_LANES_TAG = "facetalk/ingest_lanes"  # on ingest_new_sequences runs (pipelines/ingest_batch.py)


class InstanceSettingError(ValueError):
    """A FACETALK_INSTANCE / DAGSTER_PG_* / FACETALK_MAX_CONCURRENT_RUNS setting that cannot be used."""


def instance_kind() -> str:
    kind = os.environ.get(INSTANCE_ENV, "").strip().lower() or "sqlite"
    if kind not in KINDS:
        raise InstanceSettingError(f"{INSTANCE_ENV} must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def max_concurrent_runs() -> int:
    value = os.environ.get(MAX_RUNS_ENV, "").strip() or "4"
    if not value.isdigit() or int(value) <= 0:
        raise InstanceSettingError(f"{MAX_RUNS_ENV} must be a positive whole number of runs, got {value!r}")
    return int(value)


def _run_queue(max_runs: int) -> str:
    return f"""\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
concurrency:
  pools:
    default_limit: 1  # the `gpu` pool: one training step at a time on this instance
  runs:
    max_concurrent_runs: {max_runs}
    tag_concurrency_limits:  # one ingest_new_sequences batch at a time: its lanes use every core
      - key: {BATCH_LANES_TAG}
        limit: 1
telemetry:
  enabled: false
"""


def _postgres_storage() -> str:
    missing = [name for name in PG_REQUIRED if not os.environ.get(name)]
    if missing:
        raise InstanceSettingError(
            f"{INSTANCE_ENV}=postgres needs {', '.join(missing)} set (the PostgreSQL connection)"
        )
    port = f"\n      port: {{env: {PG_PORT}}}" if os.environ.get(PG_PORT) else ""
    return f"""\
storage:
  postgres:
    postgres_db:
      hostname: {{env: DAGSTER_PG_HOST}}{port}
      username: {{env: DAGSTER_PG_USERNAME}}
      password: {{env: DAGSTER_PG_PASSWORD}}
      db_name: {{env: DAGSTER_PG_DB}}
      scheme: postgresql+psycopg2  # the driver dagster-postgres installs; SQLAlchemy 2.1 would pick psycopg 3
"""


def instance_yaml() -> str:
    """The `dagster.yaml` for the current settings (see the module docstring)."""
    kind = instance_kind()
    header = f"{MARKER} ({INSTANCE_ENV}={kind}); edit the settings, not this file, or remove this line to keep edits.\n"
    storage = _postgres_storage() if kind == "postgres" else ""
    return header + storage + _run_queue(max_concurrent_runs())


def is_ours(text: str) -> bool:
    return text.startswith(MARKER)
