"""Which recorded runs are still alive: crash detection for the run stores.

A run is recorded with the host, pid and pid start time of the process running it. A run
left unfinished is *dead* when that process is gone:

* same host and pid namespace: the pid no longer exists, is a zombie (killed, not yet
  reaped), or now belongs to another process (its start time differs, so a reused pid is
  not mistaken for the run's process);
* another host, or another pid namespace of this host (a container with the host's
  name: its pids mean nothing here): no heartbeat for more than ``STALE_SECONDS``. The store writer of every
  flow process stamps ``flow_runs.heartbeat`` on its unfinished flow runs every
  ``HEARTBEAT_SECONDS`` (one small UPDATE from the writer thread; nothing per task run).

Readers (``sqlite_reads``: the CLI, the dashboard and its API) show a dead run as
``Crashed`` on every read, computed when read, so a store that cannot be written shows it
too. Runs of dead processes on this host are also *marked* ``Crashed`` in the store (when
the store is opened, and by readers that find one, at most every ``MARK_SECONDS``); runs
of other hosts are only shown so, since a late heartbeat may come from a host that is slow
or cut off rather than gone, and its run's next write brings it back to the truth. (A
store made for many hosts, headwater-postgres, judges every process by heartbeat alone,
``Judge(by_pid=False)``, and marks what it finds, so that filters by state find it.)

The process's identity token is ``<start time>@<pid namespace inode>`` (a token of a
headwater that recorded no namespace, the start time alone, is taken to be of the
reader's namespace, as before). A Crashed state is dated by the run's last sign of life:
its last recorded state or its process's last heartbeat, whichever is later, not by when
a reader noticed.

A run that has ended (``State.has_ended``: a final state, or ``NotReady``, type PENDING:
an upstream run did not complete) is over: it is never taken for unfinished, never shown
or marked ``Crashed``. Nor is a paused run, which waits for no process.

The shared store for many hosts reuses ``Judge``, the heartbeat and the thresholds; only
the SQL differs.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import time
from typing import Any, Callable

from headwater.states import State, StateType

from .sqlite_tuning import HEARTBEAT_SECONDS, MARK_SECONDS, STALE_SECONDS  # noqa: F401 - read as liveness.X too
from .sqlite_writer import read_only, retry_busy

#: This host's name as runs record it.
HOST = socket.gethostname()

#: State types of a run that may still be running (``NotReady``, type PENDING, excepted).
UNFINISHED = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING")
NOT_READY = "NotReady"
CRASH_MESSAGE = "The process running this run ended before the run finished."

_MARKS = ",".join("?" * len(UNFINISHED))
#: SQL for "this row's run may still be running" (a row created but given no state yet
#: included): the SQL twin of ``State.has_ended`` (core/states.py; keep the two alike),
#: paused runs left out as by ``may_be_running``.
UNFINISHED_SQL = (f"(state_type IS NULL OR state_type IN ({_MARKS})) "
                  f"AND (state_type IS NOT 'PENDING' OR state_name IS NOT '{NOT_READY}')")


def may_be_running(state: State | None) -> bool:
    """Whether a run recorded in ``state`` (``None``: created, no state yet) is judged by
    its process: it has not ended (``State.has_ended``) and is not paused (a paused run
    waits for no process). The rows ``UNFINISHED_SQL`` selects."""
    return state is None or not (state.has_ended() or state.is_paused())


# -- processes on this host -------------------------------------------------------------------


def _pid_namespace() -> str | None:
    """This process's pid namespace (the inode of ``/proc/self/ns/pid``), or ``None``
    where there is none to read. Read once: a process never changes its own."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except (OSError, AttributeError):
        return None
    inode = link.rpartition("[")[2].rstrip("]")
    return inode if inode.isdigit() else None


#: The pid namespace of this process: pids recorded in another one mean nothing here.
PID_NAMESPACE = _pid_namespace()


def _stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of process ``pid``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().decode(errors="replace").rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def process_start_token(pid: int) -> str | None:
    """When the process started (clock ticks since boot), to tell a reused pid apart."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def own_token(pid: int) -> str | None:
    """The identity token of this process (``pid`` is its own) as its runs record it:
    its start time and, where known, its pid namespace (``"<start>@<namespace>"``)."""
    start = process_start_token(pid)
    if start is None or PID_NAMESPACE is None:
        return start
    return f"{start}@{PID_NAMESPACE}"


def split_token(token: str | None) -> tuple[str | None, str | None]:
    """(start time, pid namespace) of a recorded token; no namespace in an old token."""
    if token is None:
        return None, None
    start, _, namespace = token.partition("@")
    return start or None, namespace or None


def here(host: str | None, token: str | None) -> bool:
    """Whether a run recorded so is of this host *and* of this pid namespace, so its pid
    can be looked at here. A token without a namespace (older headwater) counts as here."""
    if host != HOST:
        return False
    namespace = split_token(token)[1]
    return namespace is None or namespace == PID_NAMESPACE


def process_alive(pid: int, token: str | None) -> bool:
    """Whether process ``pid`` exists, is not a zombie, and, when ``token`` is known, is
    the one that started at that time (not a later process given the same pid)."""
    if pid <= 0:
        return False  # not a process (0 and negative pids would signal process groups)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, run by another user
    except OverflowError:
        return False  # not a pid this system can have
    stat = _stat(pid)
    if stat is None:
        return True  # no /proc to ask: the signal said it exists
    state, start = stat
    if state in ("Z", "X"):
        return False  # killed, only waiting for its parent to reap it (kill(pid, 0) succeeds)
    expected = split_token(token)[0]
    if expected is not None and start != expected:
        return False  # the pid now belongs to another process
    return True


# -- judging recorded runs --------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat(timespec="seconds")


class Judge:
    """Decides, for one read, which recorded runs are dead; each process is looked at once.

    ``last_seen(host, pid, pid_start)`` gives the newest heartbeat of another host's
    process (``None`` when it has none); the reader supplies it, so the judge knows no SQL.
    """

    def __init__(self, own_pid: int, own_token: str | None,
                 last_seen: Callable[[str, int, str | None], float | None], now: float | None = None,
                 stale_seconds: float | None = None, by_pid: bool = True,
                 stale_for: Callable[[str, int, str | None], float] | None = None) -> None:
        self.own_pid = own_pid
        self.own_token = own_token
        self.now = time.time() if now is None else now
        #: Seconds without a heartbeat after which another process's run is dead
        #: (None: ``STALE_SECONDS``, read when judging: tests change it).
        self.stale_seconds = stale_seconds
        #: Whether a process of this host is judged by its pid (the SQLite store); a
        #: store shared by many hosts judges every other process by heartbeat alone.
        self.by_pid = by_pid
        #: The threshold for one process (asked after its last heartbeat), when processes
        #: beat at paces of their own; else ``stale_seconds``.
        self.stale_for = stale_for
        self._last_seen = last_seen
        self._here: dict[tuple[int, str | None], bool] = {}
        self._elsewhere: dict[tuple[str, int, str | None], float | None] = {}
        #: Whether a dead run was seen that the store marks: one of this host (or, judged
        #: by heartbeat alone, of any host).
        self.dead_here = False

    def crashed(self, state: State | None, host: str | None, pid: int | None,
                pid_start: str | None, since: float | None) -> State | None:
        """The Crashed state to show for a run recorded in ``state`` (``None``: no state
        yet) by that process, or ``None`` while it may live.

        ``since`` is the run's last recorded sign of life (its last state, else when it
        was started or created). The Crashed state is dated by it or by the process's last
        heartbeat, whichever is later: when the process was last known alive.
        """
        if host is None or pid is None or not may_be_running(state):
            return None
        if not self.by_pid and host == HOST and pid == self.own_pid and self._alive_here(pid, pid_start):
            return None  # this process's own run
        if self.by_pid and here(host, pid_start):
            key = (pid, pid_start)
            alive = self._here.get(key)
            if alive is None:
                alive = self._here[key] = self._alive_here(pid, pid_start)
            if alive:
                return None
            self.dead_here = True
            seen = max(self._seen(host, pid, pid_start) or 0.0, since or 0.0)
            return State(StateType.CRASHED, "Crashed", CRASH_MESSAGE, ts=min(seen, self.now) if seen else self.now)
        seen = max(self._seen(host, pid, pid_start) or 0.0, since or 0.0)
        stale = STALE_SECONDS if self.stale_seconds is None else self.stale_seconds
        if self.stale_for is not None:
            stale = self.stale_for(host, pid, pid_start)
        if self.now - seen <= stale:
            return None
        if not self.by_pid:
            self.dead_here = True
        where = (f"host {host!r}" if host != HOST or not self.by_pid
                 else f"another pid namespace of host {host!r}")
        return State(StateType.CRASHED, "Crashed",
                     f"The process running this run (pid {pid} on {where}) sent no heartbeat since "
                     f"{_iso(seen)}, more than {stale:g} s ago: it is taken to have ended "
                     f"before the run finished.", ts=seen)

    def _seen(self, host: str, pid: int, pid_start: str | None) -> float | None:
        """The process's last heartbeat (asked once per process and read)."""
        remote = (host, pid, pid_start)
        if remote not in self._elsewhere:
            self._elsewhere[remote] = self._last_seen(host, pid, pid_start)
        return self._elsewhere[remote]

    def _alive_here(self, pid: int, pid_start: str | None) -> bool:
        if pid == self.own_pid:
            # This process, unless this pid was another's before (its start time differs).
            recorded, own = split_token(pid_start)[0], split_token(self.own_token)[0]
            return recorded is None or own is None or recorded == own
        return process_alive(pid, pid_start)


# -- the SQLite store: last heartbeat, marking, heartbeats, the schema ---------------------------------


def last_seen(conn: sqlite3.Connection, host: str, pid: int, pid_start: str | None) -> float | None:
    """The newest heartbeat (or start) of a process's unfinished flow runs in the store."""
    where = f"host = ? AND pid = ? AND pid_start IS ? AND {UNFINISHED_SQL}"
    args = (host, pid, pid_start, *UNFINISHED)
    try:
        row = conn.execute(f"SELECT max(coalesce(heartbeat, start_ts, created)) FROM flow_runs WHERE {where}",
                           args).fetchone()
    except sqlite3.OperationalError:  # a store written before heartbeats, that could not be upgraded
        row = conn.execute(f"SELECT max(coalesce(start_ts, created)) FROM flow_runs WHERE {where}", args).fetchone()
    return row[0] if row else None


def last_state_sql(table: str) -> str:
    """SQL for a run's last recorded state time, only for a run that has not ended (a
    listing of finished runs pays nothing; one index lookup per unfinished run)."""
    marks = ",".join(f"'{t}'" for t in UNFINISHED)
    return (f"CASE WHEN {table}.state_type IS NULL OR {table}.state_type IN ({marks}) THEN "
            f"(SELECT max(ts) FROM states WHERE states.run_id = {table}.id) END")


def find_dead_runs(conn: sqlite3.Connection, own_pid: int, own_token: str | None) -> list[tuple[str, str, float]]:
    """``(table, run id, when last seen alive)`` of the unfinished runs of dead processes
    of this host and pid namespace (runs of another namespace are judged by heartbeat
    only, and never marked, like another host's)."""
    judge = Judge(own_pid, own_token, lambda host, pid, token: last_seen(conn, host, pid, token))
    found: list[tuple[str, str, float]] = []
    for table in ("flow_runs", "task_runs"):
        since = f"coalesce({last_state_sql(table)}, start_ts, created)"
        if table == "flow_runs":
            # Its task runs' states are signs of life of the same process too: a flow run
            # killed in its tenth task ended after the ninth finished, not when it started.
            since = (f"max({since}, coalesce((SELECT max(ts) FROM states WHERE run_id IN "
                     f"(SELECT id FROM task_runs WHERE flow_run_id = flow_runs.id)), 0))")
        rows = conn.execute(f"SELECT id, state_type, state_name, pid, pid_start, {since} FROM {table} "
                            f"WHERE host = ? AND {UNFINISHED_SQL}", (HOST, *UNFINISHED)).fetchall()
        for rid, st, sn, pid, token, since in rows:
            if not here(HOST, token):
                continue
            crashed = judge.crashed(None if st is None else State(StateType(st), sn, ts=0.0),
                                    HOST, pid, token, since)
            if crashed is not None:
                found.append((table, rid, crashed.ts))
    return found


def mark_dead_runs(conn: sqlite3.Connection, found: list[tuple[Any, ...]]) -> None:
    """Record ``Crashed`` for ``found``, ``(table, run id, when)`` or ``(table, run id,
    when, message)`` (inside the caller's write transaction), dated when each run was last
    seen alive; the message is ``CRASH_MESSAGE`` unless given. A run that ended meanwhile
    keeps its state."""
    for table, rid, when, *message in found:
        text = message[0] if message else CRASH_MESSAGE
        cur = conn.execute(
            f"UPDATE {table} SET state_type='CRASHED', state_name='Crashed', state_message=?, end_ts=? "
            f"WHERE id=? AND {UNFINISHED_SQL}", (text, when, rid, *UNFINISHED))
        if cur.rowcount:
            conn.execute("INSERT INTO states (run_id, run_kind, type, name, message, ts) "
                         "VALUES (?, ?, 'CRASHED', 'Crashed', ?, ?)",
                         (rid, "flow" if table == "flow_runs" else "task", text, when))


def add_heartbeat_column(conn: sqlite3.Connection) -> bool:
    """Add ``flow_runs.heartbeat`` to a store made before it (on open); whether it exists.

    Idempotent and safe when several processes open the store at once. A store that
    cannot be written is left as it is: its readers fall back to the runs' start times.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(flow_runs)")}
    if "heartbeat" in columns:
        return True
    try:
        retry_busy(lambda: conn.execute("ALTER TABLE flow_runs ADD COLUMN heartbeat REAL"))
    except sqlite3.OperationalError as exc:
        if "duplicate column" in str(exc).lower():
            return True  # another process added it first
        if read_only(exc):
            return False
        raise
    return True


class Heartbeat:
    """Called by a store's writer thread after each pass; every ``HEARTBEAT_SECONDS`` it
    stamps the heartbeat of this process's unfinished flow runs (one indexed SELECT, and
    an UPDATE only when there are such runs)."""

    def __init__(self, connection: Callable[[], sqlite3.Connection], host: str, pid: int,
                 pid_start: str | None, every: float | None = None) -> None:
        self._connection = connection
        self._process = (host, pid, pid_start)
        self._last = time.monotonic()
        self.every = every  # seconds; None: HEARTBEAT_SECONDS

    def __call__(self) -> None:
        now = time.monotonic()
        # The module's value is read now (tests change it).
        if now - self._last < (HEARTBEAT_SECONDS if self.every is None else self.every):
            return
        self._last = now
        try:
            beat(self._connection(), *self._process)
        except Exception:  # noqa: S110 - a missed heartbeat is made up by the next; the writer goes on
            pass

    def __repr__(self) -> str:
        return f"<Heartbeat every {HEARTBEAT_SECONDS if self.every is None else self.every} s for pid {self._process[1]}>"


def beat(conn: sqlite3.Connection, host: str, pid: int, pid_start: str | None) -> int:
    """Stamp ``now`` on the unfinished flow runs of process (host, pid, pid_start)."""
    where = f"host = ? AND pid = ? AND pid_start IS ? AND {UNFINISHED_SQL}"
    args = (host, pid, pid_start, *UNFINISHED)
    if conn.execute(f"SELECT 1 FROM flow_runs WHERE {where} LIMIT 1", args).fetchone() is None:
        return 0  # nothing running here: no write lock taken
    return conn.execute(f"UPDATE flow_runs SET heartbeat = ? WHERE {where}", (time.time(), *args)).rowcount
