"""The two routine lines of every task run, kept in the run store as facts and worded
when they are read.

"Created task run 'load-1a2b3c4d-0' for task 'load'" and "Finished in state Completed()"
are two of every task run's log lines, and say nothing its record does not hold already:
its name and task, when it was created, its final state and when it ended. Writing them
as log rows was most of what a task run cost the run store at the default INFO level.
So the ``run_logs`` plugin files one *marker* row per flow run instead ("this flow run's
task runs logged their routine lines"), and a store's ``read_logs`` words the lines from
the task runs' records with :func:`task_lines` and merges them with the recorded lines by
time (:func:`merge_lines`). A flow run without the marker (the lines were not logged: a
WARNING level, or ``run_logs`` disabled) gets none.

A run store that keeps log rows itself (docs/plugins.md, "Writing a run store") stores
the marker like any row and calls these two functions in its ``read_logs``.
"""

from __future__ import annotations

import heapq
from typing import Any, Iterable

from .states import State

#: The logger the routine lines come from (the engine's per-task lines).
LOGGER = "headwater.task_runs"
CREATED = "Created task run %r for task %r"
FINISHED = "Finished in state %s"


def marker_row(flow_run_id: str, ts: float) -> tuple[Any, ...]:
    """The log row (as ``record_logs`` takes it) that says: the task runs of
    ``flow_run_id`` logged their routine lines, from ``ts`` on."""
    return (flow_run_id, None, ts, "INFO", LOGGER, None)


def is_marker(line: dict[str, Any]) -> bool:
    """Whether a log line read back from a store is a :func:`marker_row`."""
    return line["message"] is None and line["logger"] == LOGGER and line["task_run_id"] is None


def task_lines(flow_run_id: str, runs: Iterable[tuple[str, str, str, float, State | None, float | None]],
               task_run_id: str | None = None) -> list[dict[str, Any]]:
    """The routine lines of a flow run's task runs, as ``read_logs`` returns lines.

    ``runs`` holds ``(task_run_id, name, task_name, created, state, end_ts)`` per task run;
    a run whose ``state`` is not final has no "Finished" line yet. "Created" lines are
    filed under the flow run only (as the console labels them, with the flow run);
    "Finished" lines under their task run. With ``task_run_id``, only that run's lines
    filed under it.
    """
    lines = []
    for run_id, name, task_name, created, state, end_ts in runs:
        if task_run_id is None:
            lines.append({"flow_run_id": flow_run_id, "task_run_id": None, "ts": created, "level": "INFO",
                          "logger": LOGGER, "message": CREATED % (name, task_name)})
        if state is not None and state.is_final() and (task_run_id is None or run_id == task_run_id):
            lines.append({"flow_run_id": flow_run_id, "task_run_id": run_id,
                          "ts": end_ts if end_ts is not None else state.ts, "level": "INFO",
                          "logger": LOGGER, "message": FINISHED % (state,)})
    lines.sort(key=_ts)
    return lines


def merge_lines(recorded: list[dict[str, Any]], derived: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The recorded lines (in their order, markers left out) and the worded ones (of one
    flow run or several, in any order), merged by time; the first ``limit``. A worded line goes first on a tie: a "Created" line's time
    is taken before anything the new run logs."""
    if not derived:
        return [line for line in recorded if not is_marker(line)][:limit]
    merged = heapq.merge(sorted(derived, key=_ts), (line for line in recorded if not is_marker(line)), key=_ts)
    out = []
    for line in merged:
        if len(out) >= limit:
            break
        out.append(line)
    return out


def _ts(line: dict[str, Any]) -> float:
    return line["ts"] or 0.0
