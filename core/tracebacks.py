"""Tracebacks that show the user's code, not headwater's machinery.

A task's exception passes through the run loop (``execute_sync``, ``call``, ...) and, on
its way back to the caller, through ``State.result`` and the flow's run loop. Those
frames say nothing about the user's bug, so the tracebacks headwater logs and the
exceptions it re-raises leave them out: frames in headwater's own package directory,
its built-in plugins and pluggy. The user's frames, the exception and its chaining
(``__cause__``, ``__context__``) are kept as they are.

Escape hatch: with ``HEADWATER_LOGGING_LEVEL=DEBUG`` (or the ``headwater`` logger set to
DEBUG any other way) every traceback is shown in full.

Only failure paths call this module; a task that succeeds never does.
"""

from __future__ import annotations

import logging
import os
import traceback
import types
from typing import Any

from .errors import HeadwaterError

__all__ = ["describe", "for_log", "format_exception", "full_tracebacks", "logged_in", "trimmed",
           "without_headwater_frames"]


def describe(exc: BaseException) -> str:
    """``"ValueError: bad input"`` (just ``"ValueError"`` without a message). An exception
    whose ``__str__`` raises is still described, so the run it ended is recorded Failed
    like any other, not crashed by the engine formatting its message."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as str_exc:  # noqa: BLE001 - any error of user code
        return f"{name} (its message could not be made: str() raised {type(str_exc).__name__})"
    return f"{name}: {text}" if text else name


def _internal_dirs() -> tuple[str, ...]:
    import pluggy

    # layering: the default plugins' frames are machinery too; only their path is read
    import headwater.plugins

    dirs = [os.path.dirname(os.path.abspath(__file__)),
            os.path.dirname(os.path.abspath(headwater.plugins.__file__)),
            os.path.dirname(os.path.abspath(pluggy.__file__))]
    return tuple(d + os.sep for d in dirs)


_DIRS: tuple[str, ...] | None = None
_LOGGED_IN = "_headwater_logged_in"  # attribute set on an exception once a run logged it


def _is_internal(filename: str) -> bool:
    global _DIRS
    if _DIRS is None:
        _DIRS = _internal_dirs()
    return filename.startswith(_DIRS)


def full_tracebacks() -> bool:
    """Whether tracebacks are kept whole: the ``headwater`` logger is at DEBUG."""
    return logging.getLogger("headwater").isEnabledFor(logging.DEBUG)


def trimmed(tb: types.TracebackType | None,
            exc: BaseException | None = None) -> types.TracebackType | None:
    """A copy of traceback ``tb`` without headwater's frames (``tb`` itself is unchanged).

    ``tb`` is returned as it is when it has no such frames, and when it has nothing else
    and ``exc`` is not a headwater error: an exception raised only inside headwater is
    probably a bug in it, and its frames are what a bug report needs. headwater's own
    errors (bad settings, timeouts) need no traceback at all: ``None``.
    """
    kept = []
    total = 0
    entry = tb
    while entry is not None:
        total += 1
        if not _is_internal(entry.tb_frame.f_code.co_filename):
            kept.append(entry)
        entry = entry.tb_next
    if len(kept) == total:
        return tb
    if not kept:
        return None if _is_headwater_error(type(exc)) else tb
    new: types.TracebackType | None = None
    for entry in reversed(kept):
        new = types.TracebackType(new, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return new


def without_headwater_frames(exc: BaseException) -> BaseException:
    """Drop headwater's frames from ``exc`` and the exceptions chained to it; return it.

    For re-raising to the caller (``raise without_headwater_frames(exc)``). A no-op when
    :func:`full_tracebacks` is on.
    """
    if full_tracebacks():
        return exc
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = trimmed(current.__traceback__, current)
        todo.append(current.__cause__)  # type: ignore[arg-type]
        todo.append(current.__context__)  # type: ignore[arg-type]
        todo.extend(getattr(current, "exceptions", ()) or ())
    return exc


def for_log(exc: BaseException, logged_in: str) -> Any:
    """``exc_info`` for logging ``exc`` with a trimmed traceback, and remember that
    ``logged_in`` (e.g. ``"Task run 'load-1a2b3c4d-0'"``) logged it."""
    try:
        setattr(exc, _LOGGED_IN, logged_in)
    except (AttributeError, TypeError):  # an exception type that refuses attributes
        pass
    if full_tracebacks():
        return exc
    return (type(exc), exc, trimmed(exc.__traceback__, exc))


def logged_in(exc: BaseException) -> str | None:
    """The run that already logged ``exc`` with its traceback (see :func:`for_log`)."""
    value = getattr(exc, _LOGGED_IN, None)
    return value if isinstance(value, str) else None


def format_exception(exc_info: Any) -> str:
    """Format ``exc_info`` (a logging record's) without headwater's frames, chained
    exceptions included; in full when :func:`full_tracebacks` is on."""
    etype, value, tb = exc_info
    if full_tracebacks() or value is None:
        return "".join(traceback.format_exception(etype, value, tb)).rstrip("\n")
    summary = traceback.TracebackException(etype, value, tb)
    seen: set[int] = set()
    todo = [summary]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        kept = [frame for frame in current.stack if not _is_internal(frame.filename)]
        if kept or (current.stack and _is_headwater_error(current.exc_type)):
            current.stack = traceback.StackSummary.from_list(kept)
        todo.append(current.__cause__)
        todo.append(current.__context__)
        todo.extend(getattr(current, "exceptions", None) or ())
    return "".join(summary.format()).rstrip("\n")


def _is_headwater_error(exc_type: Any) -> bool:
    return isinstance(exc_type, type) and issubclass(exc_type, HeadwaterError)
