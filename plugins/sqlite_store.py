"""The embedded run store: one SQLite file (``sqlite:///path``), safe for many processes.

* Writes are queued and written by one background thread per process, in batches of one
  transaction, so a task run pays a queue append, not a disk write. ``flush()`` (called
  at the end of every flow run and at exit) waits until everything queued is on disk.
* WAL mode, a 30 s busy timeout and retries with back-off: several processes writing at
  once wait their turn; ``database is locked`` never reaches the user.
* Each run records the host, pid and pid start time of its process, and the writer
  stamps a heartbeat on its unfinished flow runs. Runs left unfinished by a process that
  no longer exists are shown ``Crashed`` by every read, and marked so when the store is
  opened (``sqlite_liveness``).
* A file that is not a SQLite database is reported and never overwritten; an SQLite
  database that is not headwater's (or of a newer headwater) is recognised before
  anything is written to it, and left as it was.
* Every text is written (lone surrogates as their backslash escapes: ``sqlite_values.
  safe_text``); a row that cannot be written takes no other row with it (``BatchWriter.
  write``). The home directory is created 0700 and the file 0600.

The read API is ``sqlite_reads``, its paged reads ``sqlite_pages``; deleting runs
``sqlite_delete``; the cache index ``sqlite_cache``; the write queue
``sqlite_queue``; the queue entries and rows ``sqlite_rows``; the batch writer
``sqlite_writer``; who writes the batches, the thread or a writer process for busy flows
(``HEADWATER_STORE_WRITER``), ``sqlite_writers`` and ``sqlite_writer_process``; crash
detection ``sqlite_liveness``; the files' privacy ``sqlite_privacy``; every tuning
constant ``sqlite_tuning``. Also serves ``memory://`` with the in-memory store, for
throwaway sessions.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from headwater.errors import StoreError
from headwater.plugin_manager import hookimpl
from headwater.runs import FlowRun
from headwater.states import State
from headwater.stores import MemoryRunStore, RunStore

from .private_files import make_private_dirs
from .queued_writes import QueuedWrites
from .sqlite_cache import SQLiteCacheIndex, add_cache_digest_column
from .sqlite_delete import SQLiteDeletes
from .sqlite_liveness import (  # noqa: F401 - process_start_token also imported from here
    HOST,
    UNFINISHED,
    Heartbeat,
    add_heartbeat_column,
    find_dead_runs,
    here,
    mark_dead_runs,
    own_token,
    process_alive,
    process_start_token,
)
from .sqlite_pages import SQLitePages
from .sqlite_privacy import create_private, warn_if_shared
from .sqlite_queue import WriteQueue
from .sqlite_values import details_json
from .sqlite_writer import (
    BatchWriter,
    connect,
    read_only,
    retry_busy,
    write_transaction,
)
from .sqlite_writers import ThreadWriter, Writer, check_writer_choice, choose_writer

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flow_runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, flow_name TEXT NOT NULL, flow_version TEXT,
    parent_flow_run_id TEXT, parent_task_run_id TEXT, parameters TEXT, tags TEXT,
    state_type TEXT, state_name TEXT, state_message TEXT, start_ts REAL, end_ts REAL,
    run_count INTEGER, host TEXT, pid INTEGER, pid_start TEXT, created REAL, heartbeat REAL,
    entry_point TEXT, inputs_hash TEXT, parameters_location TEXT, result_location TEXT
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
    seq INTEGER, inputs_hash TEXT
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

#: Schema 2 (retrying a flow run from where it failed): where each flow is defined, the
#: hashes that match calls to earlier runs, and where exact parameters and subflow
#: results are persisted. Schema 1 stores get these columns when first opened.
_SCHEMA_2_COLUMNS = (
    ("flow_runs", "entry_point"), ("flow_runs", "inputs_hash"), ("flow_runs", "parameters_location"),
    ("flow_runs", "result_location"), ("task_runs", "inputs_hash"),
)


class SQLiteRunStore(SQLitePages, SQLiteDeletes, SQLiteCacheIndex, QueuedWrites, RunStore):
    """The default run store: every run, state and log line of every flow, in one SQLite
    file that many processes may share (the module docstring says how).

    ``path``: the database file (created 0600, in a 0700 directory, when missing).
    ``home``: HEADWATER_HOME; a store inside it warns once when others may read it.
    ``writer``: who writes the queued batches, ``"auto"``, ``"thread"`` or ``"process"``
    (``HEADWATER_STORE_WRITER``, see ``sqlite_writers``); another value is a
    ``ConfigurationError``.

    Writes (``create_flow_run``, ``create_task_run``, ``record_state``, ``record_logs``;
    ``queued_writes``) may come from any thread: they append to the queue and return. ``flush()`` waits
    until everything queued before it is committed; ``close()`` flushes and stops the
    writer. Reads (``SQLiteReads``, ``SQLitePages``), deletes (``SQLiteDeletes``) and the cache index (``SQLiteCacheIndex``) use one
    connection per thread and see what is committed.
    """

    def __init__(self, path: Path | str, home: Path | None = None, writer: str = "auto") -> None:
        self._writer_choice = check_writer_choice(writer)
        # Absolute once: connections opened later (the writer thread's, the writer
        # process's) must reach this file even if the program changes directory.
        self.path = Path(path).absolute()
        # HEADWATER_HOME: if the store lives there, opening it warns (once) when others
        # may read it.
        self._home = Path(home).absolute() if home is not None else None
        self._local = threading.local()
        self._closed = False
        self._inherited: frozenset[str] = frozenset()
        self._start_process()
        self._open()
        _stores.add(self)

    def _start_process(self) -> None:
        """This process's writer: its identity on the rows, its queue and thread."""
        self._pid = os.getpid()
        self._pid_start = own_token(self._pid)  # start time and pid namespace
        self._rows = BatchWriter(HOST, self._pid, self._pid_start)
        parent: Writer | None = getattr(self, "_writer", None)
        if parent is not None:
            parent.forget()  # a forked child: the parent's writer (its process) is not ours
        thread = ThreadWriter(self._rows, self._conn, self._read_only_message)
        self._writer = choose_writer(self._writer_choice, self.path, thread)
        self.start_writes(WriteQueue(str(self.path), self._writer, self._close_connection))
        self._queue.on_idle = Heartbeat(self._conn, HOST, self._pid, self._pid_start)
        if self._closed:
            self._queue.closed = True

    def _forget_parent(self) -> None:
        """In a forked child: the parent's writer thread, queue and locks are not ours
        (a lock may have been held at the fork); this process starts its own writer.

        The runs the parent had open are the parent's: this copy of its engine writes
        nothing for them (a child that exits would otherwise record them Crashed, or
        Completed, while the parent carries on and records them too)."""
        inherited = self._inherited.union(self._open_runs, self._open_flows, self._created)
        self._start_process()
        self._inherited = frozenset(inherited)

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
        created = not directory.exists()
        try:
            # It and its missing parents 0700 whatever the umask: the runs' parameters are private.
            make_private_dirs(directory)
        except OSError as exc:
            raise StoreError(f"cannot create {directory} for the run store "
                             f"(HEADWATER_HOME / HEADWATER_DATABASE_URL): {exc.strerror or exc}") from None
        if not created and self._home is not None and directory == self._home:
            warn_if_shared(directory)
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
        existed = self.path.exists()
        if not existed:
            create_private(self.path)
        try:
            conn = self._conn()
            # Whose file it is, asked before anything is written (not even the journal
            # mode): a database of another program, or of a newer headwater, is left as
            # it was.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer headwater (schema {version}, "
                                 f"this one knows {SCHEMA_VERSION}); upgrade headwater. It was left untouched.")
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            # headwater sets the version in the transaction that creates its tables: a
            # version 0 with tables, or a version 1 without them, is another program's.
            if (version == 0 and tables) or (version >= 1 and "flow_runs" not in tables):
                shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
                raise StoreError(f"{self.path} is not a headwater run store (an SQLite database with other "
                                 f"tables: {shown}). It was left untouched: move it away, or point "
                                 f"HEADWATER_DATABASE_URL elsewhere.")
            self._retry(lambda: self._set_wal(conn))
            if version == 0:
                self._retry(lambda: self._create_schema(conn))
            elif version < SCHEMA_VERSION:
                self._retry(lambda: self._migrate(conn))
            if version >= 1 and "flows" not in tables:
                self._retry(lambda: conn.execute(_FLOWS_TABLE))
            add_heartbeat_column(conn)
            self._cache_columns = self._retry(lambda: add_cache_digest_column(conn))
            self.mark_crashed_runs()
        except sqlite3.DatabaseError as exc:
            if read_only(exc):
                raise StoreError(self._read_only_message()) from None
            raise StoreError(f"{self.path} cannot be used as the run store: {exc}. "
                             f"It was left untouched.") from None
        if existed:  # a file made here is 0600; an older or copied one may not be
            warn_if_shared(self.path)

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

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Bring a store of an older schema (1) to this one, in one transaction: columns
        are only added, so an older run's row reads as before (the new ones empty)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:  # else another process migrated it meanwhile
                for table, column in _SCHEMA_2_COLUMNS:
                    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _retry(self, operation: Any) -> Any:
        return retry_busy(operation)

    def _write_txn(self, write: Any) -> Any:
        return write_transaction(self._conn(), write)

    # -- crash detection -------------------------------------------------------------

    def mark_crashed_runs(self) -> int:
        """Mark unfinished runs of dead processes on this host ``Crashed``; return how many.

        A store that cannot be written is left as it is (its reads show them Crashed)."""
        found = find_dead_runs(self._conn(), self._pid, self._pid_start)
        if not found:
            return 0
        try:
            self._write_txn(lambda conn: mark_dead_runs(conn, found))
        except sqlite3.OperationalError as exc:
            if not read_only(exc):
                raise
            return 0
        return len(found)

    def reopen_flow_run(self, run: FlowRun, state: State) -> None:
        """Make an ended flow run this process's unfinished run again, in ``state``, for a
        new attempt (``headwater runs retry``); written at once, before anything queued
        after it. The row is claimed for this process (host, pid, heartbeat), so the run
        is not taken for crashed because the process of its earlier attempt is gone; a
        Crashed run may be reopened (the writer otherwise never changes a Crashed row)."""
        self._queue.flush()  # what this process queued before (an earlier attempt's rows)
        made = state.details_if_made
        details = details_json(made) if made is not None else None

        def write(conn: sqlite3.Connection) -> None:
            # Checked in the write transaction, which no other writer shares: of two
            # retries of one run started at once, the second finds the first's claim.
            row = conn.execute("SELECT state_type, host, pid, pid_start FROM flow_runs WHERE id = ?",
                               (run.id,)).fetchone()
            if row is None:
                raise StoreError(f"flow run {run.name!r} ({run.id}) is not in the run store {self.path}")
            state_type, host, pid, token = row
            if (state_type in UNFINISHED and here(host, token) and pid and pid != self._pid
                    and process_alive(pid, token)):
                raise StoreError(f"flow run {run.name!r} is being run by process {pid} on this host "
                                 f"(a retry started meanwhile?); it was not retried again")
            conn.execute(
                "UPDATE flow_runs SET state_type = ?, state_name = ?, state_message = ?, end_ts = NULL, "
                "run_count = ?, host = ?, pid = ?, pid_start = ?, heartbeat = ?, "
                "entry_point = coalesce(?, entry_point) WHERE id = ?",
                (state.type.value, state.name, state.message, run.run_count, HOST, self._pid, self._pid_start,
                 state.ts, run.entry_point, run.id))
            conn.execute("INSERT INTO states (run_id, run_kind, type, name, message, ts, details) "
                         "VALUES (?, 'flow', ?, ?, ?, ?, ?)",
                         (run.id, state.type.value, state.name, state.message, state.ts, details))

        self._retry(lambda: self._write_txn(write))
        self._open_flows.add(run.id)

    def _read_only_message(self) -> str:
        """What to do about a store this process cannot write (a flow's first flush says
        it, before the flow's body runs)."""
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if path.exists() and not os.access(path, os.W_OK):
                return (f"the run store {path} is read-only for this user, so no run can be recorded: "
                        f"make it writable (chmod u+w {path}, or chown it to this user) "
                        f"or point HEADWATER_DATABASE_URL elsewhere")
        return (f"the run store {self.path} is read-only (attempt to write a readonly database), so no run "
                f"can be recorded: check its permissions and those of {self.path.parent}, "
                f"or point HEADWATER_DATABASE_URL elsewhere")

    def _close_connection(self) -> None:
        """In the writer thread, as it ends: its connection is closed with it."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._queue.close()
        finally:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None


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
    settings = session.settings
    writer = check_writer_choice(settings.store_writer, settings.describe("STORE_WRITER", settings.store_writer))
    return SQLiteRunStore(sqlite_path(url), home=settings.home, writer=writer)


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
    if scheme not in session.registry.names("run_store") and scheme in STORE_PACKAGES:
        raise StoreError(f"{session.settings.describe('DATABASE_URL', url)}: no installed plugin serves "
                         f"{scheme}://; install it: pip install {STORE_PACKAGES[scheme]}")
    factory = session.registry.get("run_store", scheme, wanted_for="HEADWATER_DATABASE_URL")
    return factory(url, session)


#: What to install for a ``HEADWATER_DATABASE_URL`` whose scheme no plugin serves.
STORE_PACKAGES = {"postgresql": "headwater-postgres", "postgres": "headwater-postgres"}
