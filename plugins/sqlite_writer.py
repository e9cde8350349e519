"""The SQLite run store's batch writer: a batch of queue entries as rows, in one transaction.

What an entry holds, and the rows' columns, is ``sqlite_rows``; the queue and its thread
``sqlite_queue``; which writer runs ``BatchWriter`` (the writer thread, or a writer
process) ``sqlite_writers``. Also here: the connection every part of the store uses,
and its write transactions, retried while another process holds the write lock.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from headwater.errors import StoreError

from .sqlite_rows import (FLOW, FLOW_CREATED, FLOW_INFO, FLOW_INFO_COLUMNS, FLOW_INFO_ROW, FLOW_ROW, FLOW_ROW_ID,
                          FLOW_ROW_STATE_TYPE, FLOW_RUN_COLUMNS, FLOW_STATE_ROW, HEADER_CREATED, HEADER_LEN,
                          HEADER_PARAMETERS, HEADER_RUN_ID, HEADER_TAGS, LOG_COLUMNS, PROCESS_COLUMNS,
                          STATE_COLUMNS, STATE_MESSAGE, STATE_NAME, STATE_PARAMETERS, STATE_ROW,
                          STATE_RUN_FIELDS, STATE_RUN_ID, STATE_TS, STATE_TYPE, TASK_HEADER, TASK_RUN_COLUMNS,
                          TASK_STATE, describe_entry, empty_header)
from .sqlite_tuning import BUSY_RETRY_SECONDS, BUSY_TIMEOUT_SECONDS, ROWS_PER_STATEMENT
from .sqlite_values import plain_values


# -- connections and transactions ----------------------------------------------------------


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection as every part of the store uses it (autocommit, waits up to
    ``BUSY_TIMEOUT_SECONDS`` for another process's write lock)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def retry_busy(operation: Callable[[], Any], seconds: float = BUSY_RETRY_SECONDS) -> Any:
    """Run ``operation``, retrying with back-off while another process holds the write lock."""
    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def read_only(exc: BaseException) -> bool:
    """Whether a write failed because the store cannot be written (a read-only file or
    folder, a read-only mount), as SQLite words it."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "read-only" in text)


def write_transaction(conn: sqlite3.Connection, write: Callable[[sqlite3.Connection], Any]) -> Any:
    """``write(conn)`` in one write transaction (rolled back if it raises), retried while busy."""

    def attempt() -> Any:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = write(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    return retry_busy(attempt)


# -- writing rows -----------------------------------------------------------------------------


def sql_literal(value: Any) -> str:
    """A constant as SQL text (the writer's host, pid and pid start time)."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def insert_rows(conn: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]], one: str | None = None,
                tail: str = "") -> None:
    """``head VALUES one, one, ... tail``: hundreds of rows per statement.

    ``executemany`` steps once per row, and the sqlite3 module gives up the GIL and takes
    it back around every step; while the flow's threads run Python, each take-back can
    wait, so the writer spent most of its time waiting, once per row. Binding a few
    hundred rows and stepping once waits once per statement, and is faster on its own
    too. ``one`` is the group for one row (default: one ``?`` per value; constants may
    stand for the last values). A connection with an ``insert_rows(head, rows, one,
    tail)`` method of its own is handed the rows instead.
    """
    if not rows:
        return
    bulk = getattr(conn, "insert_rows", None)
    if bulk is not None:  # a connection with its own bulk insert (headwater-postgres: COPY)
        bulk(head, rows, one, tail)
        return
    width = len(rows[0])
    if one is None:
        one = "(" + ",".join("?" * width) + ")"
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+
    variables = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit is not None else 999
    per = max(1, min(ROWS_PER_STATEMENT, variables // width))
    start = 0
    while start < len(rows):
        # Whole statements of ``per`` rows, then the rest in halving sizes: at most a
        # dozen statement texts per table, so the module's statement cache stays small.
        size = per
        while size > len(rows) - start:
            size //= 2
        sql = f"{head} VALUES {','.join([one] * size)}{tail}"
        conn.execute(sql, list(itertools.chain.from_iterable(rows[start:start + size])))
        start += size


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(names)


_TASK_INSERT = f"INSERT INTO task_runs ({_columns(TASK_RUN_COLUMNS + PROCESS_COLUMNS)})"
# Only what changes after creation: a row written again keeps its name and seq, and its
# parameters unless futures among them were resolved.
# Columns of the row already there are named with their table (``task_runs.parameters``):
# SQLite allows a bare name there, PostgreSQL (headwater-postgres writes the same rows)
# does not.
_TASK_UPDATE = (" ON CONFLICT(id) DO UPDATE SET parameters=coalesce(excluded.parameters, task_runs.parameters), "
                "cache_key=excluded.cache_key, "
                "result_location=excluded.result_location, start_ts=excluded.start_ts, "
                "end_ts=excluded.end_ts, run_count=excluded.run_count, "
                "inputs_hash=coalesce(excluded.inputs_hash, task_runs.inputs_hash), state_type=excluded.state_type, "
                "state_name=excluded.state_name, state_message=excluded.state_message "
                # A run another process marked Crashed (its flow process died) stays so,
                # also when the writer process writes what the dead process sent it.
                "WHERE task_runs.state_type IS NOT 'CRASHED'")


_FLOW_INSERT = (f"INSERT INTO flow_runs ({_columns(FLOW_RUN_COLUMNS + PROCESS_COLUMNS + ('created',))}) "
                f"VALUES ({','.join('?' * (len(FLOW_RUN_COLUMNS) + len(PROCESS_COLUMNS) + 1))}) "
                "ON CONFLICT(id) DO UPDATE SET "
                "name=excluded.name, parameters=excluded.parameters, state_type=excluded.state_type, "
                "state_name=excluded.state_name, state_message=excluded.state_message, "
                "start_ts=excluded.start_ts, end_ts=excluded.end_ts, run_count=excluded.run_count, "
                "entry_point=coalesce(excluded.entry_point, flow_runs.entry_point), "
                "inputs_hash=coalesce(excluded.inputs_hash, flow_runs.inputs_hash), "
                "parameters_location=coalesce(excluded.parameters_location, flow_runs.parameters_location), "
                "result_location=coalesce(excluded.result_location, flow_runs.result_location) "
                # As for task runs: a run another process marked Crashed stays so.
                "WHERE flow_runs.state_type IS NOT 'CRASHED'")
_STATE_INSERT = f"INSERT INTO states ({_columns(STATE_COLUMNS)})"
_LOG_INSERT = f"INSERT INTO logs ({_columns(LOG_COLUMNS)})"
_FLOW_INFO_INSERT = (f"INSERT INTO flows ({_columns(FLOW_INFO_COLUMNS)}) "
                     f"VALUES ({','.join('?' * len(FLOW_INFO_COLUMNS))}) ON CONFLICT(name) DO UPDATE SET "
                     + ", ".join(f"{c}=excluded.{c}" for c in FLOW_INFO_COLUMNS[1:]))
#: A task run created but given no state yet: cache_key, result_location, start_ts,
#: end_ts, run_count, inputs_hash (STATE_RUN_FIELDS).
_NO_RUN_FIELDS = (None, None, None, None, 0, None)

_FINAL = frozenset(("COMPLETED", "FAILED", "CANCELLED", "CRASHED"))


class BatchWriter:
    """Turns a batch of queue entries into rows and writes them in one transaction."""

    def __init__(self, host: str, pid: int, pid_start: str | None) -> None:
        self.seq = 0  # the order task runs were first written, for listings
        self.process = (host, pid, pid_start)
        #: Flow runs written unfinished: each batch asks whether another process marked
        #: one Crashed meanwhile (it took this process for dead).
        self.open_flows: set[str] = set()
        #: Runs another process marked Crashed: their later states are not written (a
        #: final state is never followed by another), their rows are kept as marked.
        self.taken: set[str] = set()
        constants = ",".join(sql_literal(value) for value in self.process)
        self._task_one = "(" + ",".join("?" * len(TASK_RUN_COLUMNS)) + "," + constants + ")"

    def rows(self, batch: list[tuple[Any, ...]]) -> Callable[[sqlite3.Connection], None]:
        """The batch as a function writing its rows (called inside a transaction)."""
        headers: dict[str, tuple[Any, ...]] = {}
        latest: dict[str, tuple[Any, ...]] = {}
        resolved: dict[str, str] = {}  # parameters with their futures' results
        first_ts: dict[str, float] = {}
        state_rows = []  # in queue order, flow and task runs alike
        flows: dict[str, tuple[Any, ...]] = {}
        flow_created: dict[str, float] = {}
        infos: dict[str, tuple[Any, ...]] = {}
        for entry in batch:
            kind = entry[0]
            if kind == TASK_HEADER:
                headers[entry[HEADER_RUN_ID]] = entry
                if len(entry) == HEADER_LEN:
                    continue
                entry = entry[HEADER_LEN:]  # the run's first state, queued with it
                kind = TASK_STATE
            if kind == TASK_STATE:
                run_id = entry[STATE_RUN_ID]
                state_rows.append(entry[STATE_ROW])
                latest[run_id] = entry
                if entry[STATE_PARAMETERS] is not None:
                    resolved[run_id] = entry[STATE_PARAMETERS]
                if run_id not in first_ts:
                    first_ts[run_id] = entry[STATE_TS]
            elif kind == FLOW:
                run_id = entry[FLOW_ROW][FLOW_ROW_ID]
                flows[run_id] = entry[FLOW_ROW]
                if run_id not in flow_created:
                    flow_created[run_id] = entry[FLOW_CREATED]
                if entry[FLOW_STATE_ROW] is not None:
                    state_rows.append(entry[FLOW_STATE_ROW])
            elif kind == FLOW_INFO:
                row = entry[FLOW_INFO_ROW]
                infos[row[0]] = row  # by the flow's name
        # Rows in the order of TASK_RUN_COLUMNS.
        task_rows, created_only = [], []
        for run_id, entry in latest.items():
            header = headers.pop(run_id, None)
            if header is None:  # created in an earlier batch: the row exists, only updated
                header = empty_header(run_id, first_ts[run_id])
            parameters = resolved.get(run_id, header[HEADER_PARAMETERS])
            self.seq += 1
            task_rows.append((*header[HEADER_RUN_ID:HEADER_PARAMETERS], parameters,
                              *header[HEADER_TAGS:HEADER_CREATED], *entry[STATE_RUN_FIELDS], entry[STATE_TYPE],
                              entry[STATE_NAME], entry[STATE_MESSAGE], header[HEADER_CREATED], self.seq))
        for header in headers.values():  # created; its first state comes in the next batch
            self.seq += 1
            created_only.append((*header[HEADER_RUN_ID:HEADER_CREATED], *_NO_RUN_FIELDS, None, None, None,
                                 header[HEADER_CREATED], self.seq))
        flow_rows = [(*row, *self.process, flow_created[run_id]) for run_id, row in flows.items()]
        info_rows = list(infos.values())
        task_one = self._task_one

        def write(conn: sqlite3.Connection) -> None:
            states = state_rows
            if self.open_flows or flows:
                self._find_taken(conn, flows)
                if self.taken:
                    states = [row for row in state_rows if row[0] not in self.taken]  # by run_id
            if flow_rows:
                conn.executemany(_FLOW_INSERT, flow_rows)
            insert_rows(conn, _TASK_INSERT, created_only, task_one, " ON CONFLICT(id) DO NOTHING")
            insert_rows(conn, _TASK_INSERT, task_rows, task_one, _TASK_UPDATE)
            insert_rows(conn, _STATE_INSERT, states)
            if info_rows:
                conn.executemany(_FLOW_INFO_INSERT, info_rows)

        return write

    def _find_taken(self, conn: sqlite3.Connection, flows: dict[str, tuple[Any, ...]]) -> None:
        """Before a batch is written: which of this writer's unfinished flow runs (and
        those in the batch) another process has marked Crashed. One indexed SELECT per
        batch, over a handful of ids; a second one only when such a run is found."""
        ids = [run_id for run_id in self.open_flows.union(flows) if run_id not in self.taken]
        if ids:
            marks = ",".join("?" * len(ids))
            crashed = [run_id for (run_id,) in conn.execute(
                f"SELECT id FROM flow_runs WHERE id IN ({marks}) AND state_type = 'CRASHED'", ids)]
            if crashed:
                marks = ",".join("?" * len(crashed))
                self.taken.update(crashed)
                self.taken.update(run_id for (run_id,) in conn.execute(
                    f"SELECT id FROM task_runs WHERE flow_run_id IN ({marks}) AND state_type = 'CRASHED'", crashed))
        for run_id, row in flows.items():
            if row[FLOW_ROW_STATE_TYPE] in _FINAL or run_id in self.taken:
                self.open_flows.discard(run_id)
            else:
                self.open_flows.add(run_id)

    def transaction(self, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]],
                    also: Callable[[sqlite3.Connection], Any] | None = None) -> Callable[[sqlite3.Connection], None]:
        """The batch and its log lines (and ``also``) as one function for ``write_transaction``."""
        write_rows = self.rows(batch)

        def write(conn: sqlite3.Connection) -> None:
            write_rows(conn)
            insert_rows(conn, _LOG_INSERT, logs)
            if also is not None:
                also(conn)

        return write

    def write(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]],
              also: Callable[[sqlite3.Connection], Any] | None = None) -> None:
        """Write the batch and its log lines in one transaction, with ``also`` (also when
        the batch has to be written piece by piece: each piece is a savepoint of it).

        A value SQLite refuses (text with a lone surrogate, a message that is not text)
        would make the whole transaction fail, and with it every other row of the batch,
        other flows' rows too. So a batch that fails for a reason other than the store
        itself (busy, full, read-only: every part would fail alike) is written again with
        its values made storable (``plain_values``), and if that fails too, in halves,
        down to single entries: every row that can be written is, and an entry that
        cannot is reported (``StoreError`` naming it, raised once the rest is written).
        The usual batch pays nothing for this: it is written once, as it is."""
        seq = self.seq
        try:
            write_transaction(conn, self.transaction(batch, logs, also))
            return
        except Exception as exc:
            self.seq = seq  # the order numbers this attempt gave out were not written
            if not row_error(exc):
                raise
        batch = [plain_values(entry) for entry in batch]
        logs = [plain_values(line) for line in logs]
        lost: list[tuple[str, int, BaseException]] = []

        def pieces(conn: sqlite3.Connection) -> None:
            # One transaction for every piece and ``also``: a writer process that dies
            # before it commits leaves nothing of the batch, so writing it again later
            # (its flow process takes the batch back) cannot record a state twice.
            lost.clear()
            self.seq = seq
            self._write_pieces(conn, batch, logs, 0, 0, lost)
            if also is not None:
                also(conn)

        write_transaction(conn, pieces)
        if lost:
            raise RecordsNotWritten(lost, batch)

    def _write_pieces(self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]],
                      at: int, logs_at: int, lost: list[tuple[str, int, BaseException]]) -> None:
        """``batch`` and ``logs`` (from positions ``at`` and ``logs_at`` of the whole
        batch) at once, or else in halves (in queue order: a run's later
        states follow its earlier ones), down to single entries; what fails alone goes
        into ``lost`` as ("entry" or "log", its position, the error). Each piece is a
        savepoint of the caller's transaction."""
        seq = self.seq
        conn.execute("SAVEPOINT piece")
        try:
            self.transaction(batch, logs)(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO piece")
            conn.execute("RELEASE piece")
            self.seq = seq
            if not row_error(exc):
                raise
            if len(batch) + len(logs) == 1:
                lost.append(("entry", at, exc) if batch else ("log", logs_at, exc))
                return
        else:
            conn.execute("RELEASE piece")
            return
        if batch and logs:
            self._write_pieces(conn, batch, [], at, logs_at, lost)
            self._write_pieces(conn, [], logs, at, logs_at, lost)
            return
        half = len(batch or logs) // 2
        if batch:
            self._write_pieces(conn, batch[:half], [], at, logs_at, lost)
            self._write_pieces(conn, batch[half:], [], at + half, logs_at, lost)
        else:
            self._write_pieces(conn, [], logs[:half], at, logs_at, lost)
            self._write_pieces(conn, [], logs[half:], at, logs_at + half, lost)


class RecordsNotWritten(StoreError):
    """Some entries or log lines of a batch could not be written (every other one was).
    ``lost``: ("entry" or "log", position in the batch or its log lines, error)."""

    def __init__(self, lost: list[tuple[str, int, BaseException]], batch: list[tuple[Any, ...]]) -> None:
        self.lost = lost
        self.names = names = [describe_entry(batch[i]) if kind == "entry" else "a log line" for kind, i, _ in lost]
        what = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        error = lost[0][2]
        super().__init__(f"{len(lost)} record(s) could not be written ({what}): {type(error).__name__}: "
                         f"{error}; everything else was written")


def row_error(exc: BaseException) -> bool:
    """Whether ``exc`` may come from the values of some rows (so other rows can still be
    written), not from the store itself (busy past every retry, full, read-only, damaged)."""
    if isinstance(exc, sqlite3.OperationalError):
        return "too big" in str(exc)  # a value over SQLite's length limit
    return isinstance(exc, (ValueError, TypeError, OverflowError, sqlite3.InterfaceError,
                            sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.IntegrityError))
