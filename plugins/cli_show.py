"""``headwater runs show RUN``: one flow run as a timeline (its states, task runs,
subflow runs and log lines). Wired up by ``cli_commands``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any, Callable

from headwater.stores import RunReader, require_part

from .cli_format import (BAD_TYPES, LOG_LINES, counts_dict, current_session, duration_text, find_flow_run, iso,
                         level_name, parameters_text, run_dict, state_dict, state_line, state_name, state_text,
                         when)
from .cli_text import quoted, shown
from .colours import wants_colour


def entry_point_text(run: Any) -> str | None:
    """Where the run's flow is defined (``file:function``), as recorded for a retry."""
    if not getattr(run, "entry_point", None):
        return None
    try:
        data = json.loads(run.entry_point)
        return f"{data.get('file') or data['module']}:{data['qualname']}"
    except (ValueError, KeyError, TypeError):
        return None


#: ``read_logs`` limit meaning "every line" (the store interface takes a number).
_ALL = 2**62


def log_window(lines: list[Any], keep: int | None) -> tuple[list[Any], int, list[Any]]:
    """``(first lines, how many are left out, last lines)``: at most ``keep`` lines in
    all, half from the start and half from the end (where the run's outcome is)."""
    if keep is None or len(lines) <= keep:
        return lines, 0, []
    first = keep // 2
    last = keep - first
    return lines[:first], len(lines) - keep, lines[len(lines) - last:] if last else []


#: Task runs ``runs show`` lists one by one; a bigger run gets a state summary and its
#: failed and retried task runs (``--all``: every one).
TASK_ROWS = 50


def cmd_runs_show(args: argparse.Namespace) -> int:
    store = require_part(current_session().store, RunReader, "`headwater runs show`")
    args.logs_given = args.logs is not None
    args.logs = None if args.logs == "all" else (args.logs or LOG_LINES)
    run = find_flow_run(store, args.run)
    if run is None:
        return 1
    states = store.read_states(run.id)
    counts = store.count_task_run_states(run.id)
    # Oldest first, in the order the flow run started them.
    children = store.read_flow_runs(limit=_ALL, parent_flow_run_id=run.id)[::-1]
    parent = store.read_flow_run(run.parent_flow_run_id) if run.parent_flow_run_id else None
    from headwater.reuse import attempts_of  # only this command reads attempts

    retried = sum(1 for s in states if s.type.value == "RUNNING") > 1
    # Every task run is read only when they are all shown or a retry split them in attempts.
    every = args.json or args.all or counts.total <= TASK_ROWS or retried
    tasks = store.read_task_runs(flow_run_id=run.id) if every else []
    attempts = attempts_of(states, tasks)
    if args.json:
        histories = store.read_task_run_states(run.id)
        out = run_dict(run)
        out["parent_flow_run_name"] = parent.name if parent is not None else None
        out["entry_point"] = entry_point_text(run)
        out["attempts"] = [{"number": a.number, "started": iso(a.started), "ended": iso(a.ended),
                            "state": a.state.name if a.state is not None else None,
                            "task_runs": len(a.task_runs), "reused": len(a.reused)} for a in attempts]
        out["states"] = [state_dict(s) for s in states]
        out["task_run_counts"] = counts_dict(counts)
        out["task_runs"] = [dict(run_dict(t), states=[state_dict(s) for s in histories.get(t.id, [])])
                            for t in tasks]
        out["subflow_runs"] = [run_dict(c) for c in children]
        logs = store.read_logs(flow_run_id=run.id, limit=_ALL)
        if args.logs_given:
            head, hidden, tail = log_window(logs, args.logs)
            logs = head + tail
            out["logs_omitted"] = hidden
        out["logs"] = [dict(line, ts=iso(line["ts"])) for line in logs]
        print(json.dumps(out, indent=2))
        return 0
    colour = wants_colour(sys.stdout)
    print(f"Flow run {quoted(run.name)} of flow {quoted(run.flow_name)}  (id {shown(run.id)})")
    print(f"  state:      {state_line(run.state, colour)}" if run.state else "  state:      -")
    if run.parent_flow_run_id:
        named = f"{quoted(parent.name)} (id {shown(parent.id)})" if parent is not None else "(deleted)"
        print(f"  subflow of: flow run {named}")
    print(f"  parameters: {parameters_text(run.parameters)}")
    print(f"  started:    {when(run.start_ts)}   duration: {duration_text(run.start_ts, run.end_ts)}")
    if len(attempts) > 1:
        print("  attempts:   " + "; ".join(
            f"{a.number}: {a.state.name if a.state is not None else 'running'}, {len(a.task_runs)} task run"
            f"{'' if len(a.task_runs) == 1 else 's'}" + (f" ({len(a.reused)} reused)" if a.reused else "")
            for a in attempts))
    entry = entry_point_text(run)
    if entry:
        print(f"  defined in: {shown(entry)}   (`headwater runs retry` loads it from there)")
    origin = states[0].ts if states else (run.start_ts or 0)
    print("\nState history:")
    for state in states:
        print(f"  +{state.ts - origin:8.3f}s  {state_name(state.name, colour, 14)} "
              f"{shown(state.message or '')}".rstrip())
    if counts.total:
        _print_task_runs(store, run, counts, tasks if args.all or counts.total <= TASK_ROWS else None,
                         origin, colour)
    if children:
        print("\nSubflow runs:")
        for child in children:
            print(f"  {shown(child.name)} ({shown(child.flow_name)}) {state_text(child.state, colour)} "
                  f"{shown(child.id[:8])}")
    _print_logs(store, run, args.logs, colour)
    return 0


def _print_task_runs(store: Any, run: Any, counts: Any, tasks: list[Any] | None, origin: float,
                     colour: bool) -> None:
    """The task runs as a timeline: every one of ``tasks``. A big run (more than
    TASK_ROWS) first gets a state summary and its failed and retried task runs; then, when
    ``tasks`` is None, how to list the rest."""
    big = counts.total > TASK_ROWS
    summary = ", ".join(f"{n:,} {state_name(name, colour)}" for name, n in
                        sorted(counts.by_name.items(), key=lambda item: -item[1]))
    print(f"\nTask runs ({counts.total:,}): {summary}" if big else f"\nTask runs ({counts.total:,}):")
    listed = 0
    if big:
        picked: dict[str, Any] = {}
        for state_type in BAD_TYPES:
            for task in store.read_task_run_page(run.id, limit=TASK_ROWS, state=state_type).items:
                picked.setdefault(task.id, task)
        for task in store.read_task_run_page(run.id, limit=TASK_ROWS, retried=True).items:
            picked.setdefault(task.id, task)
        first = sorted(picked.values(), key=lambda t: t.start_ts or 0)[:TASK_ROWS]
        if first:
            print(f"Failed and retried ({len(picked):,}{'+' if len(picked) > TASK_ROWS else ''}):")
            _print_timeline(run, first, {t.id: store.read_states(t.id) for t in first}, origin, colour)
        listed = len(first)
    if tasks is not None:
        if big:
            print("All task runs:")
        _print_timeline(run, tasks, store.read_task_run_states(run.id), origin, colour)
    elif counts.total > listed:
        left_out = counts.total - listed
        print(f"  ... {left_out:,} more task run{'s' if left_out != 1 else ''}: "
              f"`headwater runs show {shown(run.name)} --all`, or `headwater runs tasks {shown(run.name)}`")


def _print_timeline(run: Any, tasks: list[Any], histories: dict[str, list[Any]], origin: float,
                    colour: bool) -> None:
    """One line per task run: its start, a bar across the flow run's duration, its name,
    duration and state history."""
    end = max([t.end_ts or t.start_ts or origin for t in tasks] + [run.end_ts or origin])
    span = max(end - origin, 1e-6)
    width = 30
    for task in tasks:
        start = task.start_ts or (task.state.ts if task.state else origin)
        stop = task.end_ts or start
        left = int((start - origin) / span * width)
        bar = " " * left + "#" * max(1, int((stop - start) / span * width))
        history = " > ".join(state_name(s.name, colour) for s in histories.get(task.id, []))
        print(f"  +{start - origin:8.3f}s |{bar[:width].ljust(width)}| {shown(task.name):<28} "
              f"{duration_text(task.start_ts, task.end_ts):>8}  {history}")


def _print_logs(store: Any, run: Any, keep: int | None, colour: bool) -> None:
    """The run's log lines: the first and last ``keep // 2`` (None: all), and how many
    are left out between them."""
    first = store.read_log_page(run.id, limit=None if keep is None else keep // 2)
    total = first.total
    if not total:
        return
    print("\nLogs:")
    lines = first.items
    tail: list[Any] = []
    hidden = total - len(lines)
    if keep is not None and hidden > 0:
        last = keep - keep // 2
        tail = store.read_log_page(run.id, offset=max(len(lines), total - last), limit=last).items if last else []
        hidden = total - len(lines) - len(tail)
    names = TaskNames(store)
    for line in lines:
        print(log_line_text(line, run.name, names, colour))
    if hidden > 0:
        print(f"  ... {hidden} more line{'s' if hidden != 1 else ''} (use --logs {total} / --logs all)")
    for line in tail:
        print(log_line_text(line, run.name, names, colour))


class TaskNames:
    """Task run names by id, each read from the store once (for labelling log lines)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.names: dict[str, str] = {}

    def __call__(self, task_run_id: str) -> str:
        if task_run_id not in self.names:
            task = self.store.read_task_run(task_run_id)
            self.names[task_run_id] = task.name if task is not None else task_run_id
        return self.names[task_run_id]


def log_line_text(line: dict[str, Any], run_name: str, task_name: Callable[[str], str], colour: bool,
                  indent: str = "  ") -> str:
    """A log line as the console printed it, labelled with the flow run, task run or
    logger the console named; a traceback's lines indented below it."""
    stamp = dt.datetime.fromtimestamp(line["ts"]).strftime("%H:%M:%S.%f")[:-3]
    task_id = line["task_run_id"]
    # The label the console showed (see headwater.plugins.run_logs for how lines are filed).
    if task_id:
        where = f"Task run {quoted(task_name(task_id))}"
    elif line.get("logger") in (None, "headwater.flow_runs", "headwater.task_runs"):
        where = f"Flow run {quoted(run_name)}"
    else:
        where = shown(line["logger"])
    # Newlines and tabs kept (a traceback spans lines); every other control escaped.
    first, *rest = shown(line["message"], lines=True).split("\n")
    out = [f"{indent}{stamp} | {level_name(line['level'], colour, 7)} | {where} - {first}"]
    out += [f"{indent}    {more}".rstrip() for more in rest]  # a traceback: indented under its line
    return "\n".join(out)
