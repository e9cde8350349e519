"""How the ``headwater`` command prints runs for people and for scripts: times,
durations, aligned tables, state names and log levels in colour, runs and states as JSON
objects, and the argument types its options share."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from typing import Any, Callable, Mapping

from .cli_text import quoted, shown
from .colours import paint_level, paint_state


def current_session() -> Any:
    from headwater.session import Session

    return Session.current()


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat()


def duration_text(start: float | None, end: float | None) -> str:
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


def table(rows: list[list[str]], headers: list[str],
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


def state_name(name: str, colour: bool, width: int = 0) -> str:
    """A state's name escaped and padded to ``width``, in its colour when ``colour``."""
    text = shown(name)
    # The colour is looked up by the escaped name: it equals a palette name only when the
    # recorded name does, so an odd name is never painted as another state.
    return (paint_state(text, text) if colour else text) + " " * (width - len(text))


def level_name(level: str, colour: bool, width: int = 0) -> str:
    """A log level's name escaped and padded to ``width``, in its colour when ``colour``."""
    text = shown(level)
    return (paint_level(text) if colour else text) + " " * (width - len(text))


def state_text(state: Any, colour: bool = False) -> str:
    return state_name(state.name, colour) if state is not None else "-"


def state_line(state: Any, colour: bool = False) -> str:
    """A state as ``str(state)`` gives it (``Failed('boom')``), its name and message
    escaped and quoted as the console shows them; the name in its colour when ``colour``."""
    parts = [quoted(state.message)] if state.message else []
    if state.shows_type():
        parts.append(f"type={state.type.name}")
    return f"{state_name(state.name, colour)}({', '.join(parts)})"


def run_dict(run: Any) -> dict[str, Any]:
    out = {
        "id": run.id,
        "name": run.name,
        "state": run.state.type.value if run.state else None,
        "state_name": run.state.name if run.state else None,
        "message": run.state.message if run.state else None,
        "parameters": run.parameters,
        "tags": sorted(run.tags),
        "start_time": iso(run.start_ts),
        "end_time": iso(run.end_ts),
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


def parameters_text(parameters: dict[str, Any]) -> str:
    """The parameters as JSON on one line, each long value cut with its full length."""
    parts = []
    for key, value in parameters.items():
        text = json.dumps(value, default=repr)
        if len(text) > PARAMETER_CHARS:
            text = f"{text[:PARAMETER_CHARS]}... ({len(text)} characters)"
        parts.append(f"{json.dumps(str(key))}: {text}")
    return shown("{" + ", ".join(parts) + "}")  # JSON leaves DEL as it is


def state_dict(state: Any) -> dict[str, Any]:
    return {"type": state.type.value, "name": state.name, "message": state.message,
            "timestamp": iso(state.ts)}



def subflow_mark() -> str:
    """The prefix of a subflow run's name in ``headwater runs`` (ASCII when stdout is)."""
    try:
        "↳".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "> "
    return "↳ "



def state_words() -> tuple[list[str], list[str]]:
    """The state types (``COMPLETED``) and state names (``Cached``) ``--state`` accepts."""
    import inspect

    from headwater import states

    types = [t.value for t in states.StateType]
    # The state makers (``Cached()``) are functions named after the state they make.
    names = [n for n in states.__all__ if inspect.isfunction(getattr(states, n, None))
             and getattr(states, n).__name__ == n and n.upper() not in types]
    return types, names


def known_state(store: Any, text: str) -> bool:
    """A built-in state type or name, or a custom state name some run is in."""
    types, names = state_words()
    if text.upper() in types or text.lower() in {n.lower() for n in names}:
        return True
    return bool(store.read_flow_runs(limit=1, state=text))



#: Log lines ``runs show`` prints by default (the first and the last half).
LOG_LINES = 200


def log_count(text: str) -> int | str:
    """An argparse type for ``--logs``: a whole number of at least 1, or ``all``."""
    if text.lower() == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 or 'all', got {text!r}")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value



def no_such_run(text: str) -> str:
    """The one-line error for a flow run id, id prefix or name that names no run."""
    short_id = len(text) < 6 and all(c in "0123456789abcdef-" for c in text.lower())
    hint = "; an id prefix needs at least 6 characters" if short_id else ""
    return f"headwater: error: no flow run with id or name {text!r}{hint}; `headwater runs` lists recent ones"


def find_flow_run(store: Any, text: str) -> Any:
    """The flow run ``text`` names (id, id prefix of 6 or more, or name: the newest run
    of it), or None after printing :func:`no_such_run` to stderr."""
    run = store.read_flow_run(text)
    if run is None:
        print(no_such_run(text), file=sys.stderr)
    return run


def unicode_ok(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout) can print the marks ``↳ ✓ ✗`` (else ASCII is used)."""
    try:
        "↳✓✗…".encode(getattr(stream or sys.stdout, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


#: State types a task-count cell counts as done well, and as gone wrong.
GOOD_TYPES = ("COMPLETED",)
BAD_TYPES = ("FAILED", "CRASHED", "CANCELLED")


def task_count_text(counts: Any, marks: bool = True) -> str:
    """A flow run's task runs in one cell: ``1,996 ✓ 4 ✗ 3 …`` (completed, failed, crashed
    or cancelled, still going or waiting), each part only when not zero; ``0`` for none.
    Without ``marks`` (stdout is not Unicode) ``ok``, ``failed`` and ``other`` instead."""
    if not counts.total:
        return "0"
    good = sum(counts.by_type.get(t, 0) for t in GOOD_TYPES)
    bad = sum(counts.by_type.get(t, 0) for t in BAD_TYPES)
    other = counts.total - good - bad
    words = ("✓", "✗", "…") if marks else ("ok", "failed", "other")
    parts = [f"{n:,} {w}" for n, w in zip((good, bad, other), words) if n]
    return " ".join(parts)


def counts_dict(counts: Any) -> dict[str, Any]:
    """A :class:`headwater.stores.StateCounts` as JSON: total, by state type, by state name."""
    return {"total": counts.total, "by_type": dict(counts.by_type), "by_name": dict(counts.by_name)}


#: Units of a duration as ``--older-than`` takes them, in seconds.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


#: The longest duration ``--older-than`` takes: further back is before any run was made.
MAX_DURATION_DAYS = 36_500

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """An argparse type: ``30d``, ``12h``, ``90m``, ``45s``, ``2w``, ``1.5h`` or ``0s``
    in seconds (a plain number and one unit; at most 100 years)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30d, 12h, 90m or 0s "
                                         f"(s, m, h, d or w after a number), got {text!r}")
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise argparse.ArgumentTypeError(f"expected a duration of at most {MAX_DURATION_DAYS}d (100 years), "
                                         f"got {text!r}")
    return seconds


def confirm(question: str, yes: bool, what: str) -> bool | None:
    """Whether to go on: True with ``--yes``; asked on a terminal; otherwise None after
    printing that ``what`` needs ``--yes`` (the caller exits 2)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"headwater: error: {what} deletes recorded runs; add --yes to confirm (stdin is not a terminal)",
              file=sys.stderr)
        return None
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def no_runs_text(url: str) -> str:
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
