"""Make a SQLite Dagster instance's per-event writes cheap in the processes that ingest.

Dagster's SQLite storages open a connection per event (NullPool), commit and close it. In WAL mode
(Dagster's setting) closing the *last* connection to a file checkpoints the log and fsyncs, and
each commit fsyncs too: ~20 ms an event on this machine's disk, a third of a small sequence's
ingest run (~64 events), and the commits of parallel lanes queue on the same files. Here each
ingesting process keeps one idle connection open to each SQLite file Dagster writes (so closing
Dagster's is never the last: no checkpoint), and Dagster's connections use `synchronous=NORMAL`,
SQLite's recommended setting for WAL: no fsync per commit, still safe against a crashed process
(a power cut may lose the last events, never corrupt the file). ~0.1 ms an event.

Nothing else changes: the same events in the same files, for the UI and the daemon. Other storages
(PostgreSQL) are not touched.
"""

from __future__ import annotations

import atexit
import sqlite3
import threading
from collections import OrderedDict

MAX_KEPT_OPEN = 16  # files with an idle connection held (a run's shard, the index, runs.db, ...)

_lock = threading.Lock()
_kept: OrderedDict[str, sqlite3.Connection] = OrderedDict()
_installed = False


def install() -> None:
    """Apply to every SQLite connection SQLAlchemy opens in this process from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _on_connect)
        # The last close checkpoints, so the .db file is whole again when the process ends (explicitly:
        # Python does not promise to finalize module globals at exit).
        atexit.register(_close_kept)
        _installed = True


def _close_kept() -> None:
    with _lock:
        while _kept:
            _kept.popitem()[1].close()


def _on_connect(dbapi_connection, _record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    row = dbapi_connection.execute("PRAGMA database_list").fetchone()
    path = row[2] if row else ""
    if not path:  # in-memory
        return
    journal = dbapi_connection.execute("PRAGMA journal_mode").fetchone()[0]
    if str(journal).lower() != "wal":  # a new file before Dagster switches it to WAL: next time
        return
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    with _lock:
        if path in _kept:
            _kept.move_to_end(path)
            return
        # An idle connection holds no lock. Once it has read (opened the WAL index) it keeps the WAL
        # from being checkpointed and deleted whenever Dagster's connection closes.
        keeper = sqlite3.connect(path, check_same_thread=False)
        keeper.execute("SELECT count(*) FROM sqlite_master").fetchone()
        _kept[path] = keeper
        while len(_kept) > MAX_KEPT_OPEN:
            _kept.popitem(last=False)[1].close()
