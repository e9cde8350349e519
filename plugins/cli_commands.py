"""The built-in ``headwater`` subcommands: ``runs``, ``runs show``, ``cache``, ``plugins``
and ``run`` (its own module, ``cli_run``). Every listing takes ``--json``; state names and
log levels are coloured when stdout is a terminal (see ``colours``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any, Callable, Mapping

from headwater.plugin_manager import hookimpl
from headwater.stores import CacheIndex, RunReader, require_part

from .cli_run import cmd_run
from .cli_text import quoted, shown
from .colours import paint_level, paint_state, wants_colour


def _session() -> Any:
    from headwater.session import Session

    return Session.current()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat()


def _duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = end - start
    if seconds < 0.01:  # sub-10ms task runs are common: keep a digit so they differ
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{seconds / 60:.1f}m"


def _table(rows: list[list[str]], headers: list[str],
           paint: Mapping[int, Callable[[str], str]] | None = None) -> str:
    """``rows`` under ``headers`` in aligned columns; ``paint`` maps a column's index to
    what colours its (escaped) cells."""
    # Every cell escaped: a recorded name cannot move the cursor or start a row of its own.
    rows = [[shown(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    paint = paint or {}

    def cell(column: int, text: str, width: int) -> str:
        # Padding counted on the plain text: escape codes take no room on the screen.
        return (paint[column](text) if column in paint else text) + " " * (width - len(text))

    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell(i, c, w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)


def _state_name(name: str, colour: bool, width: int = 0) -> str:
    """A state's name escaped and padded to ``width``, in its colour when ``colour``."""
    text = shown(name)
    # The colour is looked up by the escaped name: it equals a palette name only when the
    # recorded name does, so an odd name is never painted as another state.
    return (paint_state(text, text) if colour else text) + " " * (width - len(text))


def _level_name(level: str, colour: bool, width: int = 0) -> str:
    """A log level's name escaped and padded to ``width``, in its colour when ``colour``."""
    text = shown(level)
    return (paint_level(text) if colour else text) + " " * (width - len(text))


def _state_text(state: Any, colour: bool = False) -> str:
    return _state_name(state.name, colour) if state is not None else "-"


def _state_line(state: Any, colour: bool = False) -> str:
    """A state as ``str(state)`` gives it (``Failed('boom')``), its name and message
    escaped and quoted as the console shows them; the name in its colour when ``colour``."""
    parts = [quoted(state.message)] if state.message else []
    if state.shows_type():
        parts.append(f"type={state.type.name}")
    return f"{_state_name(state.name, colour)}({', '.join(parts)})"


def _run_dict(run: Any) -> dict[str, Any]:
    out = {
        "id": run.id,
        "name": run.name,
        "state": run.state.type.value if run.state else None,
        "state_name": run.state.name if run.state else None,
        "message": run.state.message if run.state else None,
        "parameters": run.parameters,
        "tags": sorted(run.tags),
        "start_time": _iso(run.start_ts),
        "end_time": _iso(run.end_ts),
        "run_count": run.run_count,
    }
    if run.kind == "flow":
        out.update(flow_name=run.flow_name, flow_version=run.flow_version,
                   parent_flow_run_id=run.parent_flow_run_id)
    else:
        out.update(task_name=run.task_name, flow_run_id=run.flow_run_id, cache_key=run.cache_key,
                   result_location=run.result_location)
    return out


#: A parameter value printed by ``runs show`` is cut after this many characters (--json
#: gives it as stored).
PARAMETER_CHARS = 80


def _parameters_text(parameters: dict[str, Any]) -> str:
    """The parameters as JSON on one line, each long value cut with its full length."""
    parts = []
    for key, value in parameters.items():
        text = json.dumps(value, default=repr)
        if len(text) > PARAMETER_CHARS:
            text = f"{text[:PARAMETER_CHARS]}... ({len(text)} characters)"
        parts.append(f"{json.dumps(str(key))}: {text}")
    return shown("{" + ", ".join(parts) + "}")  # JSON leaves DEL as it is


def _state_dict(state: Any) -> dict[str, Any]:
    return {"type": state.type.value, "name": state.name, "message": state.message,
            "timestamp": _iso(state.ts)}


# -- runs ---------------------------------------------------------------------------------


def _subflow_mark() -> str:
    """The prefix of a subflow run's name in ``headwater runs`` (ASCII when stdout is)."""
    try:
        "↳".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "> "
    return "↳ "


def cmd_runs(args: argparse.Namespace) -> int:
    if getattr(args, "runs_command", None) == "show":
        return cmd_runs_show(args)
    if getattr(args, "runs_command", None) == "retry":
        from .cli_retry import cmd_runs_retry

        return cmd_runs_retry(args)
    session = _session()
    store = require_part(session.store, RunReader, "`headwater runs`")
    if args.state is not None and not _known_state(store, args.state):
        types, names = _state_words()
        print(f"headwater: error: --state {args.state!r} is not a state; state types: {', '.join(types)}; "
              f"state names: {', '.join(names)} (any case)", file=sys.stderr)
        return 2
    runs = store.read_flow_runs(limit=args.limit, flow_name=args.flow, state=args.state)
    if args.json:
        print(json.dumps([_run_dict(r) for r in runs], indent=2))
        return 0
    if not runs:
        filters = [f"--{k} {shown(v)}" for k, v in (("flow", args.flow), ("state", args.state)) if v is not None]
        if filters:
            print(f"No flow runs match {' '.join(filters)}; `headwater runs` lists every recent run.")
        else:
            print(shown(_no_runs_text(session.settings.database_url)))
        return 0
    mark = _subflow_mark()
    rows = [[(mark if r.parent_flow_run_id else "") + r.name, r.flow_name,
             r.state.name if r.state is not None else "-",
             _when(r.start_ts), _duration(r.start_ts, r.end_ts), r.id[:8]] for r in runs]
    paint = {2: lambda text: _state_name(text, colour=True)} if wants_colour(sys.stdout) else None
    print(_table(rows, ["NAME", "FLOW", "STATE", "START", "DURATION", "ID"], paint))
    return 0


def _state_words() -> tuple[list[str], list[str]]:
    """The state types (``COMPLETED``) and state names (``Cached``) ``--state`` accepts."""
    import inspect

    from headwater import states

    types = [t.value for t in states.StateType]
    # The state makers (``Cached()``) are functions named after the state they make.
    names = [n for n in states.__all__ if inspect.isfunction(getattr(states, n, None))
             and getattr(states, n).__name__ == n and n.upper() not in types]
    return types, names


def _known_state(store: Any, text: str) -> bool:
    """A built-in state type or name, or a custom state name some run is in."""
    types, names = _state_words()
    if text.upper() in types or text.lower() in {n.lower() for n in names}:
        return True
    return bool(store.read_flow_runs(limit=1, state=text))


def _entry_point_text(run: Any) -> str | None:
    """Where the run's flow is defined (``file:function``), as recorded for a retry."""
    if not getattr(run, "entry_point", None):
        return None
    try:
        data = json.loads(run.entry_point)
        return f"{data.get('file') or data['module']}:{data['qualname']}"
    except (ValueError, KeyError, TypeError):
        return None


def _no_runs_text(url: str) -> str:
    """What an empty run store says, naming where it is."""
    if url.startswith("memory:"):
        return (f"No flow runs in {url}: that store lives only inside one process, so this command "
                f"cannot see runs of another. Set HEADWATER_DATABASE_URL to a sqlite:/// URL to keep runs.")
    if url.startswith("sqlite:"):
        from headwater.plugins.sqlite_store import sqlite_path

        where = str(sqlite_path(url))
    else:
        where = url
    return f"No flow runs recorded in {where} yet. Run a flow, then look again."


#: ``read_logs`` limit meaning "every line" (the store interface takes a number).
_ALL = 2**62


def _log_window(lines: list[Any], keep: int | None) -> tuple[list[Any], int, list[Any]]:
    """``(first lines, how many are left out, last lines)``: at most ``keep`` lines in
    all, half from the start and half from the end (where the run's outcome is)."""
    if keep is None or len(lines) <= keep:
        return lines, 0, []
    first = keep // 2
    last = keep - first
    return lines[:first], len(lines) - keep, lines[len(lines) - last:] if last else []


def cmd_runs_show(args: argparse.Namespace) -> int:
    store = require_part(_session().store, RunReader, "`headwater runs show`")
    args.logs_given = args.logs is not None
    args.logs = None if args.logs == "all" else (args.logs or LOG_LINES)
    run = store.read_flow_run(args.run)
    if run is None:
        short_id = len(args.run) < 6 and all(c in "0123456789abcdef-" for c in args.run.lower())
        hint = "; an id prefix needs at least 6 characters" if short_id else ""
        print(f"headwater: error: no flow run with id or name {args.run!r}{hint}; "
              f"`headwater runs` lists recent ones", file=sys.stderr)
        return 1
    states = store.read_states(run.id)
    tasks = store.read_task_runs(flow_run_id=run.id)
    # Oldest first, in the order the flow run started them.
    children = store.read_flow_runs(limit=_ALL, parent_flow_run_id=run.id)[::-1]
    from headwater.reuse import attempts_of  # only this command reads attempts

    attempts = attempts_of(states, tasks)
    if args.json:
        out = _run_dict(run)
        out["entry_point"] = _entry_point_text(run)
        out["attempts"] = [{"number": a.number, "started": _iso(a.started), "ended": _iso(a.ended),
                            "state": a.state.name if a.state is not None else None,
                            "task_runs": len(a.task_runs), "reused": len(a.reused)} for a in attempts]
        out["states"] = [_state_dict(s) for s in states]
        out["task_runs"] = [dict(_run_dict(t), states=[_state_dict(s) for s in store.read_states(t.id)])
                            for t in tasks]
        out["subflow_runs"] = [_run_dict(c) for c in children]
        logs = store.read_logs(flow_run_id=run.id, limit=_ALL)
        if args.logs_given:
            head, hidden, tail = _log_window(logs, args.logs)
            logs = head + tail
            out["logs_omitted"] = hidden
        out["logs"] = [dict(line, ts=_iso(line["ts"])) for line in logs]
        print(json.dumps(out, indent=2))
        return 0
    colour = wants_colour(sys.stdout)
    print(f"Flow run {quoted(run.name)} of flow {quoted(run.flow_name)}  (id {shown(run.id)})")
    print(f"  state:      {_state_line(run.state, colour)}" if run.state else "  state:      -")
    print(f"  parameters: {_parameters_text(run.parameters)}")
    print(f"  started:    {_when(run.start_ts)}   duration: {_duration(run.start_ts, run.end_ts)}")
    if len(attempts) > 1:
        print("  attempts:   " + "; ".join(
            f"{a.number}: {a.state.name if a.state is not None else 'running'}, {len(a.task_runs)} task run"
            f"{'' if len(a.task_runs) == 1 else 's'}" + (f" ({len(a.reused)} reused)" if a.reused else "")
            for a in attempts))
    entry = _entry_point_text(run)
    if entry:
        print(f"  defined in: {shown(entry)}   (`headwater runs retry` loads it from there)")
    origin = states[0].ts if states else (run.start_ts or 0)
    print("\nState history:")
    for state in states:
        print(f"  +{state.ts - origin:8.3f}s  {_state_name(state.name, colour, 14)} "
              f"{shown(state.message or '')}".rstrip())
    if tasks:
        print(f"\nTask runs ({len(tasks)}):")
        end = max([t.end_ts or t.start_ts or origin for t in tasks] + [run.end_ts or origin])
        span = max(end - origin, 1e-6)
        width = 30
        for task in tasks:
            start = task.start_ts or (task.state.ts if task.state else origin)
            stop = task.end_ts or start
            left = int((start - origin) / span * width)
            bar = " " * left + "#" * max(1, int((stop - start) / span * width))
            history = " > ".join(_state_name(s.name, colour) for s in store.read_states(task.id))
            print(f"  +{start - origin:8.3f}s |{bar[:width].ljust(width)}| {shown(task.name):<28} "
                  f"{_duration(task.start_ts, task.end_ts):>8}  {history}")
    if children:
        print("\nSubflow runs:")
        for child in children:
            print(f"  {shown(child.name)} ({shown(child.flow_name)}) {_state_text(child.state, colour)} {shown(child.id[:8])}")
    logs = store.read_logs(flow_run_id=run.id, limit=_ALL)
    if logs:
        print("\nLogs:")
        task_names = {t.id: t.name for t in tasks}
        head, hidden, tail = _log_window(logs, args.logs)
        for line in head + tail:
            if hidden and line is tail[0]:
                print(f"  ... {hidden} more line{'s' if hidden != 1 else ''} "
                      f"(use --logs {len(logs)} / --logs all)")
            stamp = dt.datetime.fromtimestamp(line["ts"]).strftime("%H:%M:%S.%f")[:-3]
            task_id = line["task_run_id"]
            # The label the console showed (see headwater.plugins.run_logs for how lines are filed).
            if task_id:
                where = f"Task run {quoted(task_names.get(task_id, task_id))}"
            elif line.get("logger") in (None, "headwater.flow_runs", "headwater.task_runs"):
                where = f"Flow run {quoted(run.name)}"
            else:
                where = shown(line["logger"])
            # Newlines and tabs kept (a traceback spans lines); every other control escaped.
            first, *rest = shown(line["message"], lines=True).split("\n")
            print(f"  {stamp} | {_level_name(line['level'], colour, 7)} | {where} - {first}")
            for more in rest:  # a traceback: indented under its line
                print(f"      {more}".rstrip())
    return 0


# -- cache --------------------------------------------------------------------------------


def cmd_cache(args: argparse.Namespace) -> int:
    store = require_part(_session().store, CacheIndex, "`headwater cache`")
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
                    from headwater.plugins.local_results import LocalResultStore

                    session = _session()
                    serializers = {n: s for n, s, _ in session.registry.items("serializer")}
                    result_store = LocalResultStore(session.settings.local_storage_path, serializers)
                result_store.delete(entry.location)
        print(f"Removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}.")
        return 0
    entries = store.read_cache_entries()
    if args.json:
        print(json.dumps([{
            "key": e.key, "task_name": e.task_name, "task_run_id": e.task_run_id, "location": e.location,
            "serializer": e.serializer, "created": _iso(e.created), "expires": _iso(e.expiration),
            "expired": e.is_expired(), "size": e.size, "digest": e.digest} for e in entries], indent=2))
        return 0
    if not entries:
        print("The cache is empty.")
        return 0
    rows = [[e.key if len(e.key) <= 24 else e.key[:21] + "...", e.task_name, _when(e.created),
             ("expired " if e.is_expired() else "") + _when(e.expiration) if e.expiration else "never",
             "-" if e.size is None else str(e.size)] for e in entries]
    print(_table(rows, ["KEY", "TASK", "CREATED", "EXPIRES", "SIZE"]))
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

    session = _session()
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
        print(_table(rows, ["PLUGIN", "SOURCE", "DETAIL", "STATUS", "HOOKS"]))
        if failed:
            print("\nErrors:")
            for r in failed:
                print(f"  {shown(_plugin_name_and_detail(r)[0])}: {shown(r.status, lines=True)}")
    if failed:
        names = ", ".join(quoted(r.name) for r in failed)
        print(f"headwater: error: {len(failed)} plugin(s) failed to load: {names}", file=sys.stderr)
        return 1
    return 0


#: Log lines ``runs show`` prints by default (the first and the last half).
LOG_LINES = 200


def _log_count(text: str) -> int | str:
    """An argparse type for ``--logs``: a whole number of at least 1, or ``all``."""
    if text.lower() == "all":
        return "all"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 or 'all', got {text!r}")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


@hookimpl
def headwater_add_commands(cli: Any) -> None:
    runs = cli.add_parser("runs", help="list recent flow runs, or show one")
    runs.add_argument("--limit", type=_positive_int, default=20, help="how many runs (default 20)")
    runs.add_argument("--flow", help="only runs of this flow")
    runs.add_argument("--state", help="only runs in this state (type or name)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="show|retry")
    show = runs_sub.add_parser("show", help="a flow run's state history and task runs")
    show.add_argument("run", help="flow run id (or its first characters) or name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--logs", type=_log_count, default=None, metavar="N|all",
                      help=f"how many log lines: the first and last N/2 (default {LOG_LINES}; "
                           f"with --json every line unless given), or all")
    retry = runs_sub.add_parser(
        "retry", help="run a failed flow run again from where it failed",
        description="Run a Failed, Crashed or Cancelled flow run again as a new attempt of the same "
                    "run (same id, same parameters, the flow loaded from where it was defined). Task "
                    "runs that completed before with a persisted result are reused, not run again.")
    retry.add_argument("run", help="flow run id (or its first characters) or name")
    retry.add_argument("--force", action="store_true", help="also retry a Completed run")
    runs.set_defaults(func=cmd_runs)
    show.set_defaults(func=cmd_runs)
    retry.set_defaults(func=cmd_runs)

    cache = cli.add_parser("cache", help="list or clear cache entries")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ls|clear", required=True)
    ls = cache_sub.add_parser("ls", help="list cache entries")
    ls.add_argument("--json", action="store_true", help="print JSON")
    clear = cache_sub.add_parser("clear", help="delete cache entries and their result files")
    clear.add_argument("--expired", action="store_true", help="only expired entries")
    clear.add_argument("--task", help="only entries written by this task")
    clear.add_argument("--yes", action="store_true", help="confirm")
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
