"""Run logs in the run store: the console's lines, filed under their flow run and task run.

A handler on the ``headwater`` logger keeps every record that belongs to a run (records
carry ``flow_run_id`` / ``task_run_id``, see ``headwater.run_logging``) as one tuple in
a buffer, and hands the buffer to ``store.record_logs`` in batches. The SQLite store
writes those on its background writer, so a task run pays one tuple append per line.

The buffer is handed over when a flow-level line is logged (every flow run ends with
one: ``Finished in state ...``), when a warning or error is logged, when it holds
``BATCH`` lines, or, by a thread that looks every ``AGE_SECONDS``, when it has waited that
long: a task's lines then reach the store, and other machines reading it, within about
a second, and a process killed in a long task loses at most its last second of them. ``headwater runs show`` and the dashboard read the lines back with
``store.read_logs(flow_run_id=...)``.

The engine's own lines reach the handler as :class:`~headwater.run_logging.RunLine`
objects through ``handle_run_line``, without a ``LogRecord``. A task run's two routine
lines ("Created task run ...", "Finished in state ...") are not written at all: its
record holds what they say, so the flow run gets one marker row and the store words
them when they are read (``headwater.task_lines``); ``read_logs`` returns them with the
others, in order.

A line is filed the way the console labels it (its ``run_label``): under its task run
when the label is ``Task run '...'``, else under its flow run only. ``runs show`` labels
flow-level lines of ``headwater.flow_runs`` and ``headwater.task_runs`` with the flow run, others (such as
``headwater.engine - Created flow run ...``, which has no run label) with the logger name,
as the console does.

Disable with ``HEADWATER_DISABLE_PLUGINS=run_logs``: nothing is recorded then.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from headwater.plugin_manager import hookimpl
from headwater.run_logging import FLOW_FINISHED, TASK_CREATED, TASK_FINISHED, RunLine, record_message
from headwater.task_lines import marker_row

#: Lines buffered before they are handed to the store even without a flow-level line.
BATCH = 256
#: Seconds a line waits in the buffer at most before the drain thread hands it over.
AGE_SECONDS = 1.0

#: Flow runs remembered as marked (see ``RunLogHandler.routine``) before starting afresh.
MARKED_KEPT = 4096

_handler: RunLogHandler | None = None
_formatter = logging.Formatter()


class RunLogHandler(logging.Handler):
    """Buffers run records as ``(flow_run_id, task_run_id, ts, level, logger, message)``.

    Lines go to the run store of the session that configured the handler most recently
    and is still open (one session per process, in practice).
    """

    def __init__(self) -> None:
        super().__init__()
        # A deque: append and popleft are atomic, so emitters in worker threads and a
        # drain in another thread need no lock.
        self.buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self.sessions: list[Any] = []
        #: Flow runs whose marker row is filed (until their "Finished in state" line).
        self.marked: set[str] = set()

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # Overridden (not emit) to skip Handler's lock: this runs for every run log line.
        data = record.__dict__
        flow_run_id = data.get("flow_run_id")
        task_run_id = data.get("task_run_id")
        if flow_run_id is None and task_run_id is None:
            return False
        event = data.get("run_event")
        if event is not None and self.routine(event, flow_run_id, record.created):
            return True
        # Handed over at once for flow-level records only: a flow's "Created task run"
        # lines carry a task run id and stay batched.
        now = task_run_id is None or record.levelno >= logging.WARNING
        if task_run_id is not None and flow_run_id is not None:
            label = data.get("run_label")
            if label is not None and not label.startswith("Task run"):
                # Filed as the console labels it: "Created task run ..." is a line of the
                # flow run (it carries the new task run's id only for context).
                task_run_id = None
        # Format now: the arguments may change after the call returns.
        message = data.get("message")  # set by a formatter that ran before us, if any
        if message is None:
            message = record_message(record) if record.args else str(record.msg)
        if record.exc_info:
            # Cached on the record the way logging.Formatter does, for the handlers after us.
            if not record.exc_text:
                record.exc_text = _formatter.formatException(record.exc_info)
            message += "\n" + record.exc_text
        buffer = self.buffer
        buffer.append((flow_run_id, task_run_id, record.created, record.levelname, record.name, message))
        if now or len(buffer) >= BATCH:
            self.drain()
        return True

    def handle_run_line(self, line: RunLine) -> None:
        """The engine's lines, without a record: a task run's routine two are not written
        (see :meth:`routine`); a flow run's "Finished" line is, as one tuple."""
        extra = line.extra
        if self.routine(line.event, extra["flow_run_id"], line.created):
            return
        task_run_id = extra["task_run_id"]
        now = task_run_id is None or line.levelno >= logging.WARNING
        if task_run_id is not None and not extra["run_label"].startswith("Task run"):
            task_run_id = None  # filed as the console labels it (see handle)
        buffer = self.buffer
        buffer.append((extra["flow_run_id"], task_run_id, line.created, line.levelname, line.logger.name,
                       line.message))
        if now or len(buffer) >= BATCH:
            self.drain()

    def end_flow_run(self, flow_run_id: str) -> None:
        """A flow run ended without its "Finished in state" line: its marking ends."""
        self.marked.discard(flow_run_id)

    def routine(self, event: str | None, flow_run_id: str | None, ts: float) -> bool:
        """Whether a line is a task run's routine line ("Created task run", "Finished in
        state"), kept as its flow run's marker row instead of a row of its own: the store
        words it from the task run's record when it is read (``headwater.task_lines``).
        A flow run's own "Finished" line ends its marking."""
        if flow_run_id is None:
            return False
        if event == FLOW_FINISHED:
            self.marked.discard(flow_run_id)
            return False
        if event != TASK_CREATED and event != TASK_FINISHED:
            return False
        if flow_run_id not in self.marked:
            if len(self.marked) >= MARKED_KEPT:
                # Flow runs whose task runs went on after their Finished line (workers
                # draining after Ctrl-C) are never unmarked: forgetting them all costs at
                # most a second marker row each, which reading takes as one.
                self.marked.clear()
            self.marked.add(flow_run_id)
            self.buffer.append(marker_row(flow_run_id, ts))
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def start_draining(self) -> None:
        """Start the thread that hands over lines that waited ``AGE_SECONDS`` (once)."""
        if getattr(self, "_stop", None) is not None:
            return
        self._stop = threading.Event()
        threading.Thread(target=self._drain_now_and_then, args=(self._stop,), name="headwater-run-logs",
                         daemon=True).start()

    def stop_draining(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._stop = None

    def _drain_now_and_then(self, stop: threading.Event) -> None:
        # Nothing on the logging path: emitters only append; this thread looks at the
        # buffer every AGE_SECONDS and hands over whatever is there.
        while not stop.wait(AGE_SECONDS):
            if self.buffer:
                self.drain()

    def drain(self) -> None:
        """Hand every buffered line to the run store (it writes them in the background)."""
        rows = []
        buffer = self.buffer
        while True:
            try:
                rows.append(buffer.popleft())
            except IndexError:
                break
        if not rows or not self.sessions:
            return
        try:
            store = self.sessions[-1].store
            store.record_logs(rows)
        except Exception:
            # A closed or broken store must not break the run that logged: the run's
            # states are recorded (and reported) by the engine; log lines are a convenience.
            pass


@hookimpl
def headwater_configure(session: Any) -> None:
    global _handler
    if _handler is None:
        _handler = RunLogHandler()
        logging.getLogger("headwater").addHandler(_handler)
    if session not in _handler.sessions:
        _handler.sessions.append(session)
    _handler.start_draining()


@hookimpl
def headwater_unconfigure(session: Any) -> None:
    global _handler
    if _handler is None:
        return
    if session in _handler.sessions:
        _handler.sessions.remove(session)
    if not _handler.sessions:
        _handler.stop_draining()
        _handler.drain()  # no open session is left to take them: they are dropped
        logging.getLogger("headwater").removeHandler(_handler)
        _handler = None
