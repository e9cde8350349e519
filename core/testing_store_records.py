"""Runs recorded as the engine records them, for the run-store conformance suite
(``headwater.testing_stores``): a flow run or task run moved through its states with its
start and end times set as the engine sets them, and the texts every store must take."""

from __future__ import annotations

import time
from typing import Any

from .runs import FlowRun, TaskRun
from .states import Completed, Failed, Pending, Running, State, StateType
from .stores import RunStore, RunWriter
from .task_lines import marker_row

__all__ = ["AWKWARD_TEXTS", "at", "logged_flow_run", "move", "new_flow_run", "new_task_run", "surrogates_escaped"]

#: Texts a store must take anywhere text goes, and give back (see ``text_read_back``).
AWKWARD_TEXTS = {
    "surrogate": "report-\udcff.csv",  # os.listdir's name for the bytes b"report-\xff.csv"
    "surrogate pair": "split \ud83c\udf0a pair",  # two lone halves, not one character
    "nul": "nul\x00inside",
    "emoji": "wave \U0001f30a, accents \u00e9\u00e8, CJK \u6c34",
    "quotes": "it's \"quoted\"; -- DROP TABLE runs; %_\\",
}


def move(store: RunWriter, run: FlowRun | TaskRun, state: State) -> State:
    """Give ``run`` the ``state`` and record it, as the engine does: the run's start time
    at its first Running state, its end time at a final one."""
    if state.type is StateType.RUNNING and run.start_ts is None:
        run.start_ts = state.ts
    if state.is_final():
        run.end_ts = state.ts
    run.state = state
    store.record_state(run, state)
    return state


def at(state: State, ts: float) -> State:
    """``state``, dated ``ts``."""
    state.ts = ts
    return state


def new_flow_run(store: RunWriter, run_id: str, name: str, flow_name: str = "etl", *, started: float,
                 parent: FlowRun | None = None, tags: tuple[str, ...] = (), final: State | None = None,
                 parameters: dict[str, Any] | None = None) -> FlowRun:
    """A flow run recorded as the engine records one: created, Pending, Running at
    ``started``, then ``final`` (if given) a second later."""
    run = FlowRun(run_id, flow_name, name, parameters or {}, frozenset(tags),
                  parent_flow_run_id=parent.id if parent else None)
    run.run_count = 1
    store.create_flow_run(run)
    move(store, run, at(Pending(), started - 0.5))
    move(store, run, at(Running(), started))
    if final is not None:
        move(store, run, at(final, started + 1))
    return run


def new_task_run(store: RunWriter, flow_run: FlowRun, run_id: str, name: str, task_name: str = "load", *,
                 final: State | None = None, run_count: int = 1, parameters: dict[str, Any] | None = None,
                 result_location: str | None = None) -> TaskRun:
    """A task run of ``flow_run`` recorded as the engine records one: created, Pending,
    Running, then ``final`` (if given)."""
    run = TaskRun(run_id, task_name, f"{task_name}-key", name, parameters or {}, frozenset(), flow_run.id)
    store.create_task_run(run)
    move(store, run, Pending())
    run.run_count = run_count
    move(store, run, Running())
    if final is not None:
        run.result_location = result_location
        move(store, run, final)
    return run


def surrogates_escaped(text: str) -> str:
    """``text`` with each lone surrogate as its backslash escape (``"\\udcff"``): how a
    store whose text must be UTF-8 (SQLite's, PostgreSQL's) keeps it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def logged_flow_run(store: RunStore) -> tuple[FlowRun, list[TaskRun]]:
    """A flow run with four task runs, the marker row of their routine lines, and
    lines of every level (and one of a custom level)."""
    now = time.time()
    run = new_flow_run(store, "conformance-logged", "logged", started=now - 100)
    store.record_logs([marker_row(run.id, now - 100)])
    tasks = []
    for i in range(4):
        task_run = new_task_run(store, run, f"conformance-lt{i}", f"load-{i}", "load" if i < 3 else "save")
        tasks.append(task_run)
        level = ("DEBUG", "INFO", "WARNING", "ERROR")[i]
        store.record_logs([(run.id, task_run.id, time.time(), level, "headwater.task_runs", f"{level} from {i}")])
        move(store, task_run, Failed(message="bad") if i == 3 else Completed())
        time.sleep(0.002)
    store.record_logs([(run.id, None, time.time(), "NOTICE", "custom", "a level of its own"),
                       (run.id, None, time.time(), "CRITICAL", "headwater.flow_runs", "flow says bye")])
    move(store, run, Failed(message="save failed"))
    store.flush()
    return run, tasks
