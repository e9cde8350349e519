"""``headwater runs tasks RUN [--state STATE] [--limit N] [--offset N] [--json]``: a flow
run's task runs, one row each (state, duration, retries, cache key), read a page at a
time so a 20,000-task run lists as fast as a small one. Wired up by ``cli_commands``."""

from __future__ import annotations

import argparse
import json
import sys

from headwater.stores import RunReader, require_part

from .cli_format import (counts_dict, current_session, duration_text, find_flow_run, run_dict, state_name,
                         state_words, table, when)
from .cli_text import shown
from .colours import wants_colour



def cmd_runs_tasks(args: argparse.Namespace) -> int:
    store = require_part(current_session().store, RunReader, "`headwater runs tasks`")
    run = find_flow_run(store, args.run)
    if run is None:
        return 1
    if args.offset < 0:
        print(f"headwater: error: --offset {args.offset} is negative; expected 0 or more", file=sys.stderr)
        return 2
    counts = store.count_task_run_states(run.id)
    in_use = sorted(set(counts.by_name) | set(counts.by_type))
    if args.state is not None and not _known(args.state, in_use):
        types, names = state_words()
        print(f"headwater: error: --state {args.state!r} is not a state; state types: {', '.join(types)}; "
              f"state names: {', '.join(names)} (any case)", file=sys.stderr)
        return 2
    page = store.read_task_run_page(run.id, offset=args.offset, limit=args.limit, state=args.state)
    if args.json:
        return _print_json([dict(run_dict(t), retries=max(0, t.run_count - 1)) for t in page.items],
                           page.total, args, counts_dict(counts))
    if not page.total:
        if args.state is not None:
            print(f"No task runs of flow run {shown(repr(run.name))} are in state {shown(repr(args.state))}; "
                  f"theirs: {shown(', '.join(f'{n:,} {name}' for name, n in counts.by_name.items()) or 'none')}.")
        else:
            print(f"Flow run {shown(repr(run.name))} has no task runs.")
        return 0
    if not page.items:  # past the end
        hint = (f"--offset {max(0, page.total - args.limit):,} shows the last ones" if args.limit
                else "without --offset it shows them all")
        print(f"--offset {args.offset:,} is past the last of the {page.total:,} task runs; {hint}.")
        return 0
    rows = [[t.name, t.task_name, t.state.name if t.state is not None else "-", when(t.start_ts),
             duration_text(t.start_ts, t.end_ts), str(max(0, t.run_count - 1)), _short(t.cache_key)]
            for t in page.items]
    paint = {2: lambda text: state_name(text, colour=True)} if wants_colour(sys.stdout) else None
    print(table(rows, ["NAME", "TASK", "STATE", "START", "DURATION", "RETRIES", "CACHE KEY"], paint))
    first, last = page.offset + 1, page.offset + len(page.items)
    if len(page.items) < page.total:
        print(f"(showing {first:,}-{last:,} of {page.total:,}; --offset and --limit for others)")
    return 0


def _known(text: str, in_use: list[str]) -> bool:
    """A built-in state type or name, or a state some task run of the run is in."""
    types, names = state_words()
    return text.upper() in {w.upper() for w in [*types, *names, *in_use]}


def _print_json(items: list[dict], total: int, args: argparse.Namespace, counts: dict | None = None) -> int:
    out = {"task_runs": items, "total": total, "offset": args.offset, "limit": args.limit}
    if counts is not None:
        out["counts"] = counts
    print(json.dumps(out, indent=2))
    return 0


def _short(key: str | None) -> str:
    """A cache key cut to 24 characters, as ``headwater cache ls`` shows it."""
    if not key:
        return "-"
    return key if len(key) <= 24 else key[:21] + "..."
