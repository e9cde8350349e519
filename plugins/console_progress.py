"""What the console says about a big flow run instead of two lines per task run.

A :class:`FlowTally` counts one flow run's task runs as the engine reports them ("Created
task run", "Finished in state"), and words the three kinds of progress text:

- the live line a terminal redraws in place:
  ``Flow run 'red-orca' - 12,345/20,000 task runs: 12,340 Completed, 5 Failed | 2,469/s | 5 s``
- the line written every few seconds elsewhere (CI logs, files, pipes):
  ``12,345 task runs finished: 12,340 Completed, 5 Failed (of 20,000 created; 2,469/s, 5 s)``
- the summary written before the run's ``Finished in state`` line:
  ``20,000 task runs: 19,996 Completed, 4 Failed``

The console plugin (``console_log``) decides when each is shown.
"""

from __future__ import annotations

import time
import unicodedata
from typing import Callable, Iterable

#: The order states are listed in; any other state name follows, alphabetically.
STATE_ORDER = ("Completed", "Cached", "Failed", "TimedOut", "Crashed", "Cancelled")
#: States a narrow live line leaves out first (the others are what went wrong).
_SUCCESSES = ("Completed", "Cached", "Cancelled")


class FlowTally:
    """Counts of one flow run's task runs: created, and finished by final state name.

    Not locked: the console updates it under its own lock.
    """

    __slots__ = ("label", "created", "finished", "by_state", "started", "progress", "reported")

    def __init__(self, label: str) -> None:
        self.label = label
        self.created = 0
        self.finished = 0
        self.by_state: dict[str, int] = {}
        self.started = time.monotonic()
        #: Whether the console shows this run's progress instead of its per-task lines.
        self.progress = False
        #: When (``time.monotonic()``) and at which count a progress line was last written.
        self.reported: tuple[float, int] = (self.started, 0)

    def count_finished(self, state_name: str) -> None:
        self.finished += 1
        self.by_state[state_name] = self.by_state.get(state_name, 0) + 1

    def states_text(self, paint: Callable[[str, str], str] | None = None,
                    names: Iterable[str] | None = None) -> str:
        """``12,340 Completed, 5 Failed`` (only ``names``, if given); ``paint(text,
        state_name)`` colours a part."""
        parts = []
        for name in sorted(self.by_state if names is None else names, key=_state_rank):
            text = f"{self.by_state[name]:,} {name}"
            parts.append(paint(text, name) if paint else text)
        return ", ".join(parts)

    def rate(self, now: float | None = None) -> float:
        """Task runs finished per second since the first one was created."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        return self.finished / elapsed if elapsed > 0 else 0.0

    def summary(self, paint: Callable[[str, str], str] | None = None) -> str:
        """``20,000 task runs: 19,996 Completed, 4 Failed`` (``, 3 not finished`` if so)."""
        text = f"{self.created:,} task run{'s' if self.created != 1 else ''}"
        states = self.states_text(paint)
        unfinished = self.created - self.finished
        if unfinished > 0:
            states += (", " if states else "") + f"{unfinished:,} not finished"
        return f"{text}: {states}" if states else text

    def periodic(self, now: float | None = None) -> str:
        """The line written every few seconds when the console is not a terminal."""
        now = time.monotonic() if now is None else now
        states = self.states_text()
        return (f"{self.finished:,} task run{'s' if self.finished != 1 else ''} finished"
                f"{': ' + states if states else ''} (of {self.created:,} created; "
                f"{self.rate(now):,.0f}/s, {_elapsed(now - self.started)})")

    def live(self, width: int, paint: Callable[[str, str], str] | None = None,
             now: float | None = None) -> str:
        """The live line for a terminal ``width`` columns wide, never wider (a wrapped line
        could not be redrawn in place). Until it fits, it leaves out, in turn: the words
        "task runs", the rate, the elapsed time, the Completed, Cached and Cancelled counts
        (the failures stay), then every count; at worst it is cut."""
        now = time.monotonic() if now is None else now
        short = f"{self.label} - {self.finished:,}/{self.created:,}"
        long = short + " task runs"
        rate = f"{self.rate(now):,.0f}/s"
        elapsed = _elapsed(now - self.started)
        every, failures = set(self.by_state), {name for name in self.by_state if name not in _SUCCESSES}
        for head, names, tail in ((long, every, [rate, elapsed]), (short, every, [rate, elapsed]),
                                  (short, every, [elapsed]), (short, every, []), (short, failures, [elapsed]),
                                  (short, failures, []), (long, set(), [elapsed]), (short, set(), [])):
            if names and names is not every and names == every:
                continue  # the same line as one tried before
            states = self.states_text(names=names)
            if names and not states:
                continue
            plain = " | ".join([f"{head}: {states}" if names else head, *tail])
            if columns(plain) < width:
                if names and paint is not None:
                    return " | ".join([f"{head}: {self.states_text(paint, names)}", *tail])
                return plain
        return _cut(short, width - 1)


def columns(text: str) -> int:
    """How many terminal columns ``text`` takes: wide characters (CJK) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _cut(text: str, width: int) -> str:
    out, used = [], 0
    for char in text:
        used += 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if used > width:
            break
        out.append(char)
    return "".join(out)


def _state_rank(name: str) -> tuple[int, str]:
    return (STATE_ORDER.index(name), "") if name in STATE_ORDER else (len(STATE_ORDER), name)


def _elapsed(seconds: float) -> str:
    """``5 s``, ``1:05``, ``1:01:05``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
