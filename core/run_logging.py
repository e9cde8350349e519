"""Run loggers: ``get_run_logger()`` and the records the engine writes.

Records carry ``run_label`` (``Flow run 'red-orca'`` or ``Task run 'load-1a2b3c4d-0'``)
plus ``flow_run_id`` and ``task_run_id``, so a handler can format them or file them
under their run. Only loggers named ``headwater.*`` are used; the root logger is never
touched (the console_log plugin configures the handler).
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import logging
import threading
import time
from typing import Any, Iterator

from .engine.context import flow_run_ctx, task_run_ctx

engine_logger = logging.getLogger("headwater.engine")
flow_logger = logging.getLogger("headwater.flow_runs")
task_logger = logging.getLogger("headwater.task_runs")

# Flow runs active in this process, so that threads a task starts (which do not inherit
# context variables) still log under the run when only one run (or one chain of
# nested subflow runs) is active.
_active_flow_contexts: list[Any] = []
_active_lock = threading.Lock()


class RunLogger(logging.LoggerAdapter):
    """A logger that stamps records with the run they belong to."""

    def __init__(self, logger: logging.Logger, label: str, flow_run_id: str | None,
                 task_run_id: str | None) -> None:
        super().__init__(logger, {"run_label": label, "flow_run_id": flow_run_id,
                                  "task_run_id": task_run_id})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


def flow_extra(flow_context: Any) -> dict[str, Any]:
    """The ``extra`` of a flow run's log records, from its flow run context."""
    flow_run = flow_context.flow_run
    return {"run_label": flow_context.label, "flow_run_id": flow_run.id if flow_run else None,
            "task_run_id": None}


def task_extra(context: Any) -> dict[str, Any]:
    """The ``extra`` of a task run's log records, from its
    :class:`~headwater.policy.TaskRunContext` (``task_run`` and ``flow_run``)."""
    flow_run = context.flow_run
    return {"run_label": f"Task run {context.task_run.name!r}",
            "flow_run_id": flow_run.id if flow_run else None, "task_run_id": context.task_run.id}


#: The routine lines about task runs and flow runs that :func:`log_line` marks, so that a
#: handler can count them instead of printing each (``record.run_event`` on a LogRecord).
TASK_CREATED = "task_created"
TASK_FINISHED = "task_finished"
FLOW_FINISHED = "flow_finished"


class RunLine:
    """One of the engine's routine lines about a run, before any ``LogRecord`` is made.

    Handlers with a ``handle_run_line(line)`` method (the console and the run log store)
    take the line as it is: no record, no formatting until someone reads ``message``.
    Every other handler gets the ``LogRecord`` that :meth:`record` makes, once.

    ``event`` is one of :data:`TASK_CREATED`, :data:`TASK_FINISHED`, :data:`FLOW_FINISHED`
    (or ``None``); ``state`` is the final state a ``*_FINISHED`` line reports.
    """

    __slots__ = ("logger", "levelno", "created", "msg", "args", "extra", "event", "state", "_message")

    def __init__(self, logger: logging.Logger, levelno: int, msg: str, args: tuple[Any, ...],
                 extra: dict[str, Any], event: str | None = None, state: Any = None,
                 created: float | None = None) -> None:
        self.logger = logger
        self.levelno = levelno
        self.created = time.time() if created is None else created
        self.msg = msg
        self.args = args
        self.extra = extra
        self.event = event
        self.state = state
        self._message: str | None = None

    @property
    def levelname(self) -> str:
        return logging.getLevelName(self.levelno)

    @property
    def message(self) -> str:
        """The line's text, formatted on first use (``msg % args``)."""
        message = self._message
        if message is None:
            message = self._message = self.msg % self.args if self.args else self.msg
        return message

    def record(self) -> logging.LogRecord:
        """The ``LogRecord`` a plain handler expects, with ``run_event`` and ``run_state``."""
        logger = self.logger
        record = logger.makeRecord(logger.name, self.levelno, "(headwater)", 0, self.msg, self.args,
                                   None, "(engine)",
                                   {**self.extra, "run_event": self.event, "run_state": self.state})
        record.created = self.created
        record.msecs = (self.created - int(self.created)) * 1000
        if self._message is not None:
            record.message = self._message
        return record


def log_line(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...],
             extra: dict[str, Any], event: str | None = None, state: Any = None,
             created: float | None = None) -> None:
    """Log one of the engine's own per-run lines; callers check ``isEnabledFor`` first.

    The same as ``logger.log(level, msg, *args, extra=extra)`` for every handler on the
    way up, but a handler that knows :class:`RunLine` gets one instead of a record: at the
    default INFO level these lines, two per task run, were most of what a task run cost
    (a record each, the calling frame looked up, formatted twice, a write each).
    """
    line = RunLine(logger, level, msg, args, extra, event, state, created)
    if logger.filters or logger.disabled:  # a filter on the logger must see a record
        logger.handle(line.record())
        return
    record = None
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found = True
            if level < handler.level:
                continue
            fast = getattr(handler, "handle_run_line", None)
            if fast is not None and not handler.filters:
                fast(line)
            else:
                if record is None:
                    record = line.record()
                handler.handle(record)
        current = current.parent if current.propagate else None  # type: ignore[assignment]
    if not found and logging.lastResort is not None and level >= logging.lastResort.level:
        logging.lastResort.handle(line.record())


def flow_run_ended(logger: logging.Logger, flow_run_id: str) -> None:
    """Tell the handlers that know run lines (their ``end_flow_run``) that a flow run
    ended without its "Finished in state" line, its logger being above INFO: the
    console's progress for it must not stay on the screen."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            end = getattr(handler, "end_flow_run", None)
            if end is not None:
                end(flow_run_id)
        current = current.parent if current.propagate else None  # type: ignore[assignment]


def record_message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or, when the arguments do not fit the format (a call such
    as ``logger.info("%s %s", 1)``), the format and arguments as they were given: the line
    is kept (the console, the run store) and the run goes on, where a plain logging
    filter would have raised into the task."""
    try:
        return record.getMessage()
    except Exception as exc:  # noqa: BLE001 - whatever the user's arguments raise
        try:
            given = f"{record.msg!r} % {record.args!r}"
        except Exception:  # noqa: BLE001 - an argument whose repr raises too
            given = repr(record.msg)
        return f"{given} (could not be formatted: {type(exc).__name__}: {exc})"


def get_run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The logger of the active task run or flow run; outside a run, a plain logger.

    Works in tasks, flows, and threads they start (while one flow run is active).
    Inside ``with disable_run_logger():`` it is a logger that drops every record.
    """
    if run_logger_disabled.get():
        return _DISABLED_LOGGER
    task_context = task_run_ctx.get()
    if task_context is not None:
        return RunLogger(task_logger, **_unpack(task_extra(task_context)))
    flow_context = flow_run_ctx.get()
    if flow_context is None or flow_context.flow_run is None:
        with _active_lock:
            flow_context = _innermost_of_one_chain(_active_flow_contexts)
    if flow_context is not None and flow_context.flow_run is not None:
        return RunLogger(flow_logger, **_unpack(flow_extra(flow_context)))
    return logging.getLogger("headwater")


#: Set inside ``with disable_run_logger():``. A context variable, not a switch on the
#: shared loggers, so a block in one thread (a test calling ``task.fn()``) leaves the
#: runs of other threads logging as usual.
run_logger_disabled: contextvars.ContextVar[bool] = contextvars.ContextVar("headwater_run_logger_disabled",
                                                                           default=False)

# Not registered with logging's manager (so no configuration can enable it again), and
# disabled: each call returns at its first check.
_DISABLED_LOGGER = logging.Logger("headwater.disabled")
_DISABLED_LOGGER.disabled = True
_DISABLED_LOGGER.propagate = False


@contextlib.contextmanager
def disable_run_logger() -> Iterator[None]:
    """Make :func:`get_run_logger` return a logger that drops every record, inside the
    block: for calling a task's or flow's function directly (``my_task.fn(...)``, in a
    unit test, say) without its log lines. The engine's own lines are not affected."""
    token = run_logger_disabled.set(True)
    try:
        yield
    finally:
        run_logger_disabled.reset(token)


def _innermost_of_one_chain(active: list[Any]) -> Any:
    """The innermost active flow run when they all nest (a flow, its subflow, ...).

    A thread does not inherit context variables, so this is how it finds its run. With
    unrelated flow runs active at once (threads running flows) it cannot know: None.
    """
    if not active:
        return None
    for outer, inner in zip(active, active[1:]):
        if inner.flow_run is None or outer.flow_run is None or \
                inner.flow_run.parent_flow_run_id != outer.flow_run.id:
            return None
    return active[-1]


def _unpack(extra: dict[str, Any]) -> dict[str, Any]:
    return {"label": extra["run_label"], "flow_run_id": extra["flow_run_id"],
            "task_run_id": extra["task_run_id"]}


def activate(flow_context: Any) -> None:
    with _active_lock:
        _active_flow_contexts.append(flow_context)


def deactivate(flow_context: Any) -> None:
    with _active_lock:
        if flow_context in _active_flow_contexts:
            _active_flow_contexts.remove(flow_context)


# -- log_prints -------------------------------------------------------------------------

log_prints_var: contextvars.ContextVar[bool] = contextvars.ContextVar("headwater_log_prints", default=False)
_original_print = builtins.print
_print_patched = False


def _print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
           flush: bool = False) -> None:
    import sys

    if log_prints_var.get() and (file is None or file is sys.stdout):
        get_run_logger().info((sep if sep is not None else " ").join(str(a) for a in args))
        return
    _original_print(*args, sep=sep, end=end, file=file, flush=flush)


def enable_log_prints() -> None:
    """Route ``print`` (to stdout) inside runs with ``log_prints=True`` to the run logger.

    Installed on first use only; outside such runs it prints as usual.
    """
    global _print_patched
    if not _print_patched:
        builtins.print = _print
        _print_patched = True
