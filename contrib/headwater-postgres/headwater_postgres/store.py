"""The PostgreSQL run store: one history and one cache index for many machines.

``HEADWATER_DATABASE_URL=postgresql://user:password@host:port/database`` (``postgres://``
too; ``?schema=name`` picks the PostgreSQL schema of the tables, ``headwater`` by default;
any other parameter is libpq's).

* Writes are queued and written in batches by one thread per process, as the SQLite
  store does (``headwater.plugins.queued_writes``, ``sqlite_queue``, ``sqlite_writer``):
  multi-row ``INSERT ... ON CONFLICT`` statements, one transaction per batch. The engine's
  ``flush`` waits for the commit, so a flow run's row is durable before its body runs and
  its every state before the flow call returns.
* Connections come from a ``psycopg_pool`` pool (``dialect.PooledConnection``).
* The cache index is written at once, with ``INSERT ... ON CONFLICT``: safe with writers
  on many hosts.
* Crash marking by heartbeats: the writer thread stamps the heartbeat of its process's
  unfinished flow runs every ``HEADWATER_HEARTBEAT_SECONDS`` (10 s by default); a run
  whose process sent none for six of those is shown ``Crashed`` on every read, whatever
  host reads it, and marked so in the store by the readers that find it (so a filter on
  state finds it too). No pid is looked at: a pid means nothing on another host. A process
  taken for dead that carries on (a host cut off for longer than that) finds its runs
  marked and writes nothing more for them, as on one host.
* The tables and their migrations: ``schema``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Sequence
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from headwater.errors import StoreError
from headwater.settings import hide_password
from headwater.plugins import sqlite_liveness as liveness
from headwater.plugins.queued_writes import QueuedWrites
from headwater.plugins.sqlite_cache import SQLiteCacheIndex
from headwater.plugins.sqlite_pages import SQLitePages
from headwater.plugins.sqlite_queue import WriteQueue
from headwater.plugins.sqlite_values import details_json
from headwater.plugins.sqlite_writer import BatchWriter, write_transaction
from headwater.runs import FlowRun, TaskRun
from headwater.states import State, StateType
from headwater.stores import DeletedRuns, FlowRunFilter, Page, RunStore

from .dialect import PooledConnection, ReconnectingWriter, Heartbeat
from .schema import ensure_schema, quote_identifier

#: Connections one process's pool may open: the writer thread's, and a few for cache
#: lookups of concurrent tasks and the dashboard's readers.
POOL_SIZE = 4
#: Seconds to wait for the server when the store is opened.
CONNECT_SECONDS = 10.0
#: Missed heartbeats after which a run is shown Crashed.
MISSED_BEATS = 6


def display_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    return hide_password(url)


def split_url(url: str) -> tuple[str, str]:
    """The libpq connection string of ``url`` (``url`` without headwater's own ``schema``
    parameter) and the PostgreSQL schema it names. Every form libpq takes works: a host,
    several hosts, a socket directory (``postgresql:///db?host=/run/postgresql``), or none."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise StoreError(f"HEADWATER_DATABASE_URL={display_url(url)!r}: expected "
                         f"postgresql://user:password@host:port/database")
    base, mark, query = rest.partition("?")
    schema = "headwater"
    kept = []
    for part in query.split("&") if query else []:
        key, _, value = part.partition("=")
        if key == "schema":
            schema = unquote(value)
        elif part:
            kept.append(part)
    if not schema:
        raise StoreError(f"HEADWATER_DATABASE_URL={display_url(url)!r}: ?schema= names no schema")
    conninfo = f"postgresql://{base}" + (f"?{'&'.join(kept)}" if kept else "")
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise StoreError(f"HEADWATER_DATABASE_URL={display_url(url)!r} is not a PostgreSQL URL: "
                         f"{_first_line(exc)}") from None
    return conninfo, schema


class PostgresRunStore(SQLitePages, SQLiteCacheIndex, QueuedWrites, RunStore):
    """The run store on a PostgreSQL database (the module docstring says how it works).

    ``url``: ``postgresql://...`` as in ``HEADWATER_DATABASE_URL``. ``heartbeat_seconds``:
    how often the writer stamps its unfinished flow runs; a run without a heartbeat for
    ``MISSED_BEATS`` times that is shown Crashed. ``pool_size``: connections per process.
    """

    def __init__(self, url: str, heartbeat_seconds: float = 10.0, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.label = display_url(url)
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.stale_seconds = MISSED_BEATS * self.heartbeat_seconds
        self._conninfo, self.schema = split_url(url)
        self._pool_size = pool_size
        self._local = threading.local()
        self._closed = False
        self._migrate()
        self._pool: ConnectionPool | None = self._open_pool()
        self._start_process()
        _stores.add(self)
        self._mark_before_filtering()  # as the SQLite store marks its dead runs when opened

    # -- connections -----------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        options = conninfo_to_dict(self._conninfo).get("options") or ""
        return {"autocommit": True,
                "options": f"{options} -c search_path={quote_identifier(self.schema)}".strip()}

    def _migrate(self) -> None:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=int(CONNECT_SECONDS))
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL run store {self.label} "
                             f"(HEADWATER_DATABASE_URL): {_first_line(exc)}") from None
        try:
            ensure_schema(conn, self.schema, f"the PostgreSQL run store {self.label}")
        except psycopg.Error as exc:
            raise StoreError(f"the PostgreSQL run store {self.label} cannot be used: {_first_line(exc)}. "
                             f"It was left untouched.") from None
        finally:
            conn.close()

    def _open_pool(self) -> ConnectionPool:
        pool = ConnectionPool(make_conninfo(self._conninfo), min_size=1, max_size=self._pool_size,
                              kwargs=self._connect_kwargs(), open=False, name="headwater",
                              timeout=CONNECT_SECONDS * 3)
        pool.open(wait=False)
        return pool

    def _conn(self) -> PooledConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            if self._pool is None:  # a forked child's first use
                with _pool_lock:
                    if self._pool is None:
                        self._pool = self._open_pool()
            conn = PooledConnection(self._pool)
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _write_txn(self, write: Any) -> Any:
        try:
            return write_transaction(self._conn(), write)
        except PoolTimeout:
            raise StoreError(f"no connection to the PostgreSQL run store {self.label} within "
                             f"{CONNECT_SECONDS * 3:.0f} s (is the server up?)") from None

    def _retry(self, operation: Any) -> Any:
        return operation()

    # -- the writer ------------------------------------------------------------------------

    def _start_process(self) -> None:
        """This process's writer: its identity on the rows, its queue and thread."""
        self._pid = os.getpid()
        self._pid_start = liveness.own_token(self._pid)
        self._rows = BatchWriter(liveness.HOST, self._pid, self._pid_start)
        writer = ReconnectingWriter(self._rows, self._conn, lambda: f"the PostgreSQL run store {self.label} "
                                                                    f"refused a write", self.label)
        self.start_writes(WriteQueue(self.label, writer, self._close_connection))
        self._queue.on_idle = Heartbeat(self._conn, liveness.HOST, self._pid, self._pid_start,
                                        every=self.heartbeat_seconds)
        if self._closed:
            self._queue.closed = True

    def _forget_parent(self) -> None:
        """In a forked child: the parent's pool, writer thread and queue are not ours (their
        sockets and locks are the parent's); this process opens its own. Runs the parent
        had open stay the parent's to write."""
        inherited = self._inherited.union(self._open_runs, self._open_flows, self._created)
        _abandoned.append(self._pool)  # never closed here: closing would end the parent's sessions
        self._local = threading.local()
        self._pool = None  # opened on first use: a child that never uses the store connects to nothing
        self._start_process()
        self._inherited = frozenset(inherited)

    def _close_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    # -- liveness: heartbeats only ---------------------------------------------------------

    def _judge(self) -> liveness.Judge:
        """A judge by heartbeats, each process by the interval it beats at (recorded with
        its runs), so readers with another ``HEADWATER_HEARTBEAT_SECONDS`` agree."""
        intervals: dict[tuple[Any, ...], float | None] = {}

        def last_seen(host: str, pid: int, token: str | None) -> float | None:
            row = self._conn().execute(
                f"SELECT max(coalesce(heartbeat, start_ts, created)), max(heartbeat_every) FROM flow_runs "
                f"WHERE host = ? AND pid = ? AND pid_start IS ? AND {liveness.UNFINISHED_SQL}",
                (host, pid, token, *liveness.UNFINISHED)).fetchone()
            intervals[(host, pid, token)] = row[1] if row else None
            return row[0] if row else None

        def stale_for(host: str, pid: int, token: str | None) -> float:
            every = intervals.get((host, pid, token))
            return MISSED_BEATS * every if every else self.stale_seconds

        return liveness.Judge(self._pid, self._pid_start, last_seen, stale_seconds=self.stale_seconds,
                              by_pid=False, stale_for=stale_for)

    def mark_crashed_runs(self) -> int:
        """Mark the unfinished runs of processes without a heartbeat for ``stale_seconds``
        ``Crashed`` (dated by their last sign of life); return how many. Done when the
        store is opened, by readers that find such a run (at most every
        ``MARK_SECONDS``), and before every read filtered by state, so that
        ``state="crashed"`` finds what every read shows."""
        judge = self._judge()
        found = []
        conn = self._conn()
        for table in ("flow_runs", "task_runs"):
            rows = conn.execute(f"SELECT id, state_type, state_name, host, pid, pid_start, "
                                f"coalesce({liveness.last_state_sql(table)}, start_ts, created) "
                                f"FROM {table} WHERE {liveness.UNFINISHED_SQL}", liveness.UNFINISHED).fetchall()
            for run_id, state_type, state_name, host, pid, token, since in rows:
                state = None if state_type is None else State(StateType(state_type), state_name, ts=0.0)
                crashed = judge.crashed(state, host, pid, token, since)
                if crashed is not None:
                    found.append((table, run_id, crashed.ts, crashed.message))
        found = [self._last_sign_of_life(conn, *dead) for dead in found]
        if found:
            self._write_txn(lambda conn: liveness.mark_dead_runs(conn, found))
        return len(found)

    @staticmethod
    def _last_sign_of_life(conn: Any, table: str, run_id: str, when: float, message: str) -> tuple[Any, ...]:
        """A dead flow run dated by its task runs too (a process killed before its first
        heartbeat was alive while its tasks ran): asked only for runs found dead."""
        if table == "flow_runs":
            row = conn.execute("SELECT max(greatest(coalesce(end_ts, 0), coalesce(start_ts, 0), coalesce(created, 0))) "
                               "FROM task_runs WHERE flow_run_id = ?", (run_id,)).fetchone()
            if row and row[0]:
                when = max(when, row[0])
        return (table, run_id, when, message)

    def _mark_before_filtering(self) -> None:
        """Before a read filtered by state: mark dead runs first, so the filter sees them
        as reads show them (one indexed query of the unfinished runs; an UPDATE only when
        one is found)."""
        self.mark_crashed_runs()

    def read_flow_runs(self, limit: int = 50, offset: int = 0, flow_name: str | None = None,
                       state: str | None = None, parent_flow_run_id: str | None = None) -> list[FlowRun]:
        if state is not None:
            self._mark_before_filtering()
        return super().read_flow_runs(limit, offset, flow_name, state, parent_flow_run_id)

    def count_flow_runs(self, flow_name: str | None = None, state: str | None = None) -> int:
        if state is not None:
            self._mark_before_filtering()
        return super().count_flow_runs(flow_name, state)

    def search_flow_runs(self, where: FlowRunFilter | None = None, offset: int = 0,
                         limit: int | None = 50) -> Page[FlowRun]:
        if where is not None and where.state is not None:
            self._mark_before_filtering()
        return super().search_flow_runs(where, offset, limit)

    def read_task_run_page(self, flow_run_id: str, offset: int = 0, limit: int | None = 50,
                           state: str | None = None, retried: bool = False) -> Page[TaskRun]:
        if state is not None:
            self._mark_before_filtering()
        return super().read_task_run_page(flow_run_id, offset, limit, state, retried)

    # -- writes that are not queued -------------------------------------------------------------

    def reopen_flow_run(self, run: FlowRun, state: State) -> None:
        """As the SQLite store's: the run becomes this process's unfinished run again, in
        ``state``. The row is locked while the claim is checked, so of two retries of one
        run started at once (on any hosts), the second finds the first's claim."""
        self._queue.flush()
        made = state.details_if_made
        details = details_json(made) if made is not None else None

        def write(conn: Any) -> None:
            row = conn.execute("SELECT state_type, state_name, host, pid, pid_start, "
                               "coalesce(heartbeat, start_ts, created) FROM flow_runs WHERE id = ? FOR UPDATE",
                               (run.id,)).fetchone()
            if row is None:
                raise StoreError(f"flow run {run.name!r} ({run.id}) is not in the run store {self.label}")
            state_type, state_name, host, pid, token, seen = row
            current = None if state_type is None else State(StateType(state_type), state_name, ts=0.0)
            if (state_type in liveness.UNFINISHED and (host, pid, token) != (liveness.HOST, self._pid, self._pid_start)
                    and self._judge().crashed(current, host, pid, token, seen) is None):
                raise StoreError(f"flow run {run.name!r} is being run by process {pid} on host {host!r} "
                                 f"(a retry started meanwhile?); it was not retried again")
            conn.execute(
                "UPDATE flow_runs SET state_type = ?, state_name = ?, state_message = ?, end_ts = NULL, "
                "run_count = ?, host = ?, pid = ?, pid_start = ?, heartbeat = ?, "
                "entry_point = coalesce(?, entry_point) WHERE id = ?",
                (state.type.value, state.name, state.message, run.run_count, liveness.HOST, self._pid,
                 self._pid_start, time.time(), run.entry_point, run.id))
            conn.execute("INSERT INTO states (run_id, run_kind, type, name, message, ts, details) "
                         "VALUES (?, 'flow', ?, ?, ?, ?, ?)",
                         (run.id, state.type.value, state.name, state.message, state.ts, details))

        self._write_txn(write)
        self._open_flows.add(run.id)

    def delete_flow_runs(self, flow_run_ids: Sequence[str]) -> DeletedRuns:
        self.flush()  # rows this process queued for them first, so none comes back after

        def write(conn: Any) -> DeletedRuns:
            ids = [row[0] for row in conn.execute(
                "WITH RECURSIVE doomed(id) AS (SELECT id FROM flow_runs WHERE id = ANY(?) "
                "UNION SELECT f.id FROM flow_runs f JOIN doomed d ON f.parent_flow_run_id = d.id) "
                "SELECT id FROM doomed", (list(dict.fromkeys(flow_run_ids)),))]
            tasks = "SELECT id FROM task_runs WHERE flow_run_id = ANY(?)"
            out = DeletedRuns(ids)
            out.states = conn.execute(f"DELETE FROM states WHERE run_id IN ({tasks}) OR run_id = ANY(?)",
                                      (ids, ids)).rowcount
            out.logs = conn.execute(f"DELETE FROM logs WHERE flow_run_id = ANY(?) OR task_run_id IN ({tasks})",
                                    (ids, ids)).rowcount
            out.task_runs = conn.execute("DELETE FROM task_runs WHERE flow_run_id = ANY(?)", (ids,)).rowcount
            conn.execute("DELETE FROM flow_runs WHERE id = ANY(?)", (ids,))
            return out

        return self._write_txn(write)

    def compact(self) -> None:
        """Give deleted rows' room back to the tables (``VACUUM``, which PostgreSQL's
        autovacuum would also do in time); the files keep their size for new rows."""
        conn = self._conn()
        for table in ("states", "logs", "task_runs", "flow_runs"):
            conn.execute(f"VACUUM {table}")

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        try:
            self._queue.close()
        finally:
            self._close_connection()
            if self._pool is not None:
                self._pool.close()

    def __repr__(self) -> str:
        return f"<PostgresRunStore {self.label} schema={self.schema!r}>"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


#: Every store made in this process, so a forked child can open its own pools.
_stores: weakref.WeakSet[PostgresRunStore] = weakref.WeakSet()
#: A forked child's copies of its parent's pools: kept, unused, so that collecting them
#: never closes the parent's connections.
_abandoned: list[Any] = []
_pool_lock = threading.Lock()


def _forget_parent_pools() -> None:
    for store in list(_stores):
        store._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_pools)
