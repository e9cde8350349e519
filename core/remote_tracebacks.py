"""A worker's exception, and the tracebacks in its log lines, shown with the file names
of the user's code.

A function pickled by value (a script's, a project module's) runs on a remote runner's
worker under the file name ``<dynamic-code>`` (cloudpickle drops the real one). Its
frames come back with the exception; here, in the flow process, they get the task's own
file again, so tracebacks show the user's source lines
(:meth:`headwater.remote_runner.RemoteTaskRunner.adjust_outcome`).

``tblib`` (to rebuild a traceback) is imported only when one needs renaming: the remote
runners' packages bring it (``distributed`` depends on it, ``headwater-ray`` declares it).
"""

from __future__ import annotations

import linecache
import re
from typing import Any

__all__ = ["restore_file_names", "restore_file_names_in_logs"]

DYNAMIC = "<dynamic-code>"

# A frame's line in a formatted traceback, as the worker wrote it (with no source line
# after it: the worker has no file to read it from).
_DYNAMIC_FRAME = re.compile(r'^( *)File "<dynamic-code>", line (\d+), in (.*)$', re.MULTILINE)


def restore_file_names(error: Any, task: Any) -> None:
    """Name ``<dynamic-code>`` frames in ``error`` (and the exceptions chained to it) after
    the file that defines ``task``: only that module is pickled by value (or
    ``__main__``, the same file)."""
    if not isinstance(error, BaseException):  # most runs: nothing to rename
        return
    code = getattr(getattr(task, "fn", None), "__code__", None)
    if code is None:
        return
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _has_dynamic(current.__traceback__):
            current.__traceback__ = _renamed(current.__traceback__, code.co_filename)
        pending += [current.__cause__, current.__context__]


def _has_dynamic(tb: Any) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == DYNAMIC:
            return True
        tb = tb.tb_next
    return False


def _renamed(tb: Any, filename: str) -> Any:
    from tblib import Traceback

    data = Traceback(tb).as_dict()
    node = data
    while node is not None:
        f_code = node["tb_frame"]["f_code"]
        if f_code["co_filename"] == DYNAMIC:
            f_code["co_filename"] = filename
            node["tb_frame"]["f_globals"] = {**node["tb_frame"]["f_globals"], "__file__": filename}
        node = node["tb_next"]
    return Traceback.from_dict(data).as_traceback()


def restore_file_names_in_logs(rows: list[Any], task: Any) -> None:
    """The same for the tracebacks in a run's captured log lines (an "Encountered
    exception" line, a ``logger.exception`` of the user's), formatted on the worker: each
    ``<dynamic-code>`` frame gets the task's file and, read from it here, its source line.
    ``rows`` are the outcome's ``(created, level, logger, message, label, event)`` tuples,
    changed in place."""
    dynamic = [index for index, row in enumerate(rows) if DYNAMIC in row[3]]
    if not dynamic:  # most runs: nothing to rename
        return
    code = getattr(getattr(task, "fn", None), "__code__", None)
    if code is None:
        return
    filename = code.co_filename

    def named(match: re.Match[str]) -> str:
        indent, line, name = match.group(1), match.group(2), match.group(3)
        text = f'{indent}File "{filename}", line {line}, in {name}'
        source = linecache.getline(filename, int(line)).strip()
        return f"{text}\n{indent}    {source}" if source else text

    for index in dynamic:
        row = rows[index]
        rows[index] = (*row[:3], _DYNAMIC_FRAME.sub(named, row[3]), *row[4:])
