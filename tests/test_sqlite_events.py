"""Cheap per-event SQLite writes (pipelines/sqlite_events.py) on real SQLite files, as Dagster opens them."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from pipelines import sqlite_events

REPO = Path(__file__).resolve().parents[1]


def test_connections_to_a_wal_file_skip_fsyncs_and_never_checkpoint_on_close(tmp_path):
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as setup:  # a file Dagster made: WAL mode
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, body TEXT)")
    fresh = tmp_path / "fresh.db"  # not WAL yet (Dagster switches a new shard after creating it): untouched

    sqlite_events.install()
    sqlite_events.install()  # idempotent: one listener
    for _ in range(3):  # what Dagster does per event: an engine without a pool, one connection, commit, close
        engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
        with engine.connect() as connection, connection.begin():
            connection.execute(text("INSERT INTO event (body) VALUES ('x')"))
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL (FULL is 2)
        engine.dispose()
    # Closing Dagster's connection was never the last one: the log was not checkpointed and deleted.
    assert (tmp_path / "events.db-wal").exists() and str(path) in sqlite_events._kept
    with sqlite3.connect(path) as reader:  # every event is there for other processes (the UI)
        assert reader.execute("SELECT count(*) FROM event").fetchone() == (3,)

    engine = create_engine(f"sqlite:///{fresh}", poolclass=NullPool)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2
    engine.dispose()
    assert str(fresh) not in sqlite_events._kept


def test_the_kept_connections_close_at_exit_leaving_the_file_whole(tmp_path):
    path = tmp_path / "events.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE event (id INTEGER PRIMARY KEY)")
    setup.close()
    script = (
        "import sys; from sqlalchemy import create_engine, text; from sqlalchemy.pool import NullPool; "
        "from pipelines import sqlite_events; sqlite_events.install(); "
        "engine = create_engine('sqlite:///' + sys.argv[1], poolclass=NullPool)\n"
        "with engine.connect() as c, c.begin(): c.execute(text('INSERT INTO event DEFAULT VALUES'))\n"
        "assert sqlite_events._kept"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path)], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert not (tmp_path / "events.db-wal").exists()  # checkpointed into the .db by the last close
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT count(*) FROM event").fetchone() == (1,)
