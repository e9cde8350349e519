"""Colour in `headwater runs` and `headwater runs show`: state names and log levels are
coloured at a terminal (or with FORCE_COLOR), columns stay aligned, and nothing is
coloured for a pipe, with NO_COLOR, or with --json."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from headwater import flow, get_run_logger, task
from headwater.cli import main

GREEN, RED, YELLOW, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m"
_CODES = re.compile(r"\x1b\[[0-9;]*m")


def visible(text: str) -> str:
    """``text`` as the screen shows it: colour codes take no room."""
    return _CODES.sub("", text)


@pytest.fixture
def history(headwater_session):
    """A completed run whose task retried once and logged a warning, and a failed run."""
    attempts = []

    @task(retries=1, retry_delay_seconds=0)
    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise ConnectionError("reset")
        get_run_logger().warning("slow response")
        return n

    @flow(flow_run_name="good-run")
    def good(n: int) -> int:
        return flaky(n)

    @flow(flow_run_name="broken-run")
    def broken() -> None:
        raise ValueError("no good")

    good(1)
    broken(return_state=True)
    headwater_session.store.flush()
    return headwater_session.store


def run_cli(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_runs_colours_state_names_and_keeps_columns_aligned(history, capsys, monkeypatch):
    """With FORCE_COLOR=1, Completed is green and Failed red in the STATE column, and the
    table reads exactly as the uncoloured one once the codes are taken away."""
    plain = run_cli(capsys, "runs")
    assert "\x1b" not in plain
    monkeypatch.setenv("FORCE_COLOR", "1")
    coloured = run_cli(capsys, "runs")
    assert f"{RED}Failed{RESET}  " in coloured
    assert f"{GREEN}Completed{RESET}  " in coloured
    assert visible(coloured) == plain
    header, *rows = coloured.splitlines()
    assert "\x1b" not in header
    start = header.index("START")
    for row in visible(coloured).splitlines()[1:]:  # every START under its header
        assert row[start - 2:start] == "  " and row[start].isdigit(), row


def test_runs_show_colours_states_and_levels(history, capsys, monkeypatch):
    """runs show, with FORCE_COLOR=1: the state line, the state history, each task run's
    states and the log levels are coloured; the text is otherwise the uncoloured text."""
    plain = run_cli(capsys, "runs", "show", "good-run")
    monkeypatch.setenv("FORCE_COLOR", "1")
    coloured = run_cli(capsys, "runs", "show", "good-run")
    assert visible(coloured) == plain
    assert f"  state:      {GREEN}Completed{RESET}('All states completed.')" in coloured
    history_part = coloured.split("State history:\n")[1].split("\n\n")[0]
    assert f"{GREEN}Completed{RESET}      All states completed." in history_part
    task_part = coloured.split("Task runs (1):\n")[1].split("\n\n")[0]
    assert (f"Pending > \x1b[34mRunning{RESET} > {YELLOW}AwaitingRetry{RESET} > "
            f"{YELLOW}Retrying{RESET} > {GREEN}Completed{RESET}") in task_part
    logs = coloured.split("Logs:\n")[1]
    assert f"| {YELLOW}WARNING{RESET} | Task run " in logs
    assert f"| {RED}ERROR{RESET}   | Task run " in logs
    assert "| INFO    | " in logs  # most lines: left plain

    broken = run_cli(capsys, "runs", "show", "broken-run")
    assert f"  state:      {RED}Failed{RESET}(" in broken


def test_no_color_wins_over_force_color(history, capsys, monkeypatch):
    """NO_COLOR=1 (even with FORCE_COLOR=1) gives no escape codes at all."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in run_cli(capsys, "runs")
    assert "\x1b" not in run_cli(capsys, "runs", "show", "good-run")


def test_json_is_never_coloured(history, capsys, monkeypatch):
    """--json prints plain JSON whatever the colour settings."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    for argv in (["runs", "--json"], ["runs", "show", "good-run", "--json"]):
        out = run_cli(capsys, *argv)
        assert "\x1b" not in out
        json.loads(out)


def test_a_recorded_escape_code_stays_escaped_when_colour_is_on(headwater_session, capsys, monkeypatch):
    """A run name holding ESC [31m is shown as the text \\x1b[31m: the only escape codes
    printed are the ones that colour state names."""

    @flow(flow_run_name="evil\x1b[31m")
    def evil() -> None:
        get_run_logger().warning("look \x1b[2J here")

    evil()
    headwater_session.store.flush()
    monkeypatch.setenv("FORCE_COLOR", "1")
    for argv in (["runs"], ["runs", "show", "evil\x1b[31m"]):
        out = run_cli(capsys, *argv)
        assert "evil\\x1b[31m" in out
        assert "\x1b" not in visible(out)
        assert set(_CODES.findall(out)) <= {GREEN, RESET, YELLOW, "\x1b[34m"}


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals here")
def test_a_terminal_gets_colour(history, capsys, monkeypatch):
    """Printed to a terminal (a pseudo-terminal here), without FORCE_COLOR, the states
    are coloured."""
    monkeypatch.setenv("TERM", "xterm")
    master, slave = os.openpty()
    terminal = open(slave, "w")
    monkeypatch.setattr(sys, "stdout", terminal)
    try:
        assert main(["runs"]) == 0
        terminal.flush()
        out = os.read(master, 65536).decode()
    finally:
        terminal.close()
        os.close(master)
    assert f"{GREEN}Completed{RESET}" in out and f"{RED}Failed{RESET}" in out


def test_a_pipe_gets_no_colour(history, headwater_home):
    """`headwater runs | less`: the console script writing to a pipe prints no escape
    codes; with FORCE_COLOR=1 it does (for a pager that shows them)."""
    exe = Path(sys.executable).with_name("headwater")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update(HEADWATER_HOME=str(headwater_home), TERM="xterm")
    result = subprocess.run([str(exe), "runs"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Completed" in result.stdout and "\x1b" not in result.stdout
    result = subprocess.run([str(exe), "runs"], env={**env, "FORCE_COLOR": "1"}, capture_output=True,
                            text=True, timeout=60)
    assert f"{GREEN}Completed{RESET}" in result.stdout
