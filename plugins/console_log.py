"""Console logging: one handler on the ``headwater`` logger, never on the root logger.

Lines read ``12:01:02.345 | INFO    | Flow run 'red-orca' - Finished in state Completed()``;
records without a run show the logger name instead of the run.

A big flow run does not print two lines per task run. ``HEADWATER_CONSOLE`` chooses:

- ``auto`` (the default): a flow run's "Created task run" and "Finished in state" lines
  are printed until it has more than :data:`LINES_UP_TO` task runs; from then on its
  progress is shown instead (``progress`` below), and a summary line comes before its
  ``Finished in state`` line.
- ``lines``: every line, however big the flow run.
- ``progress``: no per-task lines from the first task run on: on a terminal, one live
  line per running flow run, redrawn in place (counts by state, rate, elapsed) and
  cleared at the end; elsewhere (CI logs, files, pipes) a progress line every
  :data:`PROGRESS_EVERY` seconds; and the summary line.
- ``quiet``: no per-task lines and no progress; the summary line only.

Whatever the mode, a task run that fails (Failed, TimedOut, Crashed) has its "Finished in
state" line printed, and so are retries, warnings, errors, ``get_run_logger()`` lines and
``log_prints`` output (a Cancelled task run of a big flow run is counted). The run store keeps every
line either way (``run_logs``). Per-task lines come from the ``headwater.task_runs``
logger, flow-level lines from ``headwater.flow_runs``.

Lines are written at once, but for a task run's routine lines, which are written in
batches (``console_output``) within a tenth of a second. On a terminal, state names and
levels are coloured (``colours``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from headwater.errors import ConfigurationError
from headwater.plugin_manager import hookimpl
from headwater.plugins import colours
from headwater.plugins.console_output import (ConsoleOutput, register_for_exit, terminal_width,
                                              unregister_for_exit)
from headwater.plugins.console_progress import FlowTally
from headwater.run_logging import FLOW_FINISHED, TASK_CREATED, TASK_FINISHED, RunLine, record_message

#: The console modes ``HEADWATER_CONSOLE`` accepts.
MODES = ("auto", "lines", "progress", "quiet")
#: In ``auto`` mode, a flow run's per-task lines are printed up to this many task runs.
LINES_UP_TO = 20
#: Said once when a flow run passes :data:`LINES_UP_TO` task runs in ``auto`` mode.
SWITCH_NOTE = ("More than %d task runs: progress from here on instead of a line per task run "
               "(every line is in the run store; HEADWATER_CONSOLE=lines prints them all)")
#: Big flow runs remembered after they end (their late task runs are counted, not printed).
ENDED_KEPT = 64
#: Seconds between progress lines when the console is not a terminal.
PROGRESS_EVERY = 5.0

_handler: ConsoleHandler | None = None


class RunFormatter(logging.Formatter):
    """``HH:MM:SS.mmm | LEVEL   | Flow run 'red-orca' - message``: a line names its run
    (``run_label``) or else its logger; tracebacks without headwater's own frames.
    With ``colour``, the level and a reported state's name are coloured."""

    def __init__(self) -> None:
        super().__init__()
        self.colour = False
        self._clock = (-1, "")  # (second, "HH:MM:SS"): strftime per line was a visible cost

    def line(self, created: float, levelname: str, where: str, message: str, state: Any = None) -> str:
        """One console line from its parts (``state``: the state the message reports)."""
        second = int(created)
        clock = self._clock
        if clock[0] != second:
            clock = self._clock = (second, time.strftime("%H:%M:%S", time.localtime(second)))
        level = f"{levelname:<7}"
        if self.colour:
            level = colours.paint_level(levelname, level)
            if state is not None:
                shown = str(state)
                message = message.replace(shown, colours.paint_state(shown, state.name), 1)
        return f"{clock[1]}.{int((created - second) * 1000):03d} | {level} | {where} - {message}"

    def format(self, record: logging.LogRecord) -> str:
        # Kept on the record, as logging.Formatter does, so later handlers need not redo it.
        record.message = message = record_message(record)
        data = record.__dict__
        line = self.line(record.created, record.levelname, data.get("run_label") or record.name, message,
                         data.get("run_state"))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        """The traceback without headwater's own frames (all of them at DEBUG level)."""
        from headwater.tracebacks import format_exception

        return format_exception(ei)


class ConsoleHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (so test capture and redirection work), in
    batches, and shows big flow runs' progress instead of their per-task lines."""

    def __init__(self, mode: str = "auto") -> None:
        super().__init__()
        self.mode = mode
        self.tallies: dict[str, FlowTally] = {}
        #: Big flow runs that ended, newest last, for the task runs that end after them.
        self.ended: dict[str, FlowTally] = {}
        self.tally_lock = threading.Lock()
        self.output = ConsoleOutput(on_tick=self.tick, busy=self.showing_progress)
        self.setFormatter(RunFormatter())
        self._colour_for: tuple[Any, ...] = ()

    # -- the engine's routine lines ----------------------------------------------------------

    def handle_run_line(self, line: RunLine) -> None:
        """A line from the engine (see ``headwater.run_logging.log_line``): counted, or
        printed, without a ``LogRecord`` unless a formatter of the user's needs one."""
        extra = line.extra
        if line.event is not None and self.mode != "lines" and \
                not self.count(line.event, extra["flow_run_id"], line.state, extra["run_label"], line.created):
            return
        try:
            formatter = self.formatter
            if isinstance(formatter, RunFormatter):
                self._choose_colour(formatter)
                text = formatter.line(line.created, line.levelname, extra["run_label"], line.message, line.state)
            else:
                text = self.format(line.record())
            self.output.write(text, now=_urgent(line.levelno, line.event, line.state, extra))
        except RecursionError:
            raise
        except Exception:  # a formatter of the user's: reported as logging does, the run goes on
            self.handleError(line.record())

    # -- every other record ------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # Overridden (not emit) to skip Handler's lock: the output keeps lines whole.
        if not self.filter(record):
            return False
        data = record.__dict__
        event = data.get("run_event")
        if event is not None and self.mode != "lines" and \
                not self.count(event, data.get("flow_run_id"), data.get("run_state"), data.get("run_label"),
                               record.created):
            return True
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatter = self.formatter
            if isinstance(formatter, RunFormatter):
                self._choose_colour(formatter)
            data = record.__dict__
            self.output.write(self.format(record),
                              now=_urgent(record.levelno, data.get("run_event"), data.get("run_state"), data))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.output.flush()

    # -- progress ------------------------------------------------------------------------------

    def count(self, event: str, flow_run_id: str | None, state: Any, label: str | None,
              created: float | None = None) -> bool:
        """Count a routine line (logged at ``created``) into its flow run's tally; whether
        to print the line."""
        if flow_run_id is None:
            return True
        summary = None
        started = switched = False
        with self.tally_lock:
            tally = self.tallies.get(flow_run_id)
            if event == TASK_CREATED:
                if tally is None:
                    tally = self.tallies[flow_run_id] = FlowTally(label or flow_run_id)
                    tally.progress = self.mode != "auto"
                    started = tally.progress
                tally.created += 1
                if not tally.progress and tally.created > LINES_UP_TO:
                    tally.progress = started = switched = True
                show = not tally.progress
            elif event == TASK_FINISHED:
                if tally is None:
                    # Ended after its flow run did (workers still draining after Ctrl-C), or
                    # created before this handler was: counted where it can be, and shown
                    # only if it failed when its flow run's progress was on show.
                    tally = self.ended.get(flow_run_id)
                    if tally is None:
                        return True
                tally.count_finished(state.name if state is not None else "?")
                # A failure is read in full, whatever the mode; a cancelled run is counted.
                show = not tally.progress or state is None or _failed(state)
            elif event == FLOW_FINISHED:
                tally = self.tallies.pop(flow_run_id, None)
                show = True
                if tally is not None and tally.progress:
                    summary = tally
                    self.ended[flow_run_id] = tally
                    while len(self.ended) > ENDED_KEPT:
                        self.ended.pop(next(iter(self.ended)))
            else:
                return True
        if switched:  # say why the lines stop, once
            self.output.write(self._flow_line(tally.label, SWITCH_NOTE % LINES_UP_TO, created))
        if started and self.mode != "quiet":
            self.output.wake()  # the ticker shows the progress from now on
        if summary is not None:
            formatter = self.formatter
            colour = isinstance(formatter, RunFormatter) and formatter.colour
            text = summary.summary(colours.paint_state if colour else None)
            self._update_live()  # the finished run's live line goes with the next flush
            self.output.write(self._flow_line(summary.label, text, created))
        return show

    def end_flow_run(self, flow_run_id: str) -> None:
        """A flow run ended without its "Finished in state" line (its logger is above
        INFO): its progress goes, unsummarised, as its lines would have."""
        with self.tally_lock:
            tally = self.tallies.pop(flow_run_id, None)
        if tally is not None and tally.progress:
            self._update_live()
            self.output.flush(redraw=True)

    def showing_progress(self) -> bool:
        """Whether some flow run's progress is on show (the ticker keeps ticking)."""
        return self.mode != "quiet" and any(tally.progress for tally in list(self.tallies.values()))

    def tick(self) -> None:
        """Called by the output's ticker every tenth of a second while progress is on show:
        the live lines on a terminal, a progress line every few seconds elsewhere."""
        if self.mode == "quiet":
            return
        stream = sys.stderr
        if colours.is_terminal(stream):
            self._update_live(stream)
            return
        self.output.set_live([])
        now = time.monotonic()
        for tally in [t for t in list(self.tallies.values()) if t.progress]:
            at, count = tally.reported
            if now - at >= PROGRESS_EVERY and tally.finished != count:
                tally.reported = (now, tally.finished)
                self.output.write(self._flow_line(tally.label, tally.periodic(now)))

    def _update_live(self, stream: Any = None) -> None:
        stream = sys.stderr if stream is None else stream
        if self.mode == "quiet" or not colours.is_terminal(stream):
            self.output.set_live([])
            return
        width = terminal_width(stream)
        formatter = self.formatter
        paint = colours.paint_state if isinstance(formatter, RunFormatter) and formatter.colour else None
        now = time.monotonic()
        self.output.set_live([tally.live(width, paint, now)
                              for tally in list(self.tallies.values()) if tally.progress])

    def _flow_line(self, label: str, text: str, created: float | None = None) -> str:
        formatter = self.formatter
        if isinstance(formatter, RunFormatter):
            return formatter.line(time.time() if created is None else created, "INFO", label, text)
        record = logging.LogRecord("headwater.flow_runs", logging.INFO, "(headwater)", 0, text, None, None)
        record.run_label = label
        return self.format(record)

    def _choose_colour(self, formatter: RunFormatter) -> None:
        # Decided again only when the stream or the colour variables change: isatty is a
        # system call, and this runs for every printed line.
        stream = sys.stderr
        key = (stream, os.environ.get("NO_COLOR"), os.environ.get("FORCE_COLOR"), os.environ.get("TERM"))
        if key != self._colour_for:
            self._colour_for = key
            formatter.colour = colours.wants_colour(stream)

    def close(self) -> None:
        with self.tally_lock:
            self.tallies.clear()
        self.output.set_live([])
        self.output.flush(redraw=True)
        super().close()


def _failed(state: Any) -> bool:
    """A final state to print in full even in a big flow run: Failed, TimedOut, Crashed."""
    return state.is_failed() or state.is_crashed()


def _urgent(levelno: int, event: str | None, state: Any, data: dict[str, Any]) -> bool:
    """Written at once: every line but a task run's routine ones in a flow run ("Created
    task run", "Finished in state" of a run that did not fail), which are most of the
    lines and wait for the next flush (at most a tenth of a second). So a line of yours,
    a retry, an error or a failed run's line is on the screen before anything else
    happens: a process killed right after it (a segfault, SIGKILL) loses none of them."""
    if event == TASK_FINISHED:
        routine = state is None or not _failed(state)
    else:
        routine = event == TASK_CREATED
    return (not routine or levelno >= logging.WARNING
            or data.get("task_run_id") is None or data.get("flow_run_id") is None)


def console_mode(settings: Any) -> str:
    """``HEADWATER_CONSOLE``, checked: one of :data:`MODES`."""
    mode = str(getattr(settings, "console", "auto") or "auto").lower()
    if mode not in MODES:
        raise ConfigurationError(f"{settings.describe('CONSOLE', settings.console)} is not a console mode; "
                                 f"expected one of {', '.join(MODES)}")
    return mode


# Sessions that configured the handler and are still open, with the console mode and
# logging level each asked for. The handler is process-wide: a nested ``with Session()``
# closing must not silence the outer one, nor leave its own mode and level behind.
_wishes: dict[int, tuple[str, str]] = {}


@hookimpl
def headwater_configure(session: Any) -> None:
    """Attach the console handler to the ``headwater`` logger (once per process)."""
    global _handler
    mode = console_mode(session.settings)
    logger = logging.getLogger("headwater")
    logger.setLevel(session.settings.logging_level)
    _wishes[id(session)] = (mode, session.settings.logging_level)
    if _handler is None:
        _handler = ConsoleHandler(mode)
        logger.addHandler(_handler)
        register_for_exit(_handler.output)
        # headwater's lines are shown once, here; the root logger is left alone.
        logger.propagate = False
    else:
        _handler.mode = mode


@hookimpl
def headwater_unconfigure(session: Any) -> None:
    """Detach the handler when the last session using it closes; else go back to the
    console mode and level of the session opened most recently among those still open."""
    global _handler
    _wishes.pop(id(session), None)
    if _handler is None:
        return
    logger = logging.getLogger("headwater")
    if _wishes:
        _handler.mode, level = list(_wishes.values())[-1]
        logger.setLevel(level)
        return
    logger.removeHandler(_handler)
    logger.propagate = True
    unregister_for_exit(_handler.output)
    _handler.close()
    _handler = None


def _forget_parent_tallies() -> None:
    # A forked child does not show its parent's flow runs' progress (the parent does).
    if _handler is not None:
        _handler.tally_lock = threading.Lock()
        _handler.tallies = {}
        _handler.ended = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_tallies)
