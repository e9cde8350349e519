"""``headwater runs delete RUN... [--yes] [--force]`` and ``headwater runs prune
--older-than DURATION [--state STATE] [--flow NAME] [--keep-last N] [--dry-run] [--yes]``:
delete flow runs with their subflow runs, task runs, states and log lines (the store's
``delete_flow_runs``, all or nothing), then shrink the store file (``compact``). Cache
entries and result files stay: ``headwater cache clear`` and ``cache prune`` own them.
Both ask first on a terminal and need ``--yes`` otherwise. Wired up by ``cli_commands``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from headwater.stores import FlowRunFilter, RunReader, require_part

from .cli_format import confirm, current_session, find_flow_run, known_state, run_dict, state_words, table, when
from .cli_text import quoted, shown


def cmd_runs_delete(args: argparse.Namespace) -> int:
    store = require_part(current_session().store, RunReader, "`headwater runs delete`")
    runs: dict[str, Any] = {}
    namesakes: list[str] = []
    for text in args.runs:  # every one found before anything is deleted
        run = find_flow_run(store, text)
        if run is None:
            return 1
        runs.setdefault(run.id, run)
        if not run.id.startswith(text):  # found by its name: the newest run of that name
            same = [r for r in store.search_flow_runs(FlowRunFilter(search=text), limit=None).items if r.name == text]
            if len(same) > 1:
                namesakes.append(f"{len(same) - 1} older run{'s' if len(same) > 2 else ''} named {quoted(text)} "
                                 f"stay{'' if len(same) > 2 else 's'} (give their ids to delete them)")
    going = [r for r in runs.values() if not has_ended(r)]
    if going and not args.force:
        run = going[0]
        state = shown(run.state.name if run.state else "not started")
        print(f"headwater: error: flow run {quoted(run.name)} is {state} and has not ended; deleting it would "
              f"leave its process writing to a run that is gone (--force deletes it anyway)", file=sys.stderr)
        return 1
    names = ", ".join(quoted(r.name) for r in runs.values())
    for note in namesakes:
        print(f"Only the newest run of that name: {note}.", file=sys.stderr)
    answer = confirm(f"Delete flow run{'s' if len(runs) > 1 else ''} {names} with their subflow runs, task "
                     f"runs, states and logs?", args.yes, "`headwater runs delete`")
    if answer is None:
        return 2
    if not answer:
        print("Nothing deleted.")
        return 1
    return _delete(store, list(runs.values()), args.json)


def cmd_runs_prune(args: argparse.Namespace) -> int:
    store = require_part(current_session().store, RunReader, "`headwater runs prune`")
    if args.keep_last < 0:
        print(f"headwater: error: --keep-last {args.keep_last} is negative; expected 0 or more", file=sys.stderr)
        return 2
    if args.state is not None and not known_state(store, args.state):
        types, names = state_words()
        print(f"headwater: error: --state {args.state!r} is not a state; state types: {', '.join(types)}; "
              f"state names: {', '.join(names)} (any case)", file=sys.stderr)
        return 2
    cutoff = time.time() - args.older_than
    flows = args.flow or []
    # Top-level runs only: a subflow run goes with its parent.
    found = store.search_flow_runs(FlowRunFilter(flow_names=flows, state=args.state, started_before=cutoff,
                                                 top_level=True), limit=None).items
    doomed = [r for r in found if has_ended(r)]
    if args.keep_last:
        kept: set[str] = set()
        for flow_name in {r.flow_name for r in doomed}:
            every = store.search_flow_runs(FlowRunFilter(flow_names=[flow_name], state=args.state, top_level=True),
                                           limit=None).items
            kept.update([r.id for r in every if has_ended(r)][:args.keep_last])
        doomed = [r for r in doomed if r.id not in kept]
    if args.dry_run or not doomed:
        if args.json:
            print(json.dumps({"dry_run": args.dry_run, "flow_runs": [run_dict(r) for r in doomed]}, indent=2))
        elif not doomed:
            print(f"No ended flow runs started before {when(cutoff)} match; nothing to delete.")
        else:
            print(f"Would delete {len(doomed):,} flow run{'s' if len(doomed) != 1 else ''} "
                  f"(with their subflow runs, task runs, states and logs):")
            print(table([[r.name, r.flow_name, r.state.name if r.state else "-", when(r.start_ts)] for r in doomed],
                        ["NAME", "FLOW", "STATE", "START"]))
        return 0
    answer = confirm(f"Delete {len(doomed):,} flow run{'s' if len(doomed) != 1 else ''} started before "
                     f"{when(cutoff)}, with their subflow runs, task runs, states and logs?", args.yes,
                     "`headwater runs prune`")
    if answer is None:
        return 2
    if not answer:
        print("Nothing deleted.")
        return 1
    return _delete(store, doomed, args.json)


def has_ended(run: Any) -> bool:
    """Whether a flow run is over (a final state, or NotReady): only those are deleted
    without ``--force`` and pruned at all."""
    return run.state is not None and run.state.has_ended()


def _delete(store: Any, runs: list[Any], as_json: bool) -> int:
    """Delete ``runs`` (with everything under them), shrink the store, say what went."""
    delete = getattr(store, "delete_flow_runs", None)
    if delete is None:
        print(f"headwater: error: the run store {type(store).__qualname__} cannot delete flow runs (it has no "
              f"delete_flow_runs; docs/plugins.md, 'Writing a run store')", file=sys.stderr)
        return 1
    before = _store_bytes(store)
    deleted = delete([r.id for r in runs])
    if callable(getattr(store, "compact", None)):
        store.compact()
    after = _store_bytes(store)
    if as_json:
        print(json.dumps({"dry_run": False, "flow_runs": [run_dict(r) for r in runs],
                          "deleted": {"flow_run_ids": deleted.flow_run_ids, "task_runs": deleted.task_runs,
                                      "states": deleted.states, "logs": deleted.logs},
                          "store_bytes": {"before": before, "after": after}}, indent=2))
        return 0
    subflows = len(deleted.flow_run_ids) - len(runs)
    print(f"Deleted {len(runs):,} flow run{'s' if len(runs) != 1 else ''}"
          + (f" and {subflows:,} subflow run{'s' if subflows != 1 else ''}" if subflows else "")
          + f": {_count(deleted.task_runs, 'task run')}, {_count(deleted.states, 'state')}, "
            f"{_count(deleted.logs, 'log line')}.")
    if before is not None and after is not None:
        print(f"The run store's files went from {_size(before)} to {_size(after)}.")
    return 0


def _store_bytes(store: Any) -> int | None:
    """The bytes of a file store's database and write-ahead log, if it has a ``path``."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    total = 0
    for name in (str(path), f"{path}-wal"):
        try:
            total += os.path.getsize(name)
        except OSError:
            pass
    return total


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")
