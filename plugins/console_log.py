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

_handler: logging.Handler | None = None


class RunFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ct = time.localtime(record.created)
        stamp = time.strftime("%H:%M:%S", ct) + f".{int(record.msecs):03d}"
        where = getattr(record, "run_label", None) or record.name
        line = f"{stamp} | {record.levelname:<7} | {where} - {record.getMessage()}"
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
