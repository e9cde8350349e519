"""The embedded run store: one SQLite file (``sqlite:///path``), safe for many processes.

* Writes are queued and written by one background thread per process, in batches of one
  transaction, so a task run pays a queue append, not a disk write. ``flush()`` (called
  at the end of every flow run and at exit) waits until everything queued is on disk.
* WAL mode, a 30 s busy timeout and retries with back-off: several processes writing at
  once wait their turn; ``database is locked`` never reaches the user.
* Each run records the host, pid and pid start time of its process. Opening the store
  marks runs left unfinished by a process that no longer exists as ``Crashed``.
* A file that is not a SQLite database is reported and never overwritten.

The read API is ``sqlite_reads``; the write queue and batch writer ``sqlite_writer``;
the writer process for busy flows ``sqlite_writer_process``. Also serves ``memory://``
with the in-memory store, for throwaway sessions.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

from headwater.errors import StoreError
from headwater.plugin_manager import hookimpl
from headwater.runs import FlowRun, TaskRun
from headwater.states import FINAL_TYPES, State
from headwater.stores import CacheEntry, MemoryRunStore, RunStore, active_flow_info

from .sqlite_reads import SQLiteReads
from .sqlite_writer import (BATCH_SECONDS, BatchWriter, WriteQueue, connect, flow_entry, flow_info_entry, retry_busy,
                            task_header, task_state, write_transaction)
from .sqlite_writer_process import PROCESS_AT, PROCESS_TICK, WriterProcess, spawning, start_writer_process

SCHEMA_VERSION = 1
_UNFINISHED = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING")
_HOST = socket.gethostname()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flow_runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, flow_name TEXT NOT NULL, flow_version TEXT,
    parent_flow_run_id TEXT, parent_task_run_id TEXT, parameters TEXT, tags TEXT,
    state_type TEXT, state_name TEXT, state_message TEXT, start_ts REAL, end_ts REAL,
    run_count INTEGER, host TEXT, pid INTEGER, pid_start TEXT, created REAL
);
CREATE INDEX IF NOT EXISTS flow_runs_created ON flow_runs (created);
CREATE INDEX IF NOT EXISTS flow_runs_name ON flow_runs (name);
CREATE INDEX IF NOT EXISTS flow_runs_flow ON flow_runs (flow_name, created);
CREATE INDEX IF NOT EXISTS flow_runs_state ON flow_runs (state_type);
CREATE INDEX IF NOT EXISTS flow_runs_parent ON flow_runs (parent_flow_run_id);
CREATE TABLE IF NOT EXISTS task_runs (
    id TEXT PRIMARY KEY, flow_run_id TEXT, name TEXT NOT NULL, task_name TEXT NOT NULL,
    task_key TEXT, parameters TEXT, tags TEXT, cache_key TEXT, result_location TEXT,
    upstream TEXT, state_type TEXT, state_name TEXT, state_message TEXT, start_ts REAL,
    end_ts REAL, run_count INTEGER, host TEXT, pid INTEGER, pid_start TEXT, created REAL,
    seq INTEGER
);
CREATE INDEX IF NOT EXISTS task_runs_flow ON task_runs (flow_run_id, seq);
CREATE INDEX IF NOT EXISTS task_runs_state ON task_runs (state_type);
CREATE TABLE IF NOT EXISTS states (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, run_kind TEXT NOT NULL,
    type TEXT NOT NULL, name TEXT NOT NULL, message TEXT, ts REAL NOT NULL, details TEXT
);
CREATE INDEX IF NOT EXISTS states_run ON states (run_id, seq);
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY, task_name TEXT, task_run_id TEXT, location TEXT NOT NULL,
    serializer TEXT, created REAL NOT NULL, expiration REAL, size INTEGER, digest TEXT
);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, flow_run_id TEXT, task_run_id TEXT, ts REAL,
    level TEXT, logger TEXT, message TEXT
);
CREATE INDEX IF NOT EXISTS logs_flow ON logs (flow_run_id, seq);
CREATE INDEX IF NOT EXISTS logs_task ON logs (task_run_id, seq);
"""
# Added after schema 1 shipped, without a version bump: created on open when missing.
_FLOWS_TABLE = """
CREATE TABLE IF NOT EXISTS flows (
    name TEXT PRIMARY KEY, description TEXT, version TEXT, tags TEXT, updated REAL
)"""
_SCHEMA += _FLOWS_TABLE + ";\n"
_CACHE_COLUMNS = "key, task_name, task_run_id, location, serializer, created, expiration, size, digest"


def add_cache_digest_column(conn: sqlite3.Connection) -> str:
    """Give ``cache_entries`` of a store made before entries had digests its ``digest``
    column (NULL for the old rows: not checked); return the columns to read. Added without
    a schema version bump, like ``flows``: older headwater versions still use the file."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(cache_entries)")}
    if not columns or "digest" in columns:
        return _CACHE_COLUMNS
    try:
        conn.execute("ALTER TABLE cache_entries ADD COLUMN digest TEXT")
    except sqlite3.OperationalError as exc:
        if "duplicate column" in str(exc):  # another process added it meanwhile
            return _CACHE_COLUMNS
        if "readonly" in str(exc).replace(" ", ""):  # read-only file: read without digests
            return _CACHE_COLUMNS.rsplit(",", 1)[0]
        raise
    return _CACHE_COLUMNS


def process_start_token(pid: int) -> str | None:
    """When the process started (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode(errors="replace")
        return data.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, token: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if token is not None:
        current = process_start_token(pid)
        if current is not None and current != token:
            return False  # the pid now belongs to another process
    return True


class SQLiteRunStore(SQLiteReads, RunStore):
    _cache_columns = _CACHE_COLUMNS  # without digest for a read-only store made before it

    def __init__(self, path: Path | str) -> None:
        # Absolute once: connections opened later (the writer thread's, the writer
        # process's) must reach this file even if the program changes directory.
        self.path = Path(path).absolute()
        self._local = threading.local()
        self._closed = False
        self._start_process()
        self._open()
        _stores.add(self)

    def _start_process(self) -> None:
        """This process's writer: its identity on the rows, its queue and thread."""
        self._pid = os.getpid()
        self._pid_start = process_start_token(self._pid)
        self._rows = BatchWriter(_HOST, self._pid, self._pid_start)
        self._queue = WriteQueue(str(self.path), self._write_batch, self._writer_exit)
        parent = getattr(self, "_process", None)
        if parent is not None:
            parent.forget()  # a forked child: the parent's writer process is not ours
        self._process: WriterProcess | None = None
        self._may_spawn = True
        self._open_runs: set[str] = set()  # task runs whose row the queue has: no header again
        self._created: dict[str, tuple[Any, ...]] = {}  # headers waiting for their run's first state
        if self._closed:
            self._queue.closed = True

    def _forget_parent(self) -> None:
        """In a forked child: the parent's writer thread, queue and locks are not ours
        (a lock may have been held at the fork); this process starts its own writer."""
        self._start_process()

    # -- connections ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _open(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {directory} for the run store "
                             f"(HEADWATER_HOME / HEADWATER_DATABASE_URL): {exc.strerror or exc}") from None
        if not os.access(directory, os.W_OK):
            raise StoreError(f"cannot write to {directory} (HEADWATER_HOME / HEADWATER_DATABASE_URL): "
                             f"permission denied")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file, so it cannot be the run store; move it away, "
                             f"or point HEADWATER_DATABASE_URL elsewhere")
        if self.path.exists() and self.path.stat().st_size > 0:
            try:
                with open(self.path, "rb") as handle:
                    header = handle.read(16)
            except OSError as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc.strerror or exc}") from None
            if header != b"SQLite format 3\x00":
                raise StoreError(
                    f"{self.path} is not a headwater run store (not an SQLite database). "
                    f"It was left untouched: move it away, or point HEADWATER_DATABASE_URL elsewhere."
                )
        try:
            conn = self._conn()
            self._retry(lambda: self._set_wal(conn))
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer headwater (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION}); upgrade headwater")
            if version < SCHEMA_VERSION:
                self._retry(lambda: self._create_schema(conn))
            elif not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'flows'").fetchone():
                self._retry(lambda: conn.execute(_FLOWS_TABLE))
            self._cache_columns = self._retry(lambda: add_cache_digest_column(conn))
            self.mark_crashed_runs()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be used as the run store: {exc}. "
                             f"It was left untouched.") from None

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry(self, fn: Any) -> Any:
        return retry_busy(fn)

    def _write_txn(self, fn: Any) -> Any:
        return write_transaction(self._conn(), fn)

    # -- crash detection -------------------------------------------------------------

    def mark_crashed_runs(self) -> int:
        """Mark unfinished runs of dead processes on this host ``Crashed``; return how many."""
        conn = self._conn()
        marks = ",".join("?" * len(_UNFINISHED))
        found: list[tuple[str, str]] = []
        for table, kind in (("flow_runs", "flow"), ("task_runs", "task")):
            rows = conn.execute(
                f"SELECT id, pid, pid_start FROM {table} WHERE host = ? AND state_type IN ({marks})",
                (_HOST, *_UNFINISHED)).fetchall()
            found += [(table, rid) for rid, pid, token in rows
                      if pid is not None and pid != self._pid and not process_alive(pid, token)]
        if not found:
            return 0
        now = time.time()
        message = "The process running this run ended before the run finished."

        def write(conn: sqlite3.Connection) -> None:
            for table, rid in found:
                cur = conn.execute(
                    f"UPDATE {table} SET state_type='CRASHED', state_name='Crashed', state_message=?, "
                    f"end_ts=? WHERE id=? AND state_type IN ({marks})", (message, now, rid, *_UNFINISHED))
                if cur.rowcount:
                    conn.execute("INSERT INTO states (run_id, run_kind, type, name, message, ts) "
                                 "VALUES (?, ?, 'CRASHED', 'Crashed', ?, ?)",
                                 (rid, "flow" if table == "flow_runs" else "task", message, now))

        self._write_txn(write)
        return len(found)

    # -- writes (queued: see sqlite_writer) ---------------------------------------------------

    def create_flow_run(self, run: FlowRun) -> None:
        self._queue.put(flow_entry(run, None))
        info = active_flow_info(run)
        if info is not None:
            self._queue.put(flow_info_entry(info))

    def create_task_run(self, run: TaskRun) -> None:
        # Held until the run's first state (the engine records Pending right after),
        # then queued with it: one queue entry fewer per task run.
        self._created[run.id] = task_header(run)
        self._open_runs.add(run.id)

    def record_state(self, run: FlowRun | TaskRun, state: State) -> None:
        if run.kind == "task":
            run_id = run.id
            open_runs = self._open_runs
            if run_id not in open_runs:  # recorded without create_task_run first
                self.create_task_run(run)
            header = self._created.pop(run_id, None)
            entry = task_state(run, state)
            self._queue.put(entry if header is None else header + entry)
            if state.type in FINAL_TYPES:
                open_runs.discard(run_id)  # the set holds unfinished runs only
        else:
            self._queue.put(flow_entry(run, state))

    def record_logs(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self._queue.put_logs(rows)

    def _write_batch(self, batch: list[Any], logs: list[tuple[Any, ...]], marks: list[Any]) -> None:
        """In the writer thread: one batch, one transaction; busy flows hand their batches
        to a writer process (sqlite_writer_process) so writing them takes no GIL time."""
        process = self._process
        if process is None and self._may_spawn and len(batch) + len(logs) >= PROCESS_AT:
            with spawning:  # no fork between starting the child and owning its pipes
                process = self._process = start_writer_process(self.path, self._rows)
            self._may_spawn = process is not None
        if process is not None and process.is_ready():
            if process.send(batch, logs, marks):
                # Smaller batches: the child writes while the flow runs, and the last
                # batch, which the flow's final flush waits for, stays short.
                self._queue.tick = PROCESS_TICK
                return
            self._queue.tick = BATCH_SECONDS
            # The process is gone: what it did not confirm (this batch too) is written
            # here, and so is everything after.
            self._process = None
            self._may_spawn = False
            self._queue.tick = BATCH_SECONDS
            self._take_back(process)
            return
        if process is not None and not process.alive:  # it never started
            self._process = None
            self._may_spawn = False
            process.close()
        self._write_here(batch, logs)

    def _write_here(self, batch: list[Any], logs: list[tuple[Any, ...]]) -> None:
        if batch or logs:  # (a flush with nothing queued: nothing to write here)
            self._write_txn(self._rows.transaction(batch, logs))

    def _take_back(self, process: WriterProcess) -> None:
        """End ``process`` and write here what it did not confirm; raise what it reported."""
        process.close()
        self._rows.seq = max(self._rows.seq, process.seq)
        for old_batch, old_logs in process.unconfirmed(self._conn()):
            self._write_here(old_batch, old_logs)
        if process.error is not None:
            raise StoreError(f"the store's writer process could not write a batch: {process.error}")

    def _writer_exit(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            try:
                self._take_back(process)
            except Exception:  # noqa: S110 - flush() before close() reported errors already
                pass
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def flush(self) -> None:
        for run_id in list(self._created):  # runs created but given no state: rows all the same
            header = self._created.get(run_id)
            if header is not None:
                # Queued before it is taken: a first state recorded meanwhile by another
                # thread then finds it still held, or follows it in the queue. (Queued
                # twice is harmless: the same row.)
                self._queue.put(header)
                self._created.pop(run_id, None)
        self._queue.flush()

    def close(self) -> None:
        self._closed = True
        try:
            self._queue.close()
        finally:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None

    # -- cache index (written at once: other processes must see it) ----------------------

    def read_cache_entry(self, key: str) -> CacheEntry | None:
        row = self._conn().execute(
            f"SELECT {self._cache_columns} FROM cache_entries WHERE key = ?", (key,)).fetchone()
        return CacheEntry(*row) if row else None

    def write_cache_entry(self, entry: CacheEntry) -> None:
        self._write_txn(lambda conn: conn.execute(
            f"INSERT OR REPLACE INTO cache_entries ({_CACHE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (entry.key, entry.task_name, entry.task_run_id, entry.location, entry.serializer,
             entry.created, entry.expiration, entry.size, entry.digest)))

    def read_cache_entries(self) -> list[CacheEntry]:
        rows = self._conn().execute(
            f"SELECT {self._cache_columns} FROM cache_entries ORDER BY created").fetchall()
        return [CacheEntry(*row) for row in rows]

    def delete_cache_entries(self, *, expired_only: bool = False, task_name: str | None = None) -> list[CacheEntry]:
        def write(conn: sqlite3.Connection) -> list[CacheEntry]:
            # Select and delete in one write transaction: an entry another process
            # refreshes meanwhile is either deleted whole or kept whole, never its
            # fresh row deleted because its stale one matched.
            rows = conn.execute(
                f"SELECT {self._cache_columns} FROM cache_entries ORDER BY created").fetchall()
            entries = [e for e in (CacheEntry(*row) for row in rows)
                       if (not expired_only or e.is_expired()) and (task_name is None or e.task_name == task_name)]
            conn.executemany("DELETE FROM cache_entries WHERE key = ?", [(e.key,) for e in entries])
            return entries

        return self._write_txn(write)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` (three slashes) or ``sqlite:////abs/path.db`` (four) → a Path."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite" or parsed.netloc:
        raise StoreError(f"HEADWATER_DATABASE_URL={url!r}: expected sqlite:///relative/path.db "
                         f"or sqlite:////absolute/path.db")
    path = unquote(parsed.path)[1:]  # the slash after the empty host
    if not path:
        raise StoreError(f"HEADWATER_DATABASE_URL={url!r} names no file")
    return Path(path).expanduser()


#: Every store made in this process, so a forked child can forget their writers.
_stores: weakref.WeakSet[SQLiteRunStore] = weakref.WeakSet()


def _forget_parent_writers() -> None:
    for store in list(_stores):
        store._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_writers)


def _make_sqlite(url: str, session: Any) -> RunStore:
    return SQLiteRunStore(sqlite_path(url))


def _make_memory(url: str, session: Any) -> RunStore:
    return MemoryRunStore()


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_run_store("sqlite", _make_sqlite, source="sqlite_store")
    registry.add_run_store("memory", _make_memory, source="sqlite_store")


@hookimpl(trylast=True)
def headwater_make_run_store(session: Any) -> RunStore:
    url = session.settings.database_url
    scheme = urlparse(url).scheme if "://" in url else ""
    if not scheme:
        raise StoreError(f"HEADWATER_DATABASE_URL={url!r} has no scheme; expected e.g. "
                         f"sqlite:///{session.settings.home / 'headwater.db'}")
    factory = session.registry.get("run_store", scheme, wanted_for="HEADWATER_DATABASE_URL")
    return factory(url, session)
