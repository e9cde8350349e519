"""The built-in ``headwater`` subcommands: ``runs`` (its subcommands in their own
modules, imported when run: ``runs show`` in ``cli_show``, ``logs`` in ``cli_logs``,
``tasks`` in ``cli_tasks``, ``delete`` and ``prune`` in ``cli_delete``, ``retry`` in
``cli_retry``), ``cache`` (``cache prune`` in ``cli_cache_prune``), ``plugins`` and
``run`` (``cli_run``). Every listing takes ``--json``; state names and log levels are
coloured when stdout is a terminal (see ``colours``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from headwater.plugin_manager import hookimpl
from headwater.settings import hide_password
from headwater.stores import CacheIndex, FlowRunFilter, RunReader, require_part

from .cli_format import (LOG_LINES, counts_dict, current_session, duration_text, iso, known_state, log_count,
                         no_runs_text, parse_duration, positive_int, run_dict, state_name, state_words,
                         subflow_mark, table, task_count_text, unicode_ok, when)
from .cli_run import cmd_run
from .cli_text import quoted, shown
from .colours import wants_colour


# -- runs ---------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    command = getattr(args, "runs_command", None)
    if command is not None:
        return _RUNS_COMMANDS[command](args)
    session = current_session()
    store = require_part(session.store, RunReader, "`headwater runs`")
    if args.state is not None and not known_state(store, args.state):
        types, names = state_words()
        print(f"headwater: error: --state {args.state!r} is not a state; state types: {', '.join(types)}; "
              f"state names: {', '.join(names)} (any case)", file=sys.stderr)
        return 2
    flows = args.flow or []
    if args.json:  # for scripts: a flat list, newest first, subflow runs included
        runs = store.search_flow_runs(FlowRunFilter(flow_names=flows, state=args.state), limit=args.limit).items
        print(json.dumps([dict(run_dict(r), task_runs=counts_dict(store.count_task_run_states(r.id)))
                          for r in runs], indent=2))
        return 0
    if flows or args.state is not None:
        # Filtered: the runs that match, subflow runs among them, each marked.
        page = store.search_flow_runs(FlowRunFilter(flow_names=flows, state=args.state), limit=args.limit)
        rows = [(r, 1 if r.parent_flow_run_id else 0) for r in page.items]
    else:
        page = store.search_flow_runs(FlowRunFilter(top_level=True), limit=args.limit)
        rows = []
        for run in page.items:
            rows.append((run, 0))
            rows.extend(_subflow_rows(store, run, 1))
    if not rows:
        filters = [f"--flow {shown(f)}" for f in flows]
        filters += [f"--state {shown(args.state)}"] if args.state is not None else []
        if filters:
            print(f"No flow runs match {' '.join(filters)}; `headwater runs` lists every recent run.")
        else:
            print(shown(no_runs_text(hide_password(session.settings.database_url))))
        return 0
    mark, marks = subflow_mark(), unicode_ok()
    cells = []
    for run, depth in rows:
        if isinstance(run, int):  # subflow runs left out under their parent
            cells.append(["  " * (depth - 1) + mark + f"... {run:,} more (headwater runs show the parent)",
                          "", "", "", "", "", ""])
            continue
        cells.append(["  " * max(depth - 1, 0) + (mark if depth else "") + run.name, run.flow_name,
                      run.state.name if run.state is not None else "-",
                      task_count_text(store.count_task_run_states(run.id), marks),
                      when(run.start_ts), duration_text(run.start_ts, run.end_ts), run.id[:8]])
    paint = {2: lambda text: state_name(text, colour=True)} if wants_colour(sys.stdout) else None
    print(table(cells, ["NAME", "FLOW", "STATE", "TASKS", "START", "DURATION", "ID"], paint))
    if page.total > len(page.items):
        print(f"({len(page.items)} of {page.total:,} runs; --limit N for more)")
    return 0


#: Subflow runs listed under their parent by ``headwater runs`` (``runs show`` lists all).
SUBFLOW_ROWS = 10


def _subflow_rows(store: Any, parent: Any, depth: int) -> list[tuple[Any, int]]:
    """The rows of ``parent``'s subflow runs (theirs below them), oldest first; a count
    of those left out past SUBFLOW_ROWS."""
    page = store.search_flow_runs(FlowRunFilter(parent_flow_run_id=parent.id), limit=None)
    children = page.items[::-1]
    rows: list[tuple[Any, int]] = []
    for child in children[:SUBFLOW_ROWS]:
        rows.append((child, depth))
        rows.extend(_subflow_rows(store, child, depth + 1))
    if len(children) > SUBFLOW_ROWS:
        rows.append((len(children) - SUBFLOW_ROWS, depth))
    return rows


def _runs_command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The function of a ``runs`` subcommand, imported when it is run."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(f"headwater.plugins.{module}"), name)(args)
    return run


_RUNS_COMMANDS = {
    "show": _runs_command("cli_show", "cmd_runs_show"),
    "retry": _runs_command("cli_retry", "cmd_runs_retry"),
    "logs": _runs_command("cli_logs", "cmd_runs_logs"),
    "tasks": _runs_command("cli_tasks", "cmd_runs_tasks"),
    "delete": _runs_command("cli_delete", "cmd_runs_delete"),
    "prune": _runs_command("cli_delete", "cmd_runs_prune"),
}


# -- cache --------------------------------------------------------------------------------


def cmd_cache(args: argparse.Namespace) -> int:
    if args.cache_command == "prune":
        from .cli_cache_prune import cmd_cache_prune

        return cmd_cache_prune(args)
    store = require_part(current_session().store, CacheIndex, "`headwater cache`")
    if args.cache_command == "clear":
        if not args.yes:
            print("headwater: error: `headwater cache clear` deletes cache entries; add --yes to confirm",
                  file=sys.stderr)
            return 2
        if args.task is not None and not any(e.task_name == args.task for e in store.read_cache_entries()):
            tasks = sorted({e.task_name for e in store.read_cache_entries()})
            print(f"No cache entries for task {args.task!r}; tasks with entries: "
                  f"{', '.join(shown(t) for t in tasks) or 'none'}.")
            return 0
        removed = store.delete_cache_entries(expired_only=args.expired, task_name=args.task)
        result_store = None
        for entry in removed:
            if not any(e.location == entry.location for e in store.read_cache_entries()):
                if result_store is None:
                    from headwater.plugins.local_results import configured_result_store

                    result_store = configured_result_store(current_session())
                result_store.delete(entry.location)
        print(f"Removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}.")
        return 0
    entries = store.read_cache_entries()
    if args.json:
        print(json.dumps([{
            "key": e.key, "task_name": e.task_name, "task_run_id": e.task_run_id, "location": e.location,
            "serializer": e.serializer, "created": iso(e.created), "expires": iso(e.expiration),
            "expired": e.is_expired(), "size": e.size, "digest": e.digest} for e in entries], indent=2))
        return 0
    if not entries:
        print("The cache is empty.")
        return 0
    rows = [[e.key if len(e.key) <= 24 else e.key[:21] + "...", e.task_name, when(e.created),
             ("expired " if e.is_expired() else "") + when(e.expiration) if e.expiration else "never",
             "-" if e.size is None else str(e.size)] for e in entries]
    print(table(rows, ["KEY", "TASK", "CREATED", "EXPIRES", "SIZE"]))
    return 0


# -- plugins ------------------------------------------------------------------------------


#: The STATUS column of ``headwater plugins`` shows this much of a status; errors are
#: printed in full below the table.
STATUS_CHARS = 60


def _first_line(text: str, width: int = STATUS_CHARS) -> str:
    """The first line of ``text``, cut to ``width`` characters."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _plugin_name_and_detail(record: Any) -> tuple[str, str]:
    """The PLUGIN and DETAIL cells: a local hook file once, relative to the current
    directory; other long names cut from the left."""
    import os

    if record.source == "local":
        try:
            shown = os.path.relpath(record.name)
        except ValueError:  # another drive on Windows
            shown = record.name
        return shown, "-" if record.detail == record.name else record.detail
    name = record.name if len(record.name) < 40 else "..." + record.name[-37:]
    return name, record.detail


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins (or one hook's call order); exit 1 when any plugin failed to load."""
    import os
    from pathlib import Path

    session = current_session()
    pm = session.pm  # load (the CLI's session is not strict, so broken plugins are listed)
    # Local hook files load per flow directory as flows run; list the ones that apply here.
    session.load_local_hooks(Path(os.getcwd()))
    records = session.records
    failed = [r for r in records if r.status.startswith("error")]
    if args.order:
        hook_name = args.order if args.order.startswith("headwater_") else "headwater_" + args.order
        hook = getattr(pm.hook, hook_name, None)
        if hook is None or not hook.has_spec():
            known = sorted(n for n, c in vars(pm.hook).items()
                           if n.startswith("headwater_") and hasattr(c, "has_spec") and c.has_spec())
            print(f"headwater: error: no hook named {args.order!r}; hooks: {', '.join(known)}",
                  file=sys.stderr)
            return 2
        impls = list(reversed(hook.get_hookimpls()))  # pluggy calls the last one first
        order = [{"plugin": i.plugin_name, "wrapper": bool(i.wrapper), "tryfirst": i.tryfirst,
                  "trylast": i.trylast} for i in impls]
        if args.json:
            print(json.dumps({"hook": hook_name, "order": order}, indent=2))
        else:
            print(f"Call order of {hook_name} (first called first):")
            for n, item in enumerate(order, 1):
                marks = [k for k in ("wrapper", "tryfirst", "trylast") if item[k]]
                print(f"  {n}. {shown(item['plugin'])}" + (f"  [{', '.join(marks)}]" if marks else ""))
            if not order:
                print("  (no plugin implements it)")
    elif args.json:
        print(json.dumps([{"name": r.name, "source": r.source, "detail": r.detail, "status": r.status,
                           "hooks": r.hooks} for r in records], indent=2))
    else:
        rows = []
        for r in records:
            name, detail = _plugin_name_and_detail(r)
            hooks = [h.replace("headwater_", "") for h in r.hooks]
            # Two hooks a line, the rest on lines below: the table stays narrow however
            # many hooks a plugin implements.
            lines = [", ".join(hooks[i:i + 2]) + ("," if i + 2 < len(hooks) else "")
                     for i in range(0, len(hooks), 2)] or [""]
            rows.append([name, r.source, detail, _first_line(r.status), lines[0]])
            rows.extend(["", "", "", "", more] for more in lines[1:])
        print(table(rows, ["PLUGIN", "SOURCE", "DETAIL", "STATUS", "HOOKS"]))
        if failed:
            print("\nErrors:")
            for r in failed:
                print(f"  {shown(_plugin_name_and_detail(r)[0])}: {shown(r.status, lines=True)}")
    if failed:
        names = ", ".join(quoted(r.name) for r in failed)
        print(f"headwater: error: {len(failed)} plugin(s) failed to load: {names}", file=sys.stderr)
        return 1
    return 0



@hookimpl
def headwater_add_commands(cli: Any) -> None:
    runs = cli.add_parser("runs", help="list recent flow runs, or show one")
    runs.add_argument("--limit", type=positive_int, default=20,
                      help="how many runs (default 20; top-level runs, each with its subflow runs below it)")
    runs.add_argument("--flow", action="append", metavar="NAME",
                      help="only runs of this flow; repeat for runs of any of several")
    runs.add_argument("--state", help="only runs in this state (type or name)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="show|logs|tasks|retry|delete|prune")
    show = runs_sub.add_parser("show", help="a flow run's state history and task runs")
    show.add_argument("run", help="flow run id (or its first characters) or name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--logs", type=log_count, default=None, metavar="N|all",
                      help=f"how many log lines: the first and last N/2 (default {LOG_LINES}; "
                           f"with --json every line unless given), or all")
    show.add_argument("--all", action="store_true",
                      help="list every task run of a big run (by default its failed and retried ones)")
    logs = runs_sub.add_parser("logs", help="a flow run's log lines, in order; --follow a running one")
    logs.add_argument("run", help="flow run id (or its first characters) or name")
    logs.add_argument("--follow", "-f", action="store_true", help="print new lines as they come, until the run ends")
    logs.add_argument("--level", metavar="LEVEL", help="only lines of this level or above (DEBUG, INFO, "
                                                       "WARNING, ERROR, CRITICAL)")
    logs.add_argument("--task", metavar="NAME", help="only lines of this task run (id or name) or task")
    logs.add_argument("--json", action="store_true", help="print JSON (one object per line with --follow)")
    tasks = runs_sub.add_parser("tasks", help="a flow run's task runs: state, duration, retries, cache key")
    tasks.add_argument("run", help="flow run id (or its first characters) or name")
    tasks.add_argument("--state", help="only task runs in this state (type or name)")
    tasks.add_argument("--limit", type=positive_int, default=None, help="at most N task runs (default all)")
    tasks.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    delete = runs_sub.add_parser(
        "delete", help="delete flow runs with their subflow runs, task runs, states and logs",
        description="Delete flow runs with their subflow runs, task runs, states and log lines, then "
                    "shrink the store file. Cache entries and result files stay (`headwater cache clear`, "
                    "`headwater cache prune`).")
    delete.add_argument("runs", nargs="+", metavar="RUN", help="flow run id (or its first characters) or name")
    delete.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    delete.add_argument("--force", action="store_true", help="also delete runs that have not ended")
    delete.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    prune = runs_sub.add_parser(
        "prune", help="delete ended flow runs older than a duration, then shrink the store file",
        description="Delete top-level flow runs that ended and started more than DURATION ago (with "
                    "their subflow runs, task runs, states and logs), then shrink the store file.")
    prune.add_argument("--older-than", type=parse_duration, required=True, metavar="DURATION",
                       help="e.g. 30d, 12h, 90m, 0s (s, m, h, d, w)")
    prune.add_argument("--state", help="only runs in this state (type or name)")
    prune.add_argument("--flow", action="append", metavar="NAME", help="only runs of this flow (repeatable)")
    prune.add_argument("--keep-last", type=int, default=0, metavar="N",
                       help="keep the N newest ended runs of each flow whatever their age")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    prune.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    prune.add_argument("--json", action="store_true", help="print what was (or would be) deleted as JSON")
    retry = runs_sub.add_parser(
        "retry", help="run a failed flow run again from where it failed",
        description="Run a Failed, Crashed or Cancelled flow run again as a new attempt of the same "
                    "run (same id, same parameters, the flow loaded from where it was defined). Task "
                    "runs that completed before with a persisted result are reused, not run again.")
    retry.add_argument("run", help="flow run id (or its first characters) or name")
    retry.add_argument("--force", action="store_true", help="also retry a Completed run")
    for parser in (runs, show, retry, logs, tasks, delete, prune):
        parser.set_defaults(func=cmd_runs)

    cache = cli.add_parser("cache", help="list, clear or prune cache entries")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ls|clear|prune", required=True)
    ls = cache_sub.add_parser("ls", help="list cache entries")
    ls.add_argument("--json", action="store_true", help="print JSON")
    clear = cache_sub.add_parser("clear", help="delete cache entries and their result files")
    clear.add_argument("--expired", action="store_true", help="only expired entries")
    clear.add_argument("--task", help="only entries written by this task")
    clear.add_argument("--yes", action="store_true", help="confirm")
    cache_prune = cache_sub.add_parser(
        "prune", help="delete expired entries and result files nothing refers to",
        description="Delete expired cache entries, and result files that no cache entry, task run or "
                    "flow run refers to (written more than an hour ago: a running flow's newest results "
                    "are not recorded yet). Files a run refers to stay: `headwater runs retry` reuses them.")
    cache_prune.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    cache_prune.add_argument("--json", action="store_true", help="print what was (or would be) deleted as JSON")
    cache.set_defaults(func=cmd_cache)

    plugins = cli.add_parser("plugins", help="list plugins, their source, status and hooks")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument("--order", metavar="HOOK", help="print the call order of one hook")
    plugins.set_defaults(func=cmd_plugins)

    run = cli.add_parser(
        "run", help="run a flow from a file: FILE:FLOW -p key=value",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="How -p values are read:\n"
               "  str parameters get the text as typed (-p version=1.10 gives '1.10').\n"
               "  Other annotated parameters get the text too and the flow's validation\n"
               "  coerces it (int, float, bool, dates); JSON lists, objects and null are\n"
               "  decoded (-p ids='[1, 2]').\n"
               "  Unannotated parameters get JSON values (3, true, null, [1], {\"a\": 1},\n"
               "  \"text\") decoded, except numbers that would not read back as typed\n"
               "  (1.10, 1e3), which stay text like any other value.\n"
               "  Except for str parameters, a value starting with [ or { must be JSON.\n"
               "  Each parameter may be given once; unknown names are an error.")
    run.add_argument("target", help="path/to/file.py:flow_function")
    run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                     help="a flow parameter; repeat for more (see below for how values are read)")
    run.set_defaults(func=cmd_run)
