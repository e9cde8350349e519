"""The dashboard's read model: what each page shows, as plain JSON-ready dictionaries.

The JSON API returns these dictionaries as they are and the HTML pages render them, so
the two always agree. Everything here only reads the run store.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from typing import Any

from headwater.reuse import Attempt, attempts_of
from headwater.states import State, StateType
from headwater.stores import CacheIndex, RunStore, has_part

#: Run ids (uuid4 text, or the first characters of one) and run names in URLs.
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: A state filter: a state type (``FAILED``) or a state name (``AwaitingRetry``).
STATE_FILTER = re.compile(r"^[A-Za-z]{1,32}$")
MAX_NAME = 200
MAX_PAGE = 1_000_000
PER_PAGE_DEFAULT = 25
PER_PAGE_MAX = 200
#: Task runs drawn in one flow run's timeline; more are listed in the API only.
TIMELINE_LIMIT = 500
LOG_LIMIT = 2000


class BadRequest(ValueError):
    """A URL part or query value that is not what the dashboard expects (HTTP 400)."""


class NotFound(LookupError):
    """Nothing in the run store under that id (HTTP 404)."""


# -- validation ----------------------------------------------------------------------------


def check_run_id(value: str, what: str = "flow run id") -> str:
    """Return ``value`` when it can be a run id or name, else raise ``BadRequest``."""
    if not RUN_ID.match(value):
        raise BadRequest(f"{what} {value[:120]!r} is not valid: expected letters, digits, '-', '_' "
                         f"or '.', at most 100 characters")
    return value


def check_flow_name(value: str | None) -> str | None:
    """Return a flow name filter, or raise ``BadRequest`` for control characters or length."""
    if value is None or value == "":
        return None
    if len(value) > MAX_NAME or not value.isprintable():
        raise BadRequest(f"flow name {value[:120]!r} is not valid: expected printable text of at "
                         f"most {MAX_NAME} characters")
    return value


def check_state(value: str | None) -> str | None:
    """Return a state filter (type or name), or raise ``BadRequest``."""
    if value is None or value == "":
        return None
    if not STATE_FILTER.match(value):
        raise BadRequest(f"state {value[:120]!r} is not valid: expected a state type such as "
                         f"{', '.join(t.value for t in StateType)} or a state name such as Cached")
    return value


def check_int(value: str | None, what: str, default: int, maximum: int) -> int:
    """Parse a positive integer query value within ``1..maximum``."""
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise BadRequest(f"{what} {value[:40]!r} is not valid: expected a whole number from 1 to {maximum}")
    return int(value)


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


def attempt_summary(attempt: Attempt, reused: int) -> dict[str, Any]:
    """One attempt of a flow run, its task runs counted."""
    return {"number": attempt.number, "started": iso(attempt.started), "ended": iso(attempt.ended),
            "started_ts": attempt.started, "ended_ts": attempt.ended, "state": state_dict(attempt.state),
            "task_runs": len(attempt.task_runs), "reused": reused}


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


def flow_runs(store: RunStore, flow: str | None = None, state: str | None = None, page: int = 1,
              per_page: int = PER_PAGE_DEFAULT) -> dict[str, Any]:
    """One page of flow runs, newest first, filtered by flow name and state."""
    total = store.count_flow_runs(flow_name=flow, state=state)
    runs = store.read_flow_runs(limit=per_page, offset=(page - 1) * per_page, flow_name=flow, state=state)
    return {"flow_runs": [flow_run_summary(r) for r in runs], "total": total, "page": page,
            "per_page": per_page, "pages": max(1, math.ceil(total / per_page)),
            "filters": {"flow": flow, "state": state}}


def flow_run(store: RunStore, run_id: str) -> dict[str, Any]:
    """A flow run with its state history, task runs (with theirs), subflow runs and logs."""
    run = store.read_flow_run(check_run_id(run_id))
    if run is None:
        raise NotFound(f"no flow run with id or name {run_id!r}")
    out = flow_run_summary(run)
    flow_states = store.read_states(run.id)
    out["states"] = [state_dict(s) for s in flow_states]
    tasks = store.read_task_runs(flow_run_id=run.id)
    histories = store.read_task_run_states(run.id)
    out["task_runs"] = [task_run_summary(t, histories.get(t.id, [])) for t in tasks]
    attempts = attempts_of(flow_states, tasks)
    number = {t.id: attempt.number for attempt in attempts for t in attempt.task_runs}
    for summary in out["task_runs"]:
        summary["attempt"] = number.get(summary["id"])
    # Counted from the recorded link to the earlier run, the same fact the task run list shows.
    reusing = {t["id"] for t in out["task_runs"] if t["reused_from"]}
    out["attempts"] = [attempt_summary(a, sum(1 for t in a.task_runs if t.id in reusing)) for a in attempts]
    out["subflow_runs"] = [flow_run_summary(c)
                           for c in store.read_flow_runs(limit=TIMELINE_LIMIT, parent_flow_run_id=run.id)]
    out["logs"] = logs(store, flow_run_id=run.id)
    out["task_runs_live"] = sum(1 for t in out["task_runs"] if t["live"])
    out["now"] = time.time()
    return out


def task_run(store: RunStore, task_run_id: str) -> dict[str, Any]:
    """A task run with its state history (messages included), its flow run and its logs."""
    run = store.read_task_run(check_run_id(task_run_id, "task run id"))
    if run is None:
        raise NotFound(f"no task run with id {task_run_id!r}")
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
    out["logs"] = logs(store, task_run_id=run.id)
    return out


def logs(store: RunStore, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[dict[str, Any]]:
    """Recorded log lines of a flow run (its task runs' included) or of one task run."""
    rows = store.read_logs(flow_run_id=flow_run_id, task_run_id=task_run_id, limit=LOG_LIMIT)
    return [dict(row, time=iso(row.get("ts"))) for row in rows]


def cache_entries(store: RunStore) -> dict[str, Any]:
    """The cache index: key, task, the task run that wrote it, location, expiry, size
    (none for a store without a cache index)."""
    now = time.time()
    found = store.read_cache_entries() if has_part(store, CacheIndex) else []
    entries = sorted(found, key=lambda e: e.created, reverse=True)
    return {"cache_entries": [{
        "key": e.key, "task_name": e.task_name, "task_run_id": e.task_run_id, "location": e.location,
        "serializer": e.serializer, "created": iso(e.created), "expires": iso(e.expiration),
        "expired": e.is_expired(now), "size": e.size} for e in entries]}
