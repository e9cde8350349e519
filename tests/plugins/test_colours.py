"""plugins/colours.py: when colour is wanted, and how state names and levels are painted."""

from __future__ import annotations

import io
import os
from typing import Iterator, TextIO

import pytest

from headwater.plugins.colours import paint_level, paint_state, wants_colour


needs_pty = pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals here")


@pytest.fixture
def tty() -> Iterator[TextIO]:
    """A text stream on the terminal side of a pseudo-terminal."""
    if not hasattr(os, "openpty"):
        pytest.skip("no pseudo-terminals here")
    master, slave = os.openpty()
    stream = open(slave, "w")
    try:
        yield stream
    finally:
        stream.close()
        os.close(master)


def test_a_terminal_gets_colour(tty: TextIO) -> None:
    """A stream that is a terminal gets colour; a pipe or a file does not."""
    assert wants_colour(tty, {"TERM": "xterm-256color"})
    assert wants_colour(tty, {})
    assert not wants_colour(io.StringIO(), {"TERM": "xterm-256color"})
    read_end, write_end = os.pipe()
    with open(read_end) as pipe_in, open(write_end, "w") as pipe_out:
        assert not wants_colour(pipe_out, {})


def test_no_color_turns_colour_off_even_when_forced(tty: TextIO) -> None:
    """NO_COLOR (any non-empty value) wins over a terminal and over FORCE_COLOR."""
    assert not wants_colour(tty, {"NO_COLOR": "1"})
    assert not wants_colour(tty, {"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert wants_colour(tty, {"NO_COLOR": ""})  # empty means unset (no-color.org)


def test_force_color_turns_colour_on_for_a_pipe() -> None:
    """FORCE_COLOR=1 (any value but 0) colours a stream that is no terminal; 0 or empty does not."""
    assert wants_colour(io.StringIO(), {"FORCE_COLOR": "1"})
    assert wants_colour(io.StringIO(), {"FORCE_COLOR": "true"})
    assert not wants_colour(io.StringIO(), {"FORCE_COLOR": "0"})
    assert not wants_colour(io.StringIO(), {"FORCE_COLOR": ""})


def test_force_color_zero_turns_colour_off_at_a_terminal(tty: TextIO) -> None:
    """FORCE_COLOR=0 is an explicit "no colour", as Node's tools read it."""
    assert wants_colour(tty, {})
    assert not wants_colour(tty, {"FORCE_COLOR": "0"})


def test_a_dumb_terminal_gets_no_colour_unless_forced(tty: TextIO) -> None:
    """TERM=dumb (Emacs shell buffers, some CI) means no escape codes, unless FORCE_COLOR."""
    assert not wants_colour(tty, {"TERM": "dumb"})
    assert wants_colour(tty, {"TERM": "dumb", "FORCE_COLOR": "1"})


@needs_pty
def test_a_closed_or_odd_stream_gets_no_colour(tmp_path) -> None:
    """A closed stream, or an object without isatty, is not a terminal (no error)."""
    stream = open(tmp_path / "out.txt", "w")
    stream.close()
    assert not wants_colour(stream, {})
    master, slave = os.openpty()
    closed_tty = open(slave, "w")
    closed_tty.close()
    os.close(master)
    assert not wants_colour(closed_tty, {})
    assert not wants_colour(object(), {})


def test_the_environment_is_read_by_default(tty: TextIO, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, NO_COLOR and FORCE_COLOR come from os.environ."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(tty)
    monkeypatch.delenv("NO_COLOR")
    assert wants_colour(tty)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert wants_colour(io.StringIO())


def test_states_and_levels_are_painted_in_their_colours() -> None:
    """Completed green, Failed and Crashed red, Retrying yellow, Cached purple; a state
    without a colour (Pending) and the INFO level are left plain."""
    assert paint_state("Completed", "Completed") == "\x1b[32mCompleted\x1b[0m"
    assert paint_state("Failed", "Failed") == "\x1b[31mFailed\x1b[0m"
    assert paint_state("Crashed", "Crashed") == "\x1b[31mCrashed\x1b[0m"
    assert paint_state("Retrying", "Retrying") == "\x1b[33mRetrying\x1b[0m"
    assert paint_state("AwaitingRetry", "AwaitingRetry") == "\x1b[33mAwaitingRetry\x1b[0m"
    assert paint_state("Cached", "Cached") == "\x1b[35mCached\x1b[0m"
    assert paint_state("Pending", "Pending") == "Pending"
    assert paint_level("ERROR") == "\x1b[31mERROR\x1b[0m"
    assert paint_level("WARNING", "careful") == "\x1b[33mcareful\x1b[0m"
    assert paint_level("INFO") == "INFO"
