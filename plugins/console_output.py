"""Console text written in batches, with live lines redrawn in place on a terminal.

A write per log line was the largest single cost of a task run at the default INFO
level. :class:`ConsoleOutput` keeps lines in a queue and writes them together: at once
when asked (a flow-level line, a warning or an error), else within :data:`FLUSH_EVERY`
seconds, from a ticker thread that sleeps while there is nothing to write. Lines are
written in the order they were queued, and a flush at exit writes what is left.

On a terminal it also keeps a block of *live lines* (one progress line per big flow run)
under the written lines: every flush clears the block, writes the new lines and draws the
block again, so the progress stays at the bottom and nothing is drawn over.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable

from headwater.plugins.colours import is_terminal

#: Seconds a queued line may wait before it is written.
FLUSH_EVERY = 0.1

_CLEAR_LINE = "\r\x1b[2K"
_UP = "\x1b[1A"


class ConsoleOutput:
    """Batched writes to the current ``sys.stderr`` (looked up at each write, so test
    capture and redirection work), plus the live block on a terminal.

    ``on_tick`` is called from the ticker before each timed flush (the console uses it to
    update the live lines and to write periodic progress lines); ``busy`` says whether the
    ticker must keep ticking with nothing queued (a flow run's progress is on show).
    """

    def __init__(self, on_tick: Callable[[], None] | None = None,
                 busy: Callable[[], bool] | None = None) -> None:
        self.queue: collections.deque[str] = collections.deque()
        self.live: list[str] = []
        self.on_tick = on_tick
        self.busy = busy
        # Held while writing to the stream: lines from many threads come out whole and in order.
        self.lock = threading.RLock()
        self._drawn = 0  # live lines on the screen now
        self._armed = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._written = 0.0  # time.monotonic() of the last write to the stream
        #: Write every line at once (a forked child, which may end with os._exit).
        self.direct = False
        _every_output.add(self)

    # -- writing ---------------------------------------------------------------------------

    def write(self, line: str, now: bool = False) -> None:
        """Queue ``line`` (without its newline); with ``now``, write everything queued.

        A line is written at once, too, when nothing was written for :data:`FLUSH_EVERY`
        seconds: only a burst of lines waits (and then at most that long), so a process
        killed after a quiet spell loses none of its last lines."""
        self.queue.append(line)
        if now or self.direct or time.monotonic() - self._written >= FLUSH_EVERY:
            self.flush()
        elif not self._armed:
            self._arm()

    def flush(self, redraw: bool = False) -> None:
        """Write every queued line, then (on a terminal) the live lines again. With
        ``redraw``, the live lines are drawn even when no line is queued."""
        queue = self.queue
        with self.lock:
            lines = []
            while True:
                try:
                    lines.append(queue.popleft())
                except IndexError:
                    break
            if not lines and not (redraw and (self.live or self._drawn)):
                return
            stream = sys.stderr
            if stream is None:  # pythonw, or a closed interpreter
                return
            parts = []
            if self._drawn:
                parts.append(_CLEAR_LINE + (_UP + _CLEAR_LINE) * (self._drawn - 1))
                self._drawn = 0
            for line in lines:
                parts.append(line)
                parts.append("\n")
            if self.live and is_terminal(stream):
                parts.append("\n".join(self.live))
                self._drawn = len(self.live)
            if not parts:
                return
            self._written = time.monotonic()
            text = "".join(parts)
            try:
                try:
                    stream.write(text)
                except UnicodeEncodeError:  # a stream that cannot show some character
                    encoding = getattr(stream, "encoding", None) or "ascii"
                    stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
                stream.flush()
            except (ValueError, OSError):  # closed or gone (a test's capture, a closed pipe)
                pass

    def set_live(self, lines: list[str]) -> None:
        """The live lines to keep under the output (``[]`` clears them at the next flush)."""
        self.live = lines

    # -- the ticker --------------------------------------------------------------------------

    def _arm(self) -> None:
        self._armed = True
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            # Started on first use, and again in a forked child (threads do not survive a fork).
            self._pid = os.getpid()
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._run, name="headwater-console", daemon=True)
            self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        """Make sure the ticker runs (it stops when nothing is queued and nothing is busy)."""
        if not self._armed:
            self._arm()

    def forget_parent(self) -> None:
        """In a forked child: the queued lines are the parent's to write (written here
        too, they would show twice), the parent's live lines are not ours to clear, and
        the ticker did not survive the fork (left marked as running, no line of the
        child's would be written until exit)."""
        self.lock = threading.RLock()  # the parent's may have been held at the fork
        self.queue.clear()
        self.live = []
        self._drawn = 0
        self._armed = False
        self._thread = None
        self._pid = os.getpid()
        self.direct = True  # a child may end with os._exit (multiprocessing's do): no queue

    def _busy(self) -> bool:
        return bool(self.queue) or bool(self.busy and self.busy())

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            while self._busy():
                time.sleep(FLUSH_EVERY)
                try:
                    if self.on_tick is not None:
                        self.on_tick()
                    self.flush(redraw=True)
                except Exception:  # noqa: BLE001 - the console must never stop the program
                    pass
            self._armed = False
            if self._busy():  # queued between the last look and disarming
                self._armed = True
                wake.set()


def terminal_width(stream: Any, default: int = 80) -> int:
    """The width of the terminal behind ``stream`` (``default`` when it cannot be told)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or default
    except (AttributeError, ValueError, OSError):
        return default


_outputs: list[ConsoleOutput] = []
# Every output alive in this process, so that a forked child can reset them.
_every_output: weakref.WeakSet[ConsoleOutput] = weakref.WeakSet()


def register_for_exit(output: ConsoleOutput) -> None:
    """Flush ``output`` (and clear its live lines) when the interpreter exits."""
    if not _outputs:
        atexit.register(_flush_all)
    _outputs.append(output)


def unregister_for_exit(output: ConsoleOutput) -> None:
    if output in _outputs:
        _outputs.remove(output)


def _flush_all() -> None:
    for output in list(_outputs):
        output.set_live([])
        output.flush(redraw=True)


def _forget_parent_outputs() -> None:
    for output in list(_every_output):
        output.forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_outputs)
