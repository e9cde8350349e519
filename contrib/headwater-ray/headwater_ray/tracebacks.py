"""A worker's exception, shown with the file names of the user's code.

A function pickled by value (a script's, a project module's) runs on the worker under
the file name ``<dynamic-code>`` (cloudpickle drops the real one). Its frames come back
with the exception (``worker._keep_traceback``); here they get the task's own file
again, so the traceback shows the user's source lines.
"""

from __future__ import annotations

from typing import Any

__all__ = ["restore_file_names"]

DYNAMIC = "<dynamic-code>"


def restore_file_names(error: Any, task: Any) -> None:
    """Name ``<dynamic-code>`` frames in ``error`` (and the exceptions chained to it) after
    the file that defines ``task``: only that module is pickled by value (or
    ``__main__``, the same file)."""
    code = getattr(getattr(task, "fn", None), "__code__", None)
    if code is None or not isinstance(error, BaseException):
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
