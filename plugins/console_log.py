"""Console logging: one handler on the ``headwater`` logger, never on the root logger.

Lines read ``12:01:02.345 | INFO    | Flow run 'red-orca' - Finished in state Completed()``;
records without a run show the logger name instead of the run.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from headwater.plugin_manager import hookimpl
from headwater.run_logging import record_message

_handler: logging.Handler | None = None


class RunFormatter(logging.Formatter):
    """``HH:MM:SS.mmm | LEVEL   | Flow run 'red-orca' - message``: a line names its run
    (``run_label``) or else its logger; tracebacks without headwater's own frames."""

    _second = -1
    _clock = ""

    def format(self, record: logging.LogRecord) -> str:
        # Called under the handler's lock, so the one-second cache needs no lock of its own:
        # strftime per line was a visible part of a task run's cost at INFO.
        second = int(record.created)
        if second != self._second:
            self._second, self._clock = second, time.strftime("%H:%M:%S", time.localtime(second))
        where = getattr(record, "run_label", None) or record.name
        # Kept on the record, as logging.Formatter does, so later handlers need not redo it.
        record.message = message = record_message(record)
        line = f"{self._clock}.{int(record.msecs):03d} | {record.levelname:<7} | {where} - {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        """The traceback without headwater's own frames (all of them at DEBUG level)."""
        from headwater.tracebacks import format_exception

        return format_exception(ei)


class ConsoleHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (so test capture and redirection work)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            # stderr is line-buffered: the newline already wrote the line out, so the
            # extra flush of StreamHandler.emit (a lock and a call per line) is skipped.
            if not getattr(stream, "line_buffering", False):
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


# Sessions that configured the handler and are still open. The handler is
# process-wide: a nested ``with Session()`` closing must not silence the outer one.
_users = 0


@hookimpl
def headwater_configure(session: Any) -> None:
    """Attach the console handler to the ``headwater`` logger (once per process)."""
    global _handler, _users
    logger = logging.getLogger("headwater")
    logger.setLevel(session.settings.logging_level)
    _users += 1
    if _handler is None:
        _handler = ConsoleHandler()
        _handler.setFormatter(RunFormatter())
        logger.addHandler(_handler)
        # headwater's lines are shown once, here; the root logger is left alone.
        logger.propagate = False


@hookimpl
def headwater_unconfigure(session: Any) -> None:
    """Detach the handler when the last session using it closes."""
    global _handler, _users
    _users = max(0, _users - 1)
    if _handler is not None and _users == 0:
        logger = logging.getLogger("headwater")
        logger.removeHandler(_handler)
        logger.propagate = True
        _handler = None
