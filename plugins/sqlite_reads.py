"""The SQLite run store's reads: runs, their state histories and log lines as the
``RunStore`` read API returns them. Every read goes through ``self._conn()``, the
calling thread's connection, so readers never wait for the writer (WAL mode).

A run left unfinished by a process that is gone is read as ``Crashed`` (its history ends
with a Crashed state) whatever the file says yet; see ``sqlite_liveness``. Reads write
nothing, except that finding such a run of this host marks it in the store (at most every
``MARK_SECONDS``; not at all when the store cannot be written).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any, Iterable

from headwater.runs import FlowRun, TaskRun
from headwater.states import State, StateDetails, StateType
from headwater.stores import FlowInfo, FlowSummary
from headwater.task_lines import LOGGER as LINES_LOGGER
from headwater.task_lines import merge_lines, task_lines

from . import sqlite_liveness as liveness
from .sqlite_values import safe_text


def summarize_flows(runs: Iterable[FlowRun], infos: Iterable[FlowInfo] = ()) -> list[FlowSummary]:
    """Flow summaries from flow runs (newest first) and recorded infos; newest-run first.
    What a store without its own ``read_flows`` answers (``RunReader.read_flows``)."""
    out: dict[str, FlowSummary] = {}
    for run in runs:
        summary = out.get(run.flow_name)
        if summary is None:
            summary = out[run.flow_name] = FlowSummary(run.flow_name, version=run.flow_version,
                                                       last_run=run)
        summary.run_count += 1
        kind = run.state.type.value if run.state else "NONE"
        summary.state_counts[kind] = summary.state_counts.get(kind, 0) + 1
    return merge_flow_infos(out, infos)


def merge_flow_infos(summaries: dict[str, FlowSummary], infos: Iterable[FlowInfo]) -> list[FlowSummary]:
    """Add recorded flow infos to summaries by flow name; flows without runs go last."""
    for info in infos:
        summary = summaries.setdefault(info.name, FlowSummary(info.name))
        summary.description, summary.tags = info.description, list(info.tags)
        summary.version = info.version or summary.version
    return list(summaries.values())


class SQLiteReads:
    """The read half of ``SQLiteRunStore`` (a mixin: ``_conn()`` is the store's)."""

    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - the store's
        raise NotImplementedError

    def mark_crashed_runs(self) -> int:  # pragma: no cover - the store's
        raise NotImplementedError

    # The last four columns say which process runs it and when the run last recorded a
    # state, if it has not ended (see sqlite_liveness).
    _FLOW_COLS = ("id, name, flow_name, flow_version, parent_flow_run_id, parent_task_run_id, "
                  "parameters, tags, state_type, state_name, state_message, start_ts, end_ts, "
                  "run_count, created, host, pid, pid_start, " + liveness.last_state_sql("flow_runs") +
                  ", entry_point, inputs_hash, parameters_location, result_location")
    _TASK_COLS = ("id, flow_run_id, name, task_name, task_key, parameters, tags, cache_key, "
                  "result_location, upstream, state_type, state_name, state_message, start_ts, "
                  "end_ts, run_count, created, host, pid, pid_start, " + liveness.last_state_sql("task_runs") +
                  ", inputs_hash")

    # -- liveness -------------------------------------------------------------------------

    def _judge(self) -> liveness.Judge:
        """A judge of dead processes for one read (each process looked at once)."""
        return liveness.Judge(getattr(self, "_pid", os.getpid()), getattr(self, "_pid_start", None),
                              lambda host, pid, token: liveness.last_seen(self._conn(), host, pid, token))

    def _settle(self, judge: liveness.Judge) -> None:
        """After a read that found dead runs of this host: mark them in the store, at most
        every MARK_SECONDS (a dashboard polling each second does not write each time)."""
        if not judge.dead_here:
            return
        now = time.monotonic()
        if now < getattr(self, "_next_mark", 0.0):
            return
        self._next_mark = now + liveness.MARK_SECONDS
        try:
            self.mark_crashed_runs()
        except Exception:  # noqa: S110 - a reader never fails for it: the run is shown Crashed anyway
            pass

    @staticmethod
    def _judged(run: Any, judge: liveness.Judge | None, process: tuple[Any, ...], since: float | None) -> Any:
        """``run`` as its process says it is: Crashed (and ended) when that process is gone."""
        if judge is None:
            return run
        crashed = judge.crashed(run.state, *process, since)
        if crashed is not None:
            run.state = crashed
            run.end_ts = run.end_ts or crashed.ts
        return run

    @staticmethod
    def _state(type_: str | None, name: str | None, message: str | None, ts: float | None) -> State | None:
        if type_ is None:
            return None
        return State(StateType(type_), name, message, ts=ts)

    def _flow(self, row: tuple[Any, ...], judge: liveness.Judge | None = None) -> FlowRun:
        (rid, name, flow_name, version, parent, parent_task, params, tags, st, sn, sm, start, end,
         count, created, host, pid, token, last, entry_point, inputs_hash, parameters_at, result_at) = row
        run = FlowRun(rid, flow_name, name, json.loads(params or "{}"), frozenset(json.loads(tags or "[]")),
                      version, parent, parent_task)
        run.state = self._state(st, sn, sm, end or created)
        run.start_ts, run.end_ts, run.run_count = start, end, count or 0
        run.entry_point, run.inputs_hash = entry_point, inputs_hash
        run.parameters_location, run.result_location = parameters_at, result_at
        return self._judged(run, judge, (host, pid, token), last or start or created)

    def _task(self, row: tuple[Any, ...], judge: liveness.Judge | None = None) -> TaskRun:
        (rid, frid, name, task_name, key, params, tags, cache_key, location, upstream, st, sn, sm,
         start, end, count, created, host, pid, token, last, inputs_hash) = row
        run = TaskRun(rid, task_name, key or "", name, json.loads(params or "{}"),
                      frozenset(json.loads(tags or "[]")), frid)
        run.cache_key, run.result_location, run.inputs_hash = cache_key, location, inputs_hash
        run.upstream_ids = tuple(json.loads(upstream or "[]"))
        run.state = self._state(st, sn, sm, end or created)
        run.start_ts, run.end_ts, run.run_count = start, end, count or 0
        return self._judged(run, judge, (host, pid, token), last or start or created)

    def read_flow_runs(self, limit: int = 50, offset: int = 0, flow_name: str | None = None,
                       state: str | None = None, parent_flow_run_id: str | None = None) -> list[FlowRun]:
        clause, args = _flow_run_filter(flow_name, state, parent_flow_run_id)
        rows = self._conn().execute(
            f"SELECT {self._FLOW_COLS} FROM flow_runs {clause} ORDER BY created DESC LIMIT ? OFFSET ?",
            (*args, int(limit), int(offset))).fetchall()
        judge = self._judge()
        runs = [self._flow(r, judge) for r in rows]
        self._settle(judge)
        return runs

    def count_flow_runs(self, flow_name: str | None = None, state: str | None = None) -> int:
        clause, args = _flow_run_filter(flow_name, state, None)
        return self._conn().execute(f"SELECT count(*) FROM flow_runs {clause}", args).fetchone()[0]

    def read_flows(self) -> list[FlowSummary]:
        conn = self._conn()
        last = conn.execute(
            f"SELECT {self._FLOW_COLS} FROM flow_runs WHERE rowid IN (SELECT rowid FROM "
            f"(SELECT rowid, row_number() OVER (PARTITION BY flow_name ORDER BY created DESC) AS n "
            f"FROM flow_runs) AS ranked WHERE n = 1) ORDER BY created DESC").fetchall()
        judge = self._judge()
        out = {r[2]: FlowSummary(r[2], version=r[3], last_run=self._flow(r, judge)) for r in last}
        self._settle(judge)
        for name, state_type, count in conn.execute(
                "SELECT flow_name, state_type, count(*) FROM flow_runs GROUP BY flow_name, state_type"):
            if name in out:
                out[name].state_counts[state_type or "NONE"] = count
                out[name].run_count += count
        infos = [FlowInfo(n, d, v, json.loads(t or "[]"), u) for n, d, v, t, u in conn.execute(
            "SELECT name, description, version, tags, updated FROM flows ORDER BY updated DESC")]
        return merge_flow_infos(out, infos)

    def read_task_run_states(self, flow_run_id: str) -> dict[str, list[State]]:
        rows = self._conn().execute(
            "SELECT run_id, type, name, message, ts, details FROM states WHERE run_id IN "
            "(SELECT id FROM task_runs WHERE flow_run_id = ?) ORDER BY seq", (flow_run_id,)).fetchall()
        out: dict[str, list[State]] = {}
        for run_id, *state in rows:
            out.setdefault(run_id, []).append(_history_state(*state))
        if any(liveness.may_be_running(h[-1]) for h in out.values()):
            # Runs that may have lost their process: a Crashed state ends their history.
            judge = self._judge()
            for rid, st, sn, *process, since in self._conn().execute(
                    f"SELECT id, state_type, state_name, host, pid, pid_start, "
                    f"coalesce({liveness.last_state_sql('task_runs')}, start_ts, created) "
                    f"FROM task_runs WHERE flow_run_id = ? AND {liveness.UNFINISHED_SQL}",
                    (flow_run_id, *liveness.UNFINISHED)):
                crashed = judge.crashed(self._state(st, sn, None, since), *process, since)
                if crashed is not None:
                    out.setdefault(rid, []).append(crashed)
            self._settle(judge)
        return out

    def read_flow_run(self, id_or_name: str) -> FlowRun | None:
        conn = self._conn()
        id_or_name = safe_text(id_or_name)  # a name is looked up as it was stored
        row = conn.execute(f"SELECT {self._FLOW_COLS} FROM flow_runs WHERE id = ?", (id_or_name,)).fetchone()
        if row is None:
            row = conn.execute(f"SELECT {self._FLOW_COLS} FROM flow_runs WHERE name = ? "
                               f"ORDER BY created DESC LIMIT 1", (id_or_name,)).fetchone()
        if row is None and len(id_or_name) >= 6:
            row = conn.execute(f"SELECT {self._FLOW_COLS} FROM flow_runs WHERE id LIKE ? "
                               f"ORDER BY created DESC LIMIT 1", (id_or_name.replace("%", "") + "%",)).fetchone()
        if row is None:
            return None
        judge = self._judge()
        run = self._flow(row, judge)
        self._settle(judge)
        return run

    def read_task_runs(self, flow_run_id: str | None = None, limit: int | None = None) -> list[TaskRun]:
        sql = f"SELECT {self._TASK_COLS} FROM task_runs"
        args: list[Any] = []
        if flow_run_id is not None:
            sql += " WHERE flow_run_id = ?"
            args.append(flow_run_id)
        sql += " ORDER BY created, seq"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        judge = self._judge()
        runs = [self._task(r, judge) for r in self._conn().execute(sql, args).fetchall()]
        self._settle(judge)
        return runs

    def read_task_run(self, task_run_id: str) -> TaskRun | None:
        row = self._conn().execute(f"SELECT {self._TASK_COLS} FROM task_runs WHERE id = ?",
                                   (task_run_id,)).fetchone()
        if row is None:
            return None
        judge = self._judge()
        run = self._task(row, judge)
        self._settle(judge)
        return run

    def read_states(self, run_id: str) -> list[State]:
        rows = self._conn().execute(
            "SELECT type, name, message, ts, details FROM states WHERE run_id = ? ORDER BY seq",
            (run_id,)).fetchall()
        states = [_history_state(*state) for state in rows]
        if not states or liveness.may_be_running(states[-1]):
            crashed = self._crashed_now(run_id)
            if crashed is not None:
                states.append(crashed)  # its process is gone: the history ends here
        return states

    def _crashed_now(self, run_id: str) -> State | None:
        """The Crashed state run ``run_id`` is in because its process is gone, if it is."""
        conn = self._conn()
        for table in ("flow_runs", "task_runs"):
            row = conn.execute(f"SELECT state_type, state_name, host, pid, pid_start, "
                               f"coalesce({liveness.last_state_sql(table)}, start_ts, created) "
                               f"FROM {table} WHERE id = ?", (run_id,)).fetchone()
            if row is not None:
                judge = self._judge()
                crashed = judge.crashed(self._state(row[0], row[1], None, row[-1]), *row[2:])
                self._settle(judge)
                return crashed
        return None

    def read_logs(self, flow_run_id: str | None = None, task_run_id: str | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        where, args = [], []
        if flow_run_id is not None:
            where.append("flow_run_id = ?")
            args.append(flow_run_id)
        if task_run_id is not None:
            where.append("task_run_id = ?")
            args.append(task_run_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        conn = self._conn()
        rows = conn.execute(
            f"SELECT flow_run_id, task_run_id, ts, level, logger, message FROM logs {clause} "
            f"ORDER BY seq LIMIT ?", (*args, int(limit))).fetchall()
        keys = ("flow_run_id", "task_run_id", "ts", "level", "logger", "message")
        recorded = [dict(zip(keys, r)) for r in rows]
        derived: list[dict[str, Any]] = []
        for marked in self._marked_flow_runs(conn, flow_run_id, task_run_id):
            derived.extend(task_lines(marked, self._task_line_facts(conn, marked, task_run_id), task_run_id))
        return merge_lines(recorded, derived, int(limit))

    @staticmethod
    def _marked_flow_runs(conn: sqlite3.Connection, flow_run_id: str | None,
                          task_run_id: str | None) -> list[str]:
        """The flow runs (among those asked for) whose task runs' routine lines were
        logged: they have the marker row (see ``headwater.task_lines``)."""
        if task_run_id is not None:
            row = conn.execute("SELECT flow_run_id FROM task_runs WHERE id = ?", (task_run_id,)).fetchone()
            if row is None or row[0] is None or (flow_run_id is not None and row[0] != flow_run_id):
                return []
            flow_run_id = row[0]
        if flow_run_id is not None:
            found = conn.execute("SELECT 1 FROM logs WHERE flow_run_id = ? AND message IS NULL AND logger = ? "
                                 "AND task_run_id IS NULL LIMIT 1", (flow_run_id, LINES_LOGGER)).fetchone()
            return [flow_run_id] if found else []
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT flow_run_id FROM logs WHERE message IS NULL AND logger = ? AND task_run_id IS NULL "
            "AND flow_run_id IS NOT NULL", (LINES_LOGGER,))]

    def _task_line_facts(self, conn: sqlite3.Connection, flow_run_id: str,
                         task_run_id: str | None) -> list[tuple[Any, ...]]:
        """``(id, name, task_name, created, state, end_ts)`` of a flow run's task runs."""
        sql = ("SELECT id, name, task_name, created, state_type, state_name, state_message, start_ts, end_ts "
               "FROM task_runs WHERE flow_run_id = ?")
        args: list[Any] = [flow_run_id]
        if task_run_id is not None:
            sql += " AND id = ?"
            args.append(task_run_id)
        # A task run a task started on a worker is recorded here after it ran: its start
        # time (the worker's) is then earlier than its row's creation.
        return [(rid, name, task_name, min(created or 0.0, start) if start else (created or 0.0),
                 self._state(st, sn, sm, end or created), end)
                for rid, name, task_name, created, st, sn, sm, start, end
                in conn.execute(sql + " ORDER BY created, seq", args)]


def _history_state(type_: str, name: str, message: str | None, ts: float, details: str | None) -> State:
    """A row of the ``states`` table as a State."""
    return State(StateType(type_), name, message, None,
                 StateDetails.from_dict(json.loads(details)) if details else None, ts=ts)


def _flow_run_filter(flow_name: str | None, state: str | None,
                     parent_flow_run_id: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments for the flow run listing filters (text looked up
    as it was stored: ``safe_text``)."""
    where, args = [], []
    if flow_name is not None:
        where.append("flow_name = ?")
        args.append(safe_text(flow_name))
    if state is not None:  # a state type (COMPLETED) or a state name (Cached)
        where.append("(state_type = ? OR lower(state_name) = lower(?))")
        args += [safe_text(state.upper()), safe_text(state)]
    if parent_flow_run_id is not None:
        where.append("parent_flow_run_id = ?")
        args.append(safe_text(parent_flow_run_id))
    return (f"WHERE {' AND '.join(where)}" if where else ""), args
