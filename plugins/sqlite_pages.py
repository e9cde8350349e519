"""The SQLite run store's paged reads, for big and many runs: one page of a flow run's
task runs or log lines and how many there are in all, counts of task runs by state, flow
runs searched by several filters, and every result location runs refer to.

Each is one or two indexed queries, whatever the size of the run: a page of a
20,000-task run's log lines words only its own routine lines (``headwater.task_lines``),
in SQL order, rather than all 40,000 of them. A mixin of ``SQLiteRunStore`` over
``SQLiteReads`` (its row readers and crash judging).
"""

from __future__ import annotations

from typing import Any

from headwater.runs import FlowRun, TaskRun
from headwater.states import FINAL_TYPES
from headwater.stores import LOG_LEVELS, FlowRunFilter, Page, StateCounts
from headwater.task_lines import CREATED, FINISHED
from headwater.task_lines import LOGGER as LINES_LOGGER

from . import sqlite_liveness as liveness
from .sqlite_reads import SQLiteReads
from .sqlite_values import safe_text

#: LIMIT for "no limit", in the SQL both SQLite and PostgreSQL take.
NO_LIMIT = 2**62
_FINAL = ", ".join(f"'{t.value}'" for t in sorted(FINAL_TYPES))
#: The SQL of "this ``logs`` row is a marker row" (``headwater.task_lines.marker_row``).
_MARKER = "(message IS NULL AND logger = ? AND task_run_id IS NULL)"
#: The task runs a ``task`` filter means: this id or name, or runs of this task.
_TASK_MATCH = "(id = ? OR name = ? OR task_name = ?)"


def _state_clause(state: str | None) -> tuple[str, list[Any]]:
    """`` AND`` the state filter of the read API (a type or a name, any case)."""
    if state is None:
        return "", []
    return " AND (state_type = ? OR lower(state_name) = lower(?))", [safe_text(state.upper()), safe_text(state)]


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere (``%`` and ``_`` taken literally)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def flow_run_where(where: FlowRunFilter) -> tuple[str, list[Any]]:
    """The WHERE clause (possibly empty) and its arguments for a :class:`FlowRunFilter`
    (text looked up as it was stored: ``safe_text``)."""
    parts: list[str] = []
    args: list[Any] = []
    if where.flow_names:
        parts.append(f"flow_name IN ({', '.join('?' * len(where.flow_names))})")
        args += [safe_text(name) for name in where.flow_names]
    if where.search:
        # lower() on both sides: LIKE ignores case in SQLite but not in every database
        # that reuses this SQL (PostgreSQL's store does).
        parts.append("(lower(name) LIKE lower(?) ESCAPE '\\' OR lower(flow_name) LIKE lower(?) ESCAPE '\\')")
        args += [_like(safe_text(where.search))] * 2
    for tag in where.tags:
        parts.append("EXISTS (SELECT 1 FROM json_each(flow_runs.tags) WHERE value = ?)")
        args.append(safe_text(tag))
    if where.state is not None:
        parts.append("(state_type = ? OR lower(state_name) = lower(?))")
        args += [safe_text(where.state.upper()), safe_text(where.state)]
    if where.started_after is not None:
        parts.append("coalesce(start_ts, created) >= ?")
        args.append(where.started_after)
    if where.started_before is not None:
        parts.append("coalesce(start_ts, created) < ?")
        args.append(where.started_before)
    if where.parent_flow_run_id is not None:
        parts.append("parent_flow_run_id = ?")
        args.append(where.parent_flow_run_id)
    if where.top_level:
        parts.append("parent_flow_run_id IS NULL")
    return (f"WHERE {' AND '.join(parts)}" if parts else ""), args


def _limit(limit: int | None, offset: int) -> tuple[str, list[Any]]:
    # No limit is a limit no listing reaches (SQLite takes -1, PostgreSQL does not).
    return " LIMIT ? OFFSET ?", [NO_LIMIT if limit is None else max(0, int(limit)), max(0, int(offset))]


class SQLitePages(SQLiteReads):
    """``search_flow_runs``, ``read_task_run_page``, ``count_task_run_states``,
    ``read_log_page`` and ``read_result_locations`` of the run store interface."""

    def search_flow_runs(self, where: FlowRunFilter | None = None, offset: int = 0,
                         limit: int | None = 50) -> Page[FlowRun]:
        clause, args = flow_run_where(where or FlowRunFilter())
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM flow_runs {clause}", args).fetchone()[0]
        paging, more = _limit(limit, offset)
        rows = conn.execute(f"SELECT {self._FLOW_COLS} FROM flow_runs {clause} ORDER BY created DESC{paging}",
                            args + more).fetchall()
        judge = self._judge()
        runs = [self._flow(r, judge) for r in rows]
        self._settle(judge)
        return Page(runs, total, max(0, int(offset)), limit)

    def read_task_run_page(self, flow_run_id: str, offset: int = 0, limit: int | None = 50,
                           state: str | None = None, retried: bool = False) -> Page[TaskRun]:
        clause, args = _state_clause(state)
        if retried:
            clause += " AND run_count > 1"
        conn = self._conn()
        where = f"WHERE flow_run_id = ?{clause}"
        total = conn.execute(f"SELECT count(*) FROM task_runs {where}", [flow_run_id, *args]).fetchone()[0]
        paging, more = _limit(limit, offset)
        # Sorted by keys and row ids only; the page's full rows are read after.
        rows = conn.execute(f"SELECT {self._TASK_COLS} FROM task_runs WHERE rowid IN (SELECT rowid FROM "
                            f"task_runs {where} ORDER BY created, seq{paging}) ORDER BY created, seq",
                            [flow_run_id, *args, *more]).fetchall()
        judge = self._judge()
        runs = [self._task(r, judge) for r in rows]
        self._settle(judge)
        return Page(runs, total, max(0, int(offset)), limit)

    def count_task_run_states(self, flow_run_id: str) -> StateCounts:
        conn = self._conn()
        counts = StateCounts()
        unfinished = 0
        for state_type, state_name, count in conn.execute(
                "SELECT state_type, state_name, count(*) FROM task_runs WHERE flow_run_id = ? "
                "GROUP BY state_type, state_name", (flow_run_id,)):
            counts.add(state_type, state_name, count)
            if state_type is None or state_type in liveness.UNFINISHED:
                unfinished += count
        if unfinished:
            # Runs whose process is gone count as Crashed, as every read shows them.
            judge = self._judge()
            for st, sn, *process, since in conn.execute(
                    f"SELECT state_type, state_name, host, pid, pid_start, "
                    f"coalesce({liveness.last_state_sql('task_runs')}, start_ts, created) "
                    f"FROM task_runs WHERE flow_run_id = ? AND {liveness.UNFINISHED_SQL}",
                    (flow_run_id, *liveness.UNFINISHED)):
                crashed = judge.crashed(self._state(st, sn, None, since), *process, since)
                if crashed is not None:
                    counts.add(st, sn, -1)
                    counts.add(crashed.type.value, crashed.name)
            self._settle(judge)
            counts.by_type = {k: v for k, v in counts.by_type.items() if v}
            counts.by_name = {k: v for k, v in counts.by_name.items() if v}
        return counts

    def read_log_page(self, flow_run_id: str, offset: int = 0, limit: int | None = 200,
                      level: str | None = None, task: str | None = None) -> Page[dict[str, Any]]:
        conn = self._conn()
        # Recorded lines; then, for a flow run with the marker row, its task runs' routine
        # lines (INFO), worded for the page only. Sorted as ``merge_lines`` merges them: by
        # time, a routine line first on a tie, routine lines in task run order. The sort
        # holds only keys and row ids: the page's rows are read after it.
        recorded = (f"SELECT ts, 1 AS src, seq AS k1, 0 AS k2, 0 AS k3, seq AS rid "
                    f"FROM logs WHERE flow_run_id = ? AND NOT {_MARKER}")
        args: list[Any] = [flow_run_id, LINES_LOGGER]
        levels = None
        if level is not None:
            levels = list(LOG_LEVELS[LOG_LEVELS.index(level.upper()):]) if level.upper() in LOG_LEVELS else [level]
            recorded += f" AND upper(level) IN ({', '.join('?' * len(levels))})"
            args += [x.upper() for x in levels]
        if task is not None:
            task = safe_text(task)  # as task runs' names are stored
            recorded += f" AND task_run_id IN (SELECT id FROM task_runs WHERE flow_run_id = ? AND {_TASK_MATCH})"
            args += [flow_run_id, task, task, task]
        parts = [recorded]
        marked = conn.execute(f"SELECT 1 FROM logs WHERE flow_run_id = ? AND {_MARKER} LIMIT 1",
                              (flow_run_id, LINES_LOGGER)).fetchone()
        if marked and (levels is None or "INFO" in levels):
            # A task run a task started on a worker is recorded after it ran: its start
            # time (the worker's) is then earlier than its row's creation.
            created = ("CASE WHEN start_ts IS NOT NULL AND start_ts < coalesce(created, 0) THEN start_ts "
                       "ELSE coalesce(created, 0) END")
            if task is None:
                parts.append(f"SELECT {created}, 0, {created}, seq, 0, rowid FROM task_runs WHERE flow_run_id = ?")
                args.append(flow_run_id)
            finished = (f"SELECT coalesce(end_ts, created), 0, {created}, seq, 1, rowid FROM task_runs "
                        f"WHERE flow_run_id = ? AND state_type IN ({_FINAL})")
            args.append(flow_run_id)
            if task is not None:
                finished += f" AND {_TASK_MATCH}"
                args += [task, task, task]
            parts.append(finished)
        union = " UNION ALL ".join(parts)
        total = conn.execute(f"SELECT count(*) FROM ({union}) AS lines", args).fetchone()[0]
        paging, more = _limit(limit, offset)
        keys = conn.execute(f"SELECT ts, src, k3, rid FROM ({union}) AS lines ORDER BY ts, src, k1, k2, k3{paging}",
                            args + more).fetchall()
        return Page(self._log_lines(conn, flow_run_id, keys), total, max(0, int(offset)), limit)

    def _log_lines(self, conn: Any, flow_run_id: str, keys: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """The lines of a page from its sort keys: recorded rows read by ``seq``, routine
        lines worded from their task run's row (by ``rowid``)."""
        seqs = [rid for _, src, _, rid in keys if src == 1]
        rowids = list({rid for _, src, _, rid in keys if src == 0})
        logs = {row[0]: row[1:] for row in conn.execute(
            f"SELECT seq, task_run_id, level, logger, message FROM logs WHERE seq IN ({', '.join('?' * len(seqs))})",
            seqs)} if seqs else {}
        tasks = {row[0]: row[1:] for row in conn.execute(
            f"SELECT rowid, id, name, task_name, state_type, state_name, state_message FROM task_runs "
            f"WHERE rowid IN ({', '.join('?' * len(rowids))})", rowids)} if rowids else {}
        lines = []
        for ts, src, second, rid in keys:
            if src == 1:
                task_run_id, level, logger, message = logs[rid]
            else:  # a routine line, worded as the engine logs it
                task_id, name, task_name, st, sn, sm = tasks[rid]
                level, logger = "INFO", LINES_LOGGER
                task_run_id = task_id if second else None
                message = CREATED % (name, task_name) if not second else FINISHED % (self._state(st, sn, sm, ts),)
            lines.append({"flow_run_id": flow_run_id, "task_run_id": task_run_id, "ts": ts, "level": level,
                          "logger": logger, "message": message})
        return lines

    def read_result_locations(self) -> set[str]:
        rows = self._conn().execute(
            "SELECT result_location FROM task_runs WHERE result_location IS NOT NULL "
            "UNION SELECT parameters_location FROM flow_runs WHERE parameters_location IS NOT NULL "
            "UNION SELECT result_location FROM flow_runs WHERE result_location IS NOT NULL").fetchall()
        return {location for (location,) in rows}
