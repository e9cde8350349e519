"""``headwater runs logs RUN [--follow] [--level LEVEL] [--task NAME] [--json]``: a flow
run's log lines in order (its own and its task runs'), as the console printed them;
``--follow`` prints new lines as they are recorded until the run ends. Wired up by
``cli_commands``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from headwater.stores import LOG_LEVELS, RunReader, require_part

from .cli_format import current_session, find_flow_run, iso
from .cli_show import TaskNames, log_line_text
from .cli_text import shown
from .colours import wants_colour

#: Seconds between two reads of a followed run.
FOLLOW_SECONDS = 0.5

#: Lines a followed run's read goes back over: lines are ordered by time, and one logged
#: a moment earlier may be recorded a moment later (each process writes in batches).
REREAD_LINES = 500


def cmd_runs_logs(args: argparse.Namespace) -> int:
    store = require_part(current_session().store, RunReader, "`headwater runs logs`")
    if args.level is not None and args.level.upper() not in LOG_LEVELS:
        print(f"headwater: error: --level {args.level!r} is not a log level; expected one of "
              f"{', '.join(LOG_LEVELS)} (any case)", file=sys.stderr)
        return 2
    run = find_flow_run(store, args.run)
    if run is None:
        return 1
    printer = _Printer(store, run, args.json)
    if not args.follow:
        page = store.read_log_page(run.id, limit=None, level=args.level, task=args.task)
        if args.json:
            print(json.dumps({"logs": [_line_dict(x) for x in page.items], "total": page.total,
                              "offset": 0, "limit": None}, indent=2))
        else:
            for line in page.items:
                printer(line)
            if not page.total:
                if args.task is not None and not _has_task(store, run, args.task):
                    print(f"headwater: error: flow run {shown(repr(run.name))} has no task run or task named "
                          f"{shown(repr(args.task))}; `headwater runs tasks {shown(run.id[:8])}` lists them",
                          file=sys.stderr)
                    return 1
                _say_none(run, args)
        return 0
    try:
        _follow(store, run, args, printer)
    except KeyboardInterrupt:
        return 130
    return 0


def _follow(store: Any, run: Any, args: argparse.Namespace, printer: "_Printer") -> None:
    """Print the run's lines, then new ones every FOLLOW_SECONDS, until a read made after
    the run ended has been printed."""
    seen: Counter[tuple[Any, ...]] = Counter()  # the lines of the last read, printed already
    total = 0
    while True:
        ended = _has_ended(store.read_flow_run(run.id))
        start = max(0, total - REREAD_LINES)
        page = store.read_log_page(run.id, offset=start, limit=None, level=args.level, task=args.task)
        now: Counter[tuple[Any, ...]] = Counter()
        for line in page.items:
            key = (line["ts"], line["task_run_id"], line["level"], line["message"])
            now[key] += 1
            if now[key] > seen[key]:
                printer(line)
        seen, total = now, page.total
        sys.stdout.flush()
        if ended:
            return
        time.sleep(FOLLOW_SECONDS)


def _has_ended(run: Any) -> bool:
    """Whether the run is over (deleted meanwhile counts as over)."""
    return run is None or (run.state is not None and run.state.has_ended())


def _say_none(run: Any, args: argparse.Namespace) -> None:
    filters = [f"--{k} {shown(v)}" for k, v in (("level", args.level), ("task", args.task)) if v is not None]
    if filters:
        print(f"No log lines of flow run {shown(repr(run.name))} match {' '.join(filters)}.")
    else:
        print(f"Flow run {shown(repr(run.name))} has no log lines.")


def _line_dict(line: dict[str, Any]) -> dict[str, Any]:
    return dict(line, ts=iso(line["ts"]))


class _Printer:
    """Prints one log line: as the console did, or as one JSON object on a line."""

    def __init__(self, store: Any, run: Any, as_json: bool) -> None:
        self.run, self.as_json = run, as_json
        self.names = TaskNames(store)
        self.colour = wants_colour(sys.stdout)

    def __call__(self, line: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(_line_dict(line)))
        else:
            print(log_line_text(line, self.run.name, self.names, self.colour, indent=""))


def _has_task(store: Any, run: Any, task: str) -> bool:
    """Whether ``task`` names a task run of ``run`` (its id, its name or its task's name):
    asked only when no line matched, to tell a typo from a task that logged nothing."""
    return any(task in (t.id, t.name, t.task_name) for t in store.read_task_runs(flow_run_id=run.id))
