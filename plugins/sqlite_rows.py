"""The plain tuples of the SQLite run store: queue entries, and the rows written from them.

The thread that records a state turns it into a queue entry at once: a tuple of plain
values (ids, text, numbers), not the run and state objects. So the queue keeps no run
alive (the garbage collector stops tracking such tuples after one pass, and a long flow
keeps no growing heap for it to walk), and the writer, which shares the GIL with the
flow's threads, only has to bind values. Entries stay plain tuples for that reason, not
named tuples or dataclasses: this module names each position instead, and builds every
entry, so the layouts are written down in one place.

Entry kinds (the first item of every entry):

* ``TASK_HEADER``: what a task run's row holds from its creation on (``HEADER_*``).
  A longer one carries the run's first state after ``HEADER_LEN`` items (a
  ``TASK_STATE`` entry), so most task runs cost three entries, not four.
* ``TASK_STATE``: one state of a task run and the run's changing columns as they were
  (``STATE_*``).
* ``FLOW``: a flow run's row as it was (``FLOW_RUN_COLUMNS``), when it was first
  queued, and the row of its new state, if any (``FLOW_*``).
* ``FLOW_INFO``: what a flow says about itself, the ``flows`` table's row
  (``FLOW_INFO_COLUMNS``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from headwater.states import StateType
from headwater.stores import FlowInfo

from .sqlite_values import details_json, parameters_json, tags_json

TASK_HEADER, TASK_STATE, FLOW, FLOW_INFO = range(4)

# -- TASK_HEADER: (TASK_HEADER, id, flow_run_id, name, task_name, task_key, parameters,
#    tags, upstream, created) ----------------------------------------------------------------
HEADER_RUN_ID = 1
HEADER_FLOW_RUN_ID = 2
HEADER_PARAMETERS = 6
HEADER_TAGS = 7
HEADER_UPSTREAM = 8
HEADER_CREATED = 9
#: Items in a TASK_HEADER entry; a longer one carries the run's first state after them.
HEADER_LEN = 10

# -- TASK_STATE: (TASK_STATE, run_id, "task", type, name, message, ts, details, cache_key,
#    result_location, start_ts, end_ts, run_count, inputs_hash, parameters) --------------------
STATE_RUN_ID = 1
STATE_TYPE = 3
STATE_NAME = 4
STATE_MESSAGE = 5
STATE_TS = 6
#: entry[STATE_ROW] is the ``states`` table's row (STATE_COLUMNS).
STATE_ROW = slice(1, 8)
#: entry[STATE_RUN_FIELDS] is the run's changing columns: cache_key, result_location,
#: start_ts, end_ts, run_count, inputs_hash.
STATE_RUN_FIELDS = slice(8, 14)
#: The run's parameters with its futures' results, on the Running state of a run with
#: upstream runs (its parameters change once, just before it starts); else None.
STATE_PARAMETERS = 14

# -- FLOW: (FLOW, row, created, state_row) ---------------------------------------------------
FLOW_ROW = 1
FLOW_CREATED = 2
FLOW_STATE_ROW = 3

# -- FLOW_INFO: (FLOW_INFO, name, description, version, tags, updated) -----------------------
#: entry[FLOW_INFO_ROW] is the ``flows`` table's row (FLOW_INFO_COLUMNS).
FLOW_INFO_ROW = slice(1, 6)

# -- the rows, in the order of their columns --------------------------------------------------
#: A FLOW entry's row; the writer adds the process's host, pid, pid_start and ``created``.
FLOW_RUN_COLUMNS = ("id", "name", "flow_name", "flow_version", "parent_flow_run_id", "parent_task_run_id",
                    "parameters", "tags", "state_type", "state_name", "state_message", "start_ts", "end_ts",
                    "run_count", "entry_point", "inputs_hash", "parameters_location", "result_location")
FLOW_ROW_ID = 0
FLOW_ROW_NAME = 1
FLOW_ROW_STATE_TYPE = 8

#: A task run's row as the batch writer builds it; the writer's host, pid and pid_start
#: follow as constants of its statement.
TASK_RUN_COLUMNS = ("id", "flow_run_id", "name", "task_name", "task_key", "parameters", "tags", "upstream",
                    "cache_key", "result_location", "start_ts", "end_ts", "run_count", "inputs_hash", "state_type",
                    "state_name", "state_message", "created", "seq")
#: A ``states`` row: flow runs' and task runs' alike.
STATE_COLUMNS = ("run_id", "run_kind", "type", "name", "message", "ts", "details")
#: A ``logs`` row, as ``record_logs`` receives it (the run_logs plugin builds them).
LOG_COLUMNS = ("flow_run_id", "task_run_id", "ts", "level", "logger", "message")
#: A ``flows`` row: a FLOW_INFO entry without its kind.
FLOW_INFO_COLUMNS = ("name", "description", "version", "tags", "updated")
#: The columns every run row names its process by (crash detection).
PROCESS_COLUMNS = ("host", "pid", "pid_start")


def task_header(run: Any) -> tuple[Any, ...]:
    """What a task run's row holds from its creation on (kind TASK_HEADER)."""
    return (TASK_HEADER, run.id, run.flow_run_id, run.name, run.task_name, run.task_key,
            parameters_json(run.parameters), tags_json(run.tags),
            json.dumps(list(run.upstream_ids)) if run.upstream_ids else "[]", time.time())


def empty_header(run_id: str, created: float) -> tuple[Any, ...]:
    """The header of a task run created in an earlier batch: its row exists, so only the
    changing columns are written (the columns given here are never used)."""
    return (TASK_HEADER, run_id, None, "", "", "", None, "[]", "[]", created)


def task_state(run: Any, state: Any) -> tuple[Any, ...]:
    """One state of a task run and the run's changing columns as they are now (TASK_STATE)."""
    details = state.details_if_made
    # ``_value_`` is the enum's plain attribute; ``.value`` is a slower descriptor.
    state_type = state.type
    # A run's parameters change once: futures passed in become their results just before
    # it starts running, so a Running state of a run with upstream runs carries them.
    parameters = (parameters_json(run.parameters) if run.upstream_ids and state_type is StateType.RUNNING
                  else None)
    return (TASK_STATE, run.id, "task", state_type._value_, state.name, state.message, state.ts,
            details_json(details) if details is not None else None,
            run.cache_key, run.result_location, run.start_ts, run.end_ts, run.run_count, run.inputs_hash,
            parameters)


def flow_entry(run: Any, state: Any) -> tuple[Any, ...]:
    """A flow run's row as it is now, and ``state`` (if any) for its history (FLOW)."""
    current = run.state
    row = (run.id, run.name, run.flow_name, run.flow_version, run.parent_flow_run_id, run.parent_task_run_id,
           parameters_json(run.parameters), tags_json(run.tags),
           current.type._value_ if current else None, current.name if current else None,
           current.message if current else None, run.start_ts, run.end_ts, run.run_count,
           run.entry_point, run.inputs_hash, run.parameters_location, run.result_location)
    state_row = None
    if state is not None:
        made = state.details_if_made
        details = details_json(made) if made is not None else None
        state_row = (run.id, "flow", state.type._value_, state.name, state.message, state.ts, details)
    return (FLOW, row, state.ts if state is not None else time.time(), state_row)


def flow_info_entry(info: FlowInfo) -> tuple[Any, ...]:
    """What a flow says about itself (FLOW_INFO)."""
    return (FLOW_INFO, info.name, info.description, info.version, json.dumps(info.tags), info.updated)


def describe_entry(entry: tuple[Any, ...]) -> str:
    """A queue entry as a user knows it ("task run <id>", "flow run 'name' (<id>)", "flow
    'name'"), for the report of one that could not be written."""
    kind = entry[0]
    if kind in (TASK_HEADER, TASK_STATE):
        return f"task run {entry[HEADER_RUN_ID]}"  # the same position in both kinds
    if kind == FLOW:
        row = entry[FLOW_ROW]
        return f"flow run {row[FLOW_ROW_NAME]!r} ({row[FLOW_ROW_ID]})"
    return f"flow {entry[1]!r}"
