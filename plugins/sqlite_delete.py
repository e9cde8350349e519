"""Deleting flow runs from the SQLite run store, and giving the room back.

``delete_flow_runs`` removes flow runs with their subflow runs (at any depth), task
runs, states and log lines in one write transaction: another process sees all of it or
none. Cache entries stay (``headwater cache clear`` owns them). ``compact`` then
rewrites the file without the free pages (``VACUUM``) and truncates the write-ahead log,
so the file on disk shrinks. A mixin of ``SQLiteRunStore``: it uses the store's
``_conn()``, ``_write_txn()`` and write queue.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Sequence

from headwater.stores import DeletedRuns

from .sqlite_writer import retry_busy

#: The flow runs a deletion removes: the roots in ``temp.doomed_roots`` and, at any
#: depth, their subflow runs.
_DOOMED = ("WITH RECURSIVE doomed(id) AS (SELECT id FROM flow_runs WHERE id IN (SELECT id FROM temp.doomed_roots) "
           "UNION SELECT f.id FROM flow_runs f JOIN doomed d ON f.parent_flow_run_id = d.id) ")


class SQLiteDeletes:
    """``delete_flow_runs`` and ``compact`` of the run store interface."""

    _conn: Callable[[], sqlite3.Connection]
    _write_txn: Callable[[Any], Any]
    flush: Callable[[], None]  # the store's (queued_writes)

    def delete_flow_runs(self, flow_run_ids: Sequence[str]) -> DeletedRuns:
        self.flush()  # rows this process queued for them first, so none comes back after

        def write(conn: sqlite3.Connection) -> DeletedRuns:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed_roots (id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM temp.doomed_roots")
            conn.executemany("INSERT OR IGNORE INTO temp.doomed_roots VALUES (?)", [(i,) for i in flow_run_ids])
            ids = [row[0] for row in conn.execute(_DOOMED + "SELECT id FROM doomed")]
            conn.execute("DELETE FROM temp.doomed_roots")
            conn.executemany("INSERT OR IGNORE INTO temp.doomed_roots VALUES (?)", [(i,) for i in ids])
            # Now every flow run to delete is a root: no recursion needed below.
            tasks = "SELECT id FROM task_runs WHERE flow_run_id IN (SELECT id FROM temp.doomed_roots)"
            out = DeletedRuns(ids)
            out.states = conn.execute(f"DELETE FROM states WHERE run_id IN ({tasks}) "
                                      f"OR run_id IN (SELECT id FROM temp.doomed_roots)").rowcount
            out.logs = conn.execute(f"DELETE FROM logs WHERE flow_run_id IN (SELECT id FROM temp.doomed_roots) "
                                    f"OR task_run_id IN ({tasks})").rowcount
            out.task_runs = conn.execute(
                "DELETE FROM task_runs WHERE flow_run_id IN (SELECT id FROM temp.doomed_roots)").rowcount
            conn.execute("DELETE FROM flow_runs WHERE id IN (SELECT id FROM temp.doomed_roots)")
            conn.execute("DELETE FROM temp.doomed_roots")
            return out

        return self._write_txn(write)

    def compact(self) -> None:
        conn = self._conn()
        # VACUUM rewrites the file without its free pages (it waits for other writers
        # like any write); the checkpoint then copies the log back and truncates it.
        retry_busy(lambda: conn.execute("VACUUM"))
        retry_busy(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
