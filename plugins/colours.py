"""Colour for people at a terminal: state names and log levels.

Used by the console lines (``console_log``) and the ``headwater runs`` tables. Colour is
on only when the stream is a terminal that can show it: never when ``NO_COLOR`` is set
(https://no-color.org), never when ``TERM=dumb``, never into a file or a pipe.
``FORCE_COLOR`` turns it on anyway (for a pager that understands it), and ``FORCE_COLOR=0``
turns it off.

Copy the palette into a ``headwater_hooks.py`` module and change it there if you like:
``colours.STATE_COLOURS["Completed"] = colours.BLUE``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
BLUE = "\x1b[34m"
PURPLE = "\x1b[35m"
CYAN = "\x1b[36m"

#: A state's name -> its colour. Names not here (Pending, Scheduled) are left plain.
STATE_COLOURS: dict[str, str] = {
    "Completed": GREEN,
    "Cached": PURPLE,
    "Failed": RED,
    "Crashed": RED,
    "TimedOut": RED,
    "Cancelled": YELLOW,
    "Cancelling": YELLOW,
    "Retrying": YELLOW,
    "AwaitingRetry": YELLOW,
    "Running": BLUE,
}

#: A log level's name -> its colour. INFO is left plain: it is most of the lines.
LEVEL_COLOURS: dict[str, str] = {
    "DEBUG": DIM,
    "WARNING": YELLOW,
    "ERROR": RED,
    "CRITICAL": BOLD + RED,
}


def wants_colour(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether text written to ``stream`` should be coloured (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR")
    if force:
        return force != "0"  # FORCE_COLOR=0 is an explicit "no colour", as in Node's tools
    return is_terminal(stream, env)


def is_terminal(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is a terminal that can show colour and redraw a line (not
    ``TERM=dumb``)."""
    env = os.environ if environ is None else environ
    if env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def paint(text: str, colour: str | None) -> str:
    """``text`` in ``colour`` (one of this module's codes), or as it is for ``None``."""
    return f"{colour}{text}{RESET}" if colour else text


def paint_state(text: str, state_name: str) -> str:
    """``text`` (a state's name, or a line about it) in the colour of ``state_name``."""
    return paint(text, STATE_COLOURS.get(state_name))


def paint_level(level_name: str, text: str | None = None) -> str:
    """``text`` (default: the level's name) in the colour of the level ``level_name``."""
    return paint(level_name if text is None else text, LEVEL_COLOURS.get(level_name))
