"""Connections to the PostgreSQL run store, speaking the SQL the SQLite store's code writes.

The reads, paged reads, cache index and batch writer of the SQLite store
(``headwater.plugins.sqlite_*``) are written in SQL that both databases take, with a
handful of SQLite spellings left. :func:`to_postgres` rewrites those (once per statement
text, then cached), so this package reuses that code rather than keeping a second copy
of every query in step with the first:

* ``?`` placeholders become ``%s`` (and a literal ``%`` becomes ``%%``);
* ``x IS ?`` / ``x IS NOT 'text'`` (SQLite's null-safe comparisons) become
  ``IS NOT DISTINCT FROM`` / ``IS DISTINCT FROM``;
* ``json_each(column)`` becomes ``json_array_elements_text(column::json)``;
* ``BEGIN IMMEDIATE`` becomes ``BEGIN``.

:class:`PooledConnection` is what the store's code calls a connection: ``execute``,
``executemany``, ``fetchone`` / ``fetchall`` / iteration on the result, ``rowcount``.
Each statement outside a transaction borrows a connection from the pool
(``psycopg_pool``) for as long as it runs; ``BEGIN`` holds one until ``COMMIT`` or
``ROLLBACK``. One per thread (the store keeps them in a ``threading.local``).

PostgreSQL's text cannot hold NUL characters: each becomes the four characters ``\\x00``
when written, and lookups (a cache key) are escaped the same way. A value the server or
the driver refuses (text that is not UTF-8, a number out of range) is raised as
:class:`ValueRefused`, a ``ValueError``: the batch writer then writes every other row
and reports that one (``sqlite_writer.BatchWriter.write``).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import psycopg

from headwater.errors import StoreError
from headwater.plugins import sqlite_liveness as liveness
from headwater.plugins.sqlite_writers import ThreadWriter

# The pool reports each failed reconnection attempt as a log record; with no handler
# configured, Python would print each to stderr. What a user needs to know is raised
# once, as one line, when a write finally fails (ReconnectingWriter).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

#: Seconds a batch is tried again while the server cannot be reached (a restart, a
#: failover) before the write is reported as failed.
RECONNECT_SECONDS = 120.0

#: Statement texts already rewritten (a few dozen: the store's statements are fixed texts,
#: the multi-row inserts in a dozen sizes).
_REWRITTEN: dict[str, str] = {}

_IS_PARAM = re.compile(r"\bIS (NOT )?\?")
_IS_NOT_TEXT = re.compile(r"\bIS NOT '")
_JSON_EACH = re.compile(r"\bjson_each\(([\w.]+)\)")


def to_postgres(sql: str) -> str:
    """``sql`` (as the SQLite store writes it) in PostgreSQL's spelling; see the module."""
    out = _REWRITTEN.get(sql)
    if out is not None:
        return out
    text = sql.strip()
    if text.upper() == "BEGIN IMMEDIATE":
        text = "BEGIN"
    if text.upper().startswith("PRAGMA"):
        raise ValueError(f"an SQLite PRAGMA reached the PostgreSQL store: {sql!r}")
    text = text.replace("%", "%%")
    text = _IS_PARAM.sub(lambda m: "IS DISTINCT FROM ?" if m.group(1) else "IS NOT DISTINCT FROM ?", text)
    text = _IS_NOT_TEXT.sub("IS DISTINCT FROM '", text)
    text = _JSON_EACH.sub(r"json_array_elements_text(\1::json)", text)
    text = text.replace("?", "%s")
    if len(_REWRITTEN) < 10_000:
        _REWRITTEN[sql] = text
    return text


def storable(value: Any) -> Any:
    """``value`` as PostgreSQL's text can hold it (NUL characters escaped)."""
    if type(value) is str and "\x00" in value:
        return value.replace("\x00", "\\x00")
    return value


def _params(params: Sequence[Any] | None, patterns: bool = False) -> list[Any] | None:
    """``params`` as PostgreSQL can take them. ``patterns``: the statement has LIKE
    patterns with ``ESCAPE '\\'`` (``sqlite_pages``' search, whose patterns start and end
    with ``%``): there a NUL must match the stored ``\\x00``, backslash included, so it
    becomes ``\\\\x00``."""
    if not params:
        return None
    if patterns:
        return [p.replace("\x00", "\\\\x00") if type(p) is str and len(p) > 1 and p[0] == p[-1] == "%"
                else storable(p) for p in params]
    return [storable(p) for p in params]


_HEAD = re.compile(r"^\s*INSERT INTO (\w+) \(([^)]*)\)\s*$", re.IGNORECASE)


def _head(head: str) -> tuple[str, list[str]]:
    """The table and columns of ``INSERT INTO table (a, b, c)``."""
    match = _HEAD.match(head)
    if match is None:
        raise ValueError(f"not an INSERT head: {head!r}")
    return match.group(1), [c.strip() for c in match.group(2).split(",")]


def _constants(one: str, count: int) -> tuple[Any, ...]:
    """The last ``count`` values of a one-row group ``(?,?,'host',123,NULL)`` that are
    constants (SQL literals, as ``sqlite_writer.sql_literal`` writes them)."""
    if count <= 0:
        return ()
    items = _LITERALS.findall(one.strip()[1:-1])
    values: list[Any] = []
    for item in items[-count:]:
        if item == "NULL":
            values.append(None)
        elif item.startswith("'"):
            values.append(item[1:-1].replace("''", "'"))
        else:
            values.append(int(item))
    return tuple(values)


_LITERALS = re.compile(r"'(?:[^']|'')*'|[^,]+")


class ValueRefused(ValueError):
    """A value of a row that PostgreSQL or the driver would not take (the rest of its batch
    can still be written)."""


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a value (a data or integrity error), not the server."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.DataError) or sqlstate[:2] in ("22", "23")


class Result:
    """What ``execute`` returns: its rows, already read (the connection went back to the
    pool), and how many rows it changed."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class PooledConnection:
    """One thread's way to the store: borrows a pooled connection per statement, holds one
    from ``BEGIN`` to ``COMMIT`` / ``ROLLBACK``. See the module docstring."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._held: psycopg.Connection | None = None

    @property
    def in_transaction(self) -> bool:
        return self._held is not None

    def getlimit(self, _category: int) -> int:
        """Placeholders one statement may have (``insert_rows`` asks SQLite's way)."""
        return 65_535

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Result:
        text = to_postgres(sql)
        word = text.split(None, 1)[0].upper() if text else ""
        if word == "BEGIN":
            if self._held is None:
                self._held = self._pool.getconn()
            try:
                self._held.execute("BEGIN")
            except psycopg.OperationalError:
                self.release()  # a connection the server closed: the pool replaces it
                raise
            return Result([], -1)
        if word in ("COMMIT", "ROLLBACK") and not text.upper().startswith("ROLLBACK TO"):
            held, self._held = self._held, None
            if held is None:
                return Result([], -1)
            try:
                held.execute(word)
            finally:
                self._pool.putconn(held)
            return Result([], -1)
        values = _params(params, "ESCAPE" in text)
        if self._held is not None:
            return self._run(self._held, text, values)
        try:
            with self._pool.connection() as conn:
                return self._run(conn, text, values)
        except psycopg.OperationalError:
            # A statement on its own (a read, a heartbeat) on a connection the server
            # closed (restarted): once more on another; the pool drops the broken one.
            with self._pool.connection() as conn:
                return self._run(conn, text, values)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Result:
        text = to_postgres(sql)
        rows = [_params(row) or [] for row in rows]
        if not rows:
            return Result([], 0)
        if self._held is not None:
            return self._run_many(self._held, text, rows)
        with self._pool.connection() as conn:
            return self._run_many(conn, text, rows)

    @staticmethod
    def _run(conn: psycopg.Connection, text: str, params: list[Any] | None) -> Result:
        try:
            cur = conn.execute(text, params)
        except (psycopg.Error, ValueError) as exc:
            if isinstance(exc, ValueError) or _refused(exc):
                raise ValueRefused(str(exc)) from exc
            raise
        rows = cur.fetchall() if cur.description is not None else []
        return Result(rows, cur.rowcount)

    @staticmethod
    def _run_many(conn: psycopg.Connection, text: str, rows: list[list[Any]]) -> Result:
        try:
            with conn.cursor() as cur:
                cur.executemany(text, rows)
                return Result([], cur.rowcount)
        except (psycopg.Error, ValueError) as exc:
            if isinstance(exc, ValueError) or _refused(exc):
                raise ValueRefused(str(exc)) from exc
            raise

    def insert_rows(self, head: str, rows: list[tuple[Any, ...]], one: str | None = None, tail: str = "") -> None:
        """``head VALUES one, ... tail`` (as ``sqlite_writer.insert_rows`` writes it) by
        ``COPY``: PostgreSQL's bulk load, ten times the speed of the same rows as a
        multi-row ``INSERT`` (whose statement text the driver parses in Python). Rows go
        straight into the table, in order (so ``states`` keep their order by ``seq``);
        with an ``ON CONFLICT`` tail, into a temporary table first, then ``INSERT ...
        SELECT`` from it with the tail. Must run in the caller's transaction."""
        table, columns = _head(head)
        constants = _constants(one, len(columns) - len(rows[0])) if one else ()
        if constants:
            rows = [row + constants for row in rows]
        conn = self._held
        if conn is None:
            raise RuntimeError("insert_rows runs inside a transaction (BEGIN first)")
        names = ", ".join(columns)
        if not tail.strip():
            target = table
        else:
            target = f"stage_{table}_{len(columns)}"
            # The columns' types, without their constraints; emptied before each use (two
            # statements of one transaction may use it) and at each commit.
            conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {target} ON COMMIT DELETE ROWS AS "
                         f"SELECT {names} FROM {table} WITH NO DATA")
            conn.execute(f"TRUNCATE {target}")
        conn.execute("SAVEPOINT copy_rows")
        try:
            self._copy(conn, target, names, rows)
        except (psycopg.DataError, ValueError):
            # Text PostgreSQL cannot hold (NUL characters): the rows again, escaped. The
            # usual batch pays nothing for this check.
            conn.execute("ROLLBACK TO SAVEPOINT copy_rows")
            try:
                self._copy(conn, target, names, [tuple(storable(v) for v in row) for row in rows])
            except (psycopg.Error, ValueError) as exc:
                raise ValueRefused(str(exc)) from exc
        conn.execute("RELEASE SAVEPOINT copy_rows")
        if target != table:
            self._run(conn, f"INSERT INTO {table} ({names}) SELECT {names} FROM {target} {to_postgres(tail)}", None)

    @staticmethod
    def _copy(conn: psycopg.Connection, table: str, names: str, rows: list[tuple[Any, ...]]) -> None:
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def release(self) -> None:
        """Give back a connection still held (a transaction left open: rolled back)."""
        held, self._held = self._held, None
        if held is not None:
            try:
                held.execute("ROLLBACK")
            except psycopg.Error:
                pass
            self._pool.putconn(held)

    def close(self) -> None:
        self.release()


def broken(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection or the server went away (worth trying again on a
    new connection), rather than that a statement was wrong."""
    from psycopg_pool import PoolTimeout

    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout))


class ReconnectingWriter(ThreadWriter):
    """The store's batch writer, which writes a batch again while the server cannot be
    reached, for up to ``RECONNECT_SECONDS``: a batch is one transaction, so a batch whose
    connection was lost left nothing behind. A restart of the server then costs a pause,
    not the rest of the flow's history."""

    def __init__(self, rows: Any, connection: Callable[[], Any], read_only_message: Callable[[], str],
                 label: str) -> None:
        super().__init__(rows, connection, read_only_message)
        self.label = label

    def write(self, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]], marks: list[Any]) -> None:
        deadline = time.monotonic() + RECONNECT_SECONDS
        delay = 0.1
        while True:
            try:
                return super().write(batch, logs, marks)
            except Exception as exc:
                cause = exc.__cause__ if isinstance(exc, ValueRefused) else exc
                if not broken(cause) or time.monotonic() > deadline:
                    if broken(cause):
                        raise StoreError(f"the PostgreSQL run store {self.label} could not be reached for "
                                         f"{RECONNECT_SECONDS:.0f} s: {str(cause).strip().splitlines()[0]}") from None
                    raise
                self._connection().release()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


class Heartbeat(liveness.Heartbeat):
    """The SQLite store's heartbeat, which also records the interval it beats at
    (``flow_runs.heartbeat_every``), so that every reader judges a process by its own
    pace; and beats at the first pass, so the interval is known from the start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        host, pid, token = self._process
        try:
            self._connection().execute(
                f"UPDATE flow_runs SET heartbeat = ?, heartbeat_every = ? WHERE host = ? AND pid = ? "
                f"AND pid_start IS ? AND {liveness.UNFINISHED_SQL}",
                (time.time(), self.every, host, pid, token, *liveness.UNFINISHED))
        except Exception:  # noqa: S110 - a missed heartbeat is made up by the next; the writer goes on
            pass
