"""The dashboard's read model: what each page shows, as plain JSON-ready dictionaries.

The JSON API returns these dictionaries as they are and the HTML pages render them, so
the two always agree. Everything here only reads the run store, and a flow run is read
a page at a time (the store's paged reads): its task runs counted by state, one page of
task runs and one of log lines, so a 20,000-task run answers as fast and as small as a
three-task one.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from headwater.reuse import Attempt, attempts_of
from headwater.states import State
from headwater.stores import CacheIndex, FlowRunFilter, Page, RunStore, StateCounts, has_part, level_at_least

from .queries import NotFound, check_run_id
from .short_ids import short_suffixes

PER_PAGE_DEFAULT = 25
PER_PAGE_MAX = 200
#: Task runs on one page of a flow run (and the most one page may ask for).
TASK_PAGE = 50
TASK_PAGE_MAX = 500
#: Log lines on one page of a flow run or task run.
LOG_PAGE = 100
LOG_PAGE_MAX = 1000
#: Subflow runs listed on their parent's page; the runs list has them all.
SUBFLOW_PAGE = 50
#: The dependency graph is drawn for flow runs with at most this many task runs.
GRAPH_LIMIT = 500


# -- conversions ---------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC timestamp (``None`` stays ``None``)."""
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat()


def state_dict(state: State | None) -> dict[str, Any] | None:
    if state is None:
        return None
    out: dict[str, Any] = {"type": state.type.value, "name": state.name, "message": state.message,
                           "timestamp": iso(state.ts), "ts": state.ts}
    details = state.details_if_made.to_dict() if state.details_if_made is not None else {}
    if details.get("scheduled_time"):
        out["scheduled_time"] = details["scheduled_time"]
    return out


def _live(state: State | None) -> bool:
    """Whether the run may still change: not final, and not NotReady (a task run whose
    upstream failed has ended, though its type is PENDING). A run whose process is gone
    comes from the store as Crashed, so it is not live either."""
    if state is None:
        return True
    return not state.has_ended()


def flow_run_summary(run: Any) -> dict[str, Any]:
    """The fields of a flow run every listing shows."""
    return {
        "id": run.id, "name": run.name, "flow_name": run.flow_name, "flow_version": run.flow_version,
        "state": state_dict(run.state), "live": _live(run.state), "parameters": run.parameters,
        "tags": sorted(run.tags), "start_time": iso(run.start_ts), "end_time": iso(run.end_ts),
        "start_ts": run.start_ts, "end_ts": run.end_ts, "run_count": run.run_count,
        "parent_flow_run_id": run.parent_flow_run_id, "parent_task_run_id": run.parent_task_run_id,
    }


def task_run_summary(run: Any, states: list[State] | None = None) -> dict[str, Any]:
    """A task run's fields; with ``states``, its history and retry and cache facts too."""
    out: dict[str, Any] = {
        "id": run.id, "name": run.name, "task_name": run.task_name, "flow_run_id": run.flow_run_id,
        "state": state_dict(run.state), "live": _live(run.state), "parameters": run.parameters,
        "tags": sorted(run.tags), "cache_key": run.cache_key, "result_location": run.result_location,
        "start_time": iso(run.start_ts), "end_time": iso(run.end_ts), "start_ts": run.start_ts,
        "end_ts": run.end_ts, "run_count": run.run_count, "upstream_ids": list(run.upstream_ids),
        "retries": max(run.run_count - 1, 0),
        "cache_hit": run.state is not None and run.state.name == "Cached",
    }
    if states is not None:
        out["states"] = [state_dict(s) for s in states]
        # Attempts that were retried: each AwaitingRetry ends one failed attempt.
        out["retries"] = max(out["retries"], sum(1 for s in states if s.name == "AwaitingRetry"))
        out["reused_from"] = reused_from(states)
        # A reused result was read from an earlier attempt, not found in the cache.
        out["cache_hit"] = out["cache_hit"] and out["reused_from"] is None
    return out


def reused_from(states: list[State]) -> str | None:
    """The earlier task run whose result this one reused (a retried flow run), if any."""
    last = states[-1] if states else None
    details = last.details_if_made if last is not None else None
    return details.reused_from if details is not None else None


def _attempt_of(flow_states: list[State], run: Any) -> int | None:
    return next((a.number for a in attempts_of(flow_states, [run]) if a.task_runs), None)


def attempt_summary(attempt: Attempt, reused: int, task_runs: int | None = None) -> dict[str, Any]:
    """One attempt of a flow run, its task runs counted (``task_runs``: the count, when
    the attempt was made without reading them)."""
    return {"number": attempt.number, "started": iso(attempt.started), "ended": iso(attempt.ended),
            "started_ts": attempt.started, "ended_ts": attempt.ended, "state": state_dict(attempt.state),
            "task_runs": len(attempt.task_runs) if task_runs is None else task_runs, "reused": reused}


# -- pages ---------------------------------------------------------------------------------


def flows(store: RunStore) -> dict[str, Any]:
    """Every flow: description (markdown source), version, tags, last run, run counts."""
    out = []
    for summary in store.read_flows():
        last = summary.last_run
        out.append({
            "name": summary.name, "description": summary.description, "version": summary.version,
            "tags": summary.tags, "run_count": summary.run_count, "state_counts": summary.state_counts,
            "last_run": flow_run_summary(last) if last is not None else None,
        })
    return {"flows": out}


def flow_runs(store: RunStore, where: FlowRunFilter | None = None, page: int = 1,
              per_page: int = PER_PAGE_DEFAULT, filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """One page of flow runs, newest first, that ``where`` lets through; subflow runs
    name their parent. ``filters`` echoes the query as the page's form shows it."""
    found = store.search_flow_runs(where or FlowRunFilter(), offset=(page - 1) * per_page, limit=per_page)
    runs = [flow_run_summary(r) for r in found.items]
    parents = _names_of_flow_runs(store, {r["parent_flow_run_id"] for r in runs if r["parent_flow_run_id"]})
    suffixes = short_suffixes(r["id"] for r in runs)
    for r in runs:
        r["short_id"] = suffixes[r["id"]]
        r["parent"] = parents.get(r["parent_flow_run_id"]) if r["parent_flow_run_id"] else None
    return {"flow_runs": runs, "total": found.total, "page": page, "per_page": per_page,
            "pages": max(1, math.ceil(found.total / per_page)), "filters": filters or {}}


def _names_of_flow_runs(store: RunStore, ids: set[str]) -> dict[str, dict[str, str]]:
    """``{id: {"id", "name"}}`` of the flow runs still recorded among ``ids``."""
    out = {}
    for run_id in ids:
        run = store.read_flow_run(run_id)
        if run is not None:
            out[run_id] = {"id": run.id, "name": run.name}
    return out


def page_facts(page: Page[Any]) -> dict[str, Any]:
    """Where a page sits in its listing: ``total``, ``offset``, ``limit``."""
    return {"total": page.total, "offset": page.offset, "limit": page.limit}


def counts_dict(counts: StateCounts) -> dict[str, Any]:
    """Task runs counted by state, with how many have ended (``done``): what a running
    flow's progress shows."""
    done = sum(n for kind, n in counts.by_type.items() if kind in _FINAL_TYPE_NAMES)
    done += counts.by_name.get("NotReady", 0)  # ended without running: an upstream failed
    return {"total": counts.total, "done": done, "by_type": dict(counts.by_type), "by_name": dict(counts.by_name)}


_FINAL_TYPE_NAMES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def find_flow_run(store: RunStore, run_id: str) -> Any:
    """The flow run with this id or name, or ``NotFound``."""
    run = store.read_flow_run(check_run_id(run_id))
    if run is None:
        raise NotFound(f"no flow run with id or name {run_id!r}")
    return run


def flow_run(store: RunStore, run_id: str, tasks: dict[str, Any] | None = None,
             logs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A flow run with its state history, its task runs counted by state, its attempts,
    its first subflow runs, and one page of its task runs and of its log lines
    (``tasks``: ``offset``, ``limit``, ``state``; ``logs``: ``offset``, ``limit``,
    ``level``). Never every task run: a 20,000-task run answers as small as a 3-task one."""
    run = find_flow_run(store, run_id)
    out = flow_run_summary(run)
    flow_states = store.read_states(run.id)
    out["states"] = [state_dict(s) for s in flow_states]
    counts = store.count_task_run_states(run.id)
    out["task_run_counts"] = counts_dict(counts)
    out["attempts"] = _attempts(store, run, flow_states, counts.total)
    parent = _names_of_flow_runs(store, {run.parent_flow_run_id}) if run.parent_flow_run_id else {}
    out["parent"] = parent.get(run.parent_flow_run_id or "")
    subflows = store.search_flow_runs(FlowRunFilter(parent_flow_run_id=run.id), limit=SUBFLOW_PAGE)
    out["subflow_runs"] = [flow_run_summary(c) for c in subflows.items]
    out["subflow_runs_total"] = subflows.total
    page = task_run_page(store, run, flow_states=flow_states, **(tasks or {}))
    out["task_runs"] = page.pop("task_runs")
    out["task_runs_page"] = page
    lines = log_page(store, run.id, **(logs or {}))
    out["logs"] = lines.pop("logs")
    out["logs_page"] = lines
    out["task_runs_live"] = counts.total - out["task_run_counts"]["done"]
    out["now"] = time.time()
    return out


def _attempts(store: RunStore, run: Any, flow_states: list[State], task_count: int) -> list[dict[str, Any]]:
    """The attempts of a flow run with their task runs counted. Only a run retried at
    least once reads its task runs for that (to tell the attempts' runs apart)."""
    attempts = attempts_of(flow_states, [])
    if len(attempts) < 2:
        return [attempt_summary(a, 0, task_count) for a in attempts]
    attempts = attempts_of(flow_states, store.read_task_runs(flow_run_id=run.id))
    return [attempt_summary(a, len(a.reused)) for a in attempts]


def task_run_page(store: RunStore, run: Any, offset: int = 0, limit: int = TASK_PAGE, state: str | None = None,
                  flow_states: list[State] | None = None) -> dict[str, Any]:
    """One page of a flow run's task runs in creation order, each with its state
    history, retries, cache hit, attempt and the run it reused; and the page's place."""
    page = store.read_task_run_page(run.id, offset=offset, limit=limit, state=state)
    if flow_states is None:
        flow_states = store.read_states(run.id)
    number: dict[str, int | None] = {t.id: a.number for a in attempts_of(flow_states, page.items) for t in a.task_runs}
    summaries = []
    for t in page.items:
        summary = task_run_summary(t, store.read_states(t.id))
        summary["attempt"] = number.get(t.id)
        summaries.append(summary)
    suffixes = short_suffixes(t.id for t in page.items)
    for summary in summaries:
        summary["short_id"] = suffixes[summary["id"]]
        earlier = summary["reused_from"]
        if earlier and earlier not in number:  # a run of an earlier attempt, on another page
            found = store.read_task_run(earlier)
            number[earlier] = _attempt_of(flow_states, found) if found is not None else None
        summary["reused_from_attempt"] = number.get(earlier) if earlier else None
    return {"task_runs": summaries, **page_facts(page), "state": state}


def log_page(store: RunStore, flow_run_id: str, offset: int = 0, limit: int = LOG_PAGE, level: str | None = None,
             task: str | None = None) -> dict[str, Any]:
    """One page of a flow run's log lines (its task runs' included; ``task``: one task
    run's only), each with the name of the task run it came from; and the page's place."""
    page = store.read_log_page(flow_run_id, offset=offset, limit=limit, level=level, task=task)
    names: dict[str, str] = {}
    for task_run_id in {line.get("task_run_id") for line in page.items} - {None}:
        found = store.read_task_run(task_run_id)
        if found is not None:
            names[task_run_id] = found.name
    lines = [dict(row, time=iso(row.get("ts")), task_run_name=names.get(row.get("task_run_id") or ""))
             for row in page.items]
    return {"logs": lines, **page_facts(page), "level": level}


def task_run(store: RunStore, task_run_id: str, logs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A task run with its state history (messages included), its flow run and one page
    of its log lines (``logs``: ``offset``, ``limit``, ``level``)."""
    run = find_task_run(store, task_run_id)
    out = task_run_summary(run, store.read_states(run.id))
    parent = store.read_flow_run(run.flow_run_id) if run.flow_run_id else None
    out["flow_run"] = flow_run_summary(parent) if parent is not None else None
    earlier = store.read_task_run(out["reused_from"]) if out["reused_from"] else None
    out["reused_from_run"] = None
    out["attempt"] = None
    if parent is not None:
        # Given the flow run's states, each run's attempt is told by when it began.
        flow_states = store.read_states(parent.id)
        out["attempt"] = _attempt_of(flow_states, run)
        if earlier is not None:
            out["reused_from_run"] = {"id": earlier.id, "name": earlier.name,
                                      "attempt": _attempt_of(flow_states, earlier)}
    lines = task_run_logs(store, run, **(logs or {}))
    out["logs"] = lines.pop("logs")
    out["logs_page"] = lines
    return out


def find_task_run(store: RunStore, task_run_id: str) -> Any:
    """The task run with this id, or ``NotFound``."""
    run = store.read_task_run(check_run_id(task_run_id, "task run id"))
    if run is None:
        raise NotFound(f"no task run with id {task_run_id!r}")
    return run


def task_run_logs(store: RunStore, run: Any, offset: int = 0, limit: int = LOG_PAGE,
                  level: str | None = None) -> dict[str, Any]:
    """One page of a task run's log lines and the page's place."""
    if run.flow_run_id:
        return log_page(store, run.flow_run_id, offset, limit, level, task=run.id)
    # A task run outside any flow run: its lines are few, read them all and slice.
    rows = [r for r in store.read_logs(task_run_id=run.id, limit=2**62)
            if level is None or level_at_least(r.get("level"), level)]
    lines = [dict(row, time=iso(row.get("ts")), task_run_name=run.name) for row in rows[offset:offset + limit]]
    return {"logs": lines, "total": len(rows), "offset": offset, "limit": limit, "level": level}


def graph(store: RunStore, run_id: str, total: int | None = None) -> dict[str, Any]:
    """A flow run's task runs as a dependency graph: ``nodes`` (id, name, task name,
    state) and ``edges`` (``[upstream id, downstream id]``, from the recorded
    ``upstream_ids``). Only for runs of at most ``GRAPH_LIMIT`` task runs (``drawn``
    says whether it is one); a bigger one answers its ``total`` and no nodes. ``total``:
    the run's task runs, when the caller has counted them already."""
    run = find_flow_run(store, run_id)
    if total is None:
        total = store.count_task_run_states(run.id).total
    out: dict[str, Any] = {"flow_run_id": run.id, "total": total, "limit": GRAPH_LIMIT,
                           "drawn": total <= GRAPH_LIMIT, "nodes": [], "edges": []}
    if total > GRAPH_LIMIT:
        return out
    tasks = store.read_task_run_page(run.id, limit=GRAPH_LIMIT).items
    known = {t.id for t in tasks}
    out["nodes"] = [{"id": t.id, "name": t.name, "task_name": t.task_name, "state": state_dict(t.state)}
                    for t in tasks]
    # An upstream run of another flow run (a parent's future passed in) is not drawn.
    out["edges"] = [[up, t.id] for t in tasks for up in dict.fromkeys(t.upstream_ids) if up in known]
    return out


def cache_entries(store: RunStore) -> dict[str, Any]:
    """The cache index: key, task, the task run that wrote it (its name, while it is
    recorded, and the shortest suffix of its id that tells it from the others listed),
    location, expiry, size (none for a store without a cache index)."""
    now = time.time()
    found = store.read_cache_entries() if has_part(store, CacheIndex) else []
    entries = sorted(found, key=lambda e: e.created, reverse=True)
    writers = {e.task_run_id for e in entries if e.task_run_id}
    suffixes = short_suffixes(writers)
    names = {}
    for task_run_id in writers:
        writer = store.read_task_run(task_run_id)
        names[task_run_id] = writer.name if writer is not None else None
    return {"cache_entries": [{
        "key": e.key, "task_name": e.task_name, "task_run_id": e.task_run_id,
        "task_run_name": names.get(e.task_run_id or ""), "task_run_short_id": suffixes.get(e.task_run_id or ""),
        "location": e.location, "serializer": e.serializer, "created": iso(e.created),
        "expires": iso(e.expiration), "expired": e.is_expired(now), "size": e.size} for e in entries]}
