"""What the console shows of a flow run, as a user sees it: flow scripts run in a child
process, their stderr read from a pipe or from a pseudo-terminal.

Small flow runs print a line per task run event; big ones print their progress and a
summary instead; failures, retries, warnings and the user's own lines always print; the
run store keeps every line whatever the console shows.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

needs_pty = pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals here")

# ``12:01:02.345 | INFO    | Flow run 'red-orca' - Finished in state Completed()``
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (?P<level>[A-Z]+) *\| (?P<where>.*?) - (?P<message>.*)$")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# A live line: "Flow run 'x' - 12/60 task runs: ..." (on a narrow terminal "... - 12/60").
LIVE = re.compile(r"^Flow run '[^']*' - [\d,]+/[\d,]+( task runs|:| \||$)")
GREEN, RED, RESET = "\x1b[32m", "\x1b[31m", "\x1b[0m"

# A flow of ``n`` tasks, submitted (``mode="submit"``) or called (``"call"``); every
# task whose number ends in 07 fails, task 50 logs with get_run_logger and task 60 prints
# (the flow has log_prints); task 3 fails once and is retried.
FLOW = '''
import sys, time
from headwater import flow, get_run_logger, runtime, task


@task(retries=1)
def work(i: int, pause: float = 0.0) -> int:
    time.sleep(pause)
    if i == 3 and runtime.task_run.run_count < 2:
        raise RuntimeError("task 3 fails once")
    if i % 100 == 7:
        raise ValueError(f"bad input {i}")
    if i == 50:
        get_run_logger().info("task 50 says hello")
    if i == 60:
        print("task 60 prints")
    return i


@flow(flow_run_name="fan-out", log_prints=True)
def fan_out(n: int, mode: str = "submit", pause: float = 0.0) -> int:
    if mode == "submit":
        futures = [work.submit(i, pause) for i in range(n)]
        states = [f.wait() for f in futures]
    else:
        states = [work(i, pause, return_state=True) for i in range(n)]
    return len(states)
'''


def run_script(tmp_path: Path, body: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``body`` (after :data:`FLOW`) as a script; its stdout and stderr as text."""
    script = tmp_path / "flow_script.py"
    script.write_text(FLOW + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=child_env(env),
                          capture_output=True, text=True, timeout=timeout)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment (its HEADWATER_HOME, so the test's session reads the same
    store) without the shell's console and colour settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HEADWATER_CONSOLE", "NO_COLOR", "FORCE_COLOR", "HEADWATER_LOGGING_LEVEL")}
    env.update(extra or {})
    return env


def lines_of(err: str) -> list[tuple[str, str, str]]:
    """(level, where, message) of every console line in ``err`` (tracebacks left out)."""
    found = []
    for raw in err.splitlines():
        match = LINE.match(COLOUR.sub("", raw))
        if match:
            found.append((match["level"], match["where"], match["message"]))
    return found


def messages(err: str) -> list[str]:
    return [message for _, _, message in lines_of(err)]


def count(err: str, pattern: str) -> int:
    return sum(1 for message in messages(err) if re.search(pattern, message))


RUN_MAIN = '''
if __name__ == "__main__":
    fan_out(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "submit",
            float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
'''


# -- small flows: the seed's lines --------------------------------------------------------


def test_a_small_flow_prints_every_task_runs_lines_and_no_summary(tmp_path):
    """Twenty task runs, the threshold: each has its Created and Finished line, as
    before, and there is no summary line."""
    result = run_script(tmp_path, RUN_MAIN, "20")
    assert result.returncode == 0, result.stderr
    got = messages(result.stderr)
    assert count(result.stderr, r"^Created task run 'work-[0-9a-f]+-\d+' for task 'work'$") == 20
    assert count(result.stderr, r"^Finished in state Completed\(\)$") == 19  # task 3 after its retry
    assert count(result.stderr, r"^Finished in state Failed\(.*ValueError: bad input 7'\)$") == 1
    assert not [m for m in got if "task runs" in m]
    assert got[-1] == "Finished in state Completed('All states completed.')"


# -- big flows: a summary instead of two lines per task run -------------------------------


@pytest.mark.parametrize("mode", ["submit", "call"])
def test_a_big_flow_prints_a_summary_and_every_failure(tmp_path, mode):
    """300 task runs: the first 20 Created lines, then no routine per-task line; every
    failure's lines, the retry, the user's logged and printed lines in full; the summary
    just before the flow's Finished line."""
    result = run_script(tmp_path, RUN_MAIN, "300", mode)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    found = lines_of(err)
    assert count(err, r"^Created task run ") == 20
    # No routine line from a task run created after the threshold.
    late = [(where, m) for _, where, m in found
            if re.match(r"Task run 'work-[0-9a-f]+-(\d+)'", where)
            and int(re.match(r"Task run 'work-[0-9a-f]+-(\d+)'", where)[1]) >= 20
            and m == "Finished in state Completed()"]
    assert late == []
    for failed in (7, 107, 207):
        assert count(err, rf"^Finished in state Failed\(.*ValueError: bad input {failed}'\)$") == 1
        assert f"ValueError: bad input {failed}" in err  # the traceback's last line
    # Task 3 fails once and is retried; 7, 107 and 207 fail, are retried and fail again.
    assert count(err, r"^Encountered exception during execution") == 7
    assert count(err, r"^Retry 1/1 will start") == 4
    assert ("INFO", f"Task run '{_name(found, 50)}'", "task 50 says hello") in found
    assert count(err, r"^task 60 prints$") == 1
    assert [m for _, _, m in found][-2:] == ["300 task runs: 297 Completed, 3 Failed",
                                             "Finished in state Completed('All states completed.')"]
    assert found[-2][1] == "Flow run 'fan-out'"
    # Said once, by the flow run, right after the last Created line it prints.
    assert count(err, r"^More than 20 task runs: progress from here on") == 1
    assert len(found) < 65  # not two lines per task run


def _name(found: list[tuple[str, str, str]], number: int) -> str:
    for _, where, _ in found:
        match = re.match(rf"Task run '(work-[0-9a-f]+-{number})'", where)
        if match:
            return match[1]
    raise AssertionError(f"no line names task run {number}")


@pytest.mark.parametrize("console", ["auto", "lines", "progress", "quiet"])
def test_the_store_keeps_every_line_whatever_the_console_shows(tmp_path, headwater_session, console):
    """Whatever the console shows, the store has 300 Created and 300 Finished lines,
    and `headwater runs show --logs all` prints them."""
    result = run_script(tmp_path, RUN_MAIN, "300", env={"HEADWATER_CONSOLE": console})
    assert result.returncode == 0, result.stderr
    store = headwater_session.store
    (run,) = store.read_flow_runs()
    stored = [line["message"] for line in store.read_logs(flow_run_id=run.id, limit=10**6)]
    assert sum(m.startswith("Created task run 'work-") for m in stored) == 300
    assert sum(m == "Finished in state Completed()" for m in stored) == 297
    assert sum(m.startswith("Finished in state Failed(") for m in stored) == 3
    assert "task 50 says hello" in stored and "task 60 prints" in stored
    shown = subprocess.run([str(Path(sys.executable).with_name("headwater")), "runs", "show", "fan-out",
                            "--logs", "all"], env=child_env(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("Created task run 'work-") == 300
    assert shown.stdout.count("Finished in state Completed()") == 297


# -- HEADWATER_CONSOLE --------------------------------------------------------------------


def test_lines_mode_prints_every_line_of_a_big_flow(tmp_path):
    result = run_script(tmp_path, RUN_MAIN, "300", env={"HEADWATER_CONSOLE": "lines"})
    assert result.returncode == 0, result.stderr
    assert count(result.stderr, r"^Created task run ") == 300
    assert count(result.stderr, r"^Finished in state Completed\(\)$") == 297
    assert count(result.stderr, r"task runs") == 0  # no summary


@pytest.mark.parametrize("mode", ["progress", "quiet"])
def test_progress_and_quiet_print_no_task_line_from_the_first_task_run(tmp_path, mode):
    """Even a flow of five task runs: no Created or Completed line, only the summary
    (and the failure)."""
    result = run_script(tmp_path, RUN_MAIN, "8", env={"HEADWATER_CONSOLE": mode})
    assert result.returncode == 0, result.stderr
    got = messages(result.stderr)
    assert count(result.stderr, r"^Created task run |^Finished in state Completed\(\)$") == 0
    assert count(result.stderr, r"^Finished in state Failed\(") == 1
    assert got[-2:] == ["8 task runs: 7 Completed, 1 Failed",
                        "Finished in state Completed('All states completed.')"]


def test_an_unknown_console_mode_is_named_with_the_choices(tmp_path):
    result = run_script(tmp_path, RUN_MAIN, "3", env={"HEADWATER_CONSOLE": "fast"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith(
        "HEADWATER_CONSOLE='fast' is not a console mode; expected one of auto, lines, progress, quiet")
    cli = subprocess.run([str(Path(sys.executable).with_name("headwater")), "runs"], cwd=tmp_path,
                         env=child_env({"HEADWATER_CONSOLE": "fast"}), capture_output=True, text=True,
                         timeout=60)
    assert cli.returncode != 0
    assert cli.stderr.strip() == ("headwater: error: HEADWATER_CONSOLE='fast' is not a console mode; "
                                  "expected one of auto, lines, progress, quiet")


def test_an_unknown_console_mode_in_pyproject_names_the_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.headwater]\nconsole = "fast"\n')
    result = run_script(tmp_path, RUN_MAIN, "3")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"console = 'fast' under [tool.headwater] in {tmp_path / 'pyproject.toml'}" in last
    assert "expected one of auto, lines, progress, quiet" in last
    result = run_script(tmp_path, RUN_MAIN, "3", env={"HEADWATER_CONSOLE": "lines"})  # the environment wins
    assert result.returncode == 0, result.stderr


# -- not a terminal: a progress line every few seconds ------------------------------------

PROGRESS_QUICKLY = '''
from headwater.plugins import console_log

console_log.PROGRESS_EVERY = 0.3
''' + RUN_MAIN


def test_a_long_flow_prints_a_progress_line_every_few_seconds_in_a_log(tmp_path):
    """In a CI log (a pipe): 'N task runs finished: ...' while the flow runs, the counts
    growing, then the summary."""
    result = run_script(tmp_path, PROGRESS_QUICKLY, "60", "call", "0.03")
    assert result.returncode == 0, result.stderr
    found = lines_of(result.stderr)
    periodic = [m for _, where, m in found if "task runs finished" in m and where == "Flow run 'fan-out'"]
    assert len(periodic) >= 2, result.stderr
    finished = [int(re.match(r"(\d+) task runs? finished: \d+ Completed", m)[1]) for m in periodic]
    assert finished == sorted(finished) and finished[0] < 60
    assert all("(of " in m and " created; " in m for m in periodic)
    assert [m for _, _, m in found][-2] == "60 task runs: 59 Completed, 1 Failed"
    assert "\x1b" not in result.stderr  # a pipe: no colour, no cursor movement


def test_a_quick_flow_prints_no_progress_line(tmp_path):
    result = run_script(tmp_path, RUN_MAIN, "300")
    assert result.returncode == 0, result.stderr
    assert count(result.stderr, r"task runs finished") == 0


def test_quiet_prints_no_progress_line(tmp_path):
    result = run_script(tmp_path, PROGRESS_QUICKLY, "60", "call", "0.03", env={"HEADWATER_CONSOLE": "quiet"})
    assert result.returncode == 0, result.stderr
    assert count(result.stderr, r"task runs finished") == 0
    assert messages(result.stderr)[-2] == "60 task runs: 59 Completed, 1 Failed"


# -- a terminal: the live line -------------------------------------------------------------


class Screen:
    """A tiny terminal: text, ``\\r``, ``\\n`` (written as ``\\r\\n`` by the terminal),
    erase line (``ESC[2K``) and cursor up (``ESC[1A``); colour codes are dropped.
    Records every live progress line it erases."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self.live_seen: list[str] = []

    def feed(self, text: str) -> None:
        for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|[\r\n]|[^\x1b\r\n]+", COLOUR.sub("", text)):
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.row += 1
                if self.row == len(self.rows):
                    self.rows.append([])
            elif token == "\x1b[2K":
                self._note_live()
                self.rows[self.row] = []
            elif token == "\x1b[1A":
                self.row = max(0, self.row - 1)
            elif token.startswith("\x1b"):
                raise AssertionError(f"unexpected escape sequence {token!r}")
            else:
                line = self.rows[self.row]
                line.extend([" "] * (self.col - len(line)))
                line[self.col:self.col + len(token)] = list(token)
                self.col += len(token)

    def _note_live(self) -> None:
        text = "".join(self.rows[self.row])
        if LIVE.search(text):
            self.live_seen.append(text)

    @property
    def text(self) -> list[str]:
        return ["".join(row) for row in self.rows if row]


def run_in_terminal(tmp_path: Path, body: str, *args: str, env: dict[str, str] | None = None,
                    timeout: float = 120, interrupt_after: str | None = None,
                    columns: int = 160) -> tuple[str, Screen]:
    """Run the script with stderr (and stdout) on a pseudo-terminal ``columns`` wide;
    what it wrote, and the screen it left. With ``interrupt_after``, the script gets a
    SIGINT (Ctrl-C) once it has written that text, and must end with an error."""
    import fcntl
    import struct
    import termios

    script = tmp_path / "flow_script.py"
    script.write_text(FLOW + textwrap.dedent(body))
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path,
                               env=child_env({"TERM": "xterm", **(env or {})}),
                               stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal (Linux reports EIO)
                    break
                if not data:
                    break
                chunks.append(data)
                if interrupt_after is not None and interrupt_after in COLOUR.sub("", b"".join(chunks).decode()):
                    process.send_signal(signal.SIGINT)
                    interrupt_after = None
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        process.kill() if process.poll() is None else None
        process.wait()
    written = b"".join(chunks).decode()
    assert (process.returncode != 0) == (interrupt_after is None and "KeyboardInterrupt" in written), written
    screen = Screen()
    screen.feed(written)
    return written, screen


@needs_pty
def test_a_terminal_shows_a_live_line_and_clears_it_at_the_end(tmp_path):
    written, screen = run_in_terminal(tmp_path, RUN_MAIN, "60", "call", "0.03")
    assert screen.live_seen, written
    live = screen.live_seen[0]
    match = re.search(r"^Flow run 'fan-out' - (\d+)/(\d+) task runs: (\d+) Completed.* \| [\d,]+/s \| \d+ s$",
                      live)
    assert match, live
    assert int(match[1]) < 60 and int(match[2]) <= 60
    final = screen.text
    assert not [row for row in final if LIVE.search(row)], final
    tail = [LINE.match(row)["message"] for row in final[-2:]]
    assert tail == ["60 task runs: 59 Completed, 1 Failed", "Finished in state Completed('All states completed.')"]
    # Nothing written over: every line printed is on the final screen, whole.
    assert sum(1 for row in final if "Created task run" in row) == 20
    assert any(row.endswith("Finished in state Failed('Task run encountered an exception during execution: "
                            "ValueError: bad input 7')") for row in final)


@needs_pty
def test_the_live_line_fits_a_narrow_terminal(tmp_path):
    """A line wider than the terminal would wrap and could not be redrawn in place."""
    written, screen = run_in_terminal(tmp_path, RUN_MAIN, "60", "call", "0.03", columns=40)
    assert screen.live_seen
    assert all(len(live) < 40 for live in screen.live_seen), screen.live_seen
    assert not [row for row in screen.text if LIVE.search(row)]


@needs_pty
def test_a_terminal_gets_colour_unless_no_color(tmp_path):
    written, _ = run_in_terminal(tmp_path, RUN_MAIN, "30")
    assert f"{GREEN}29 Completed{RESET}, {RED}1 Failed{RESET}" in written
    assert f"Finished in state {GREEN}Completed('All states completed.'){RESET}" in written
    assert f"| {RED}ERROR  {RESET} | Task run 'work-" in written
    written, screen = run_in_terminal(tmp_path, RUN_MAIN, "30", env={"NO_COLOR": "1"})
    assert "\x1b[3" not in written and "\x1b[0m" not in written
    assert "Finished in state Completed('All states completed.')" in screen.text[-1]


INTERRUPTIBLE = """
import signal

signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises, whatever the parent did
""" + RUN_MAIN


@needs_pty
def test_ctrl_c_leaves_no_live_line_and_says_what_did_not_finish(tmp_path):
    """Interrupted while its live line shows, the flow run ends Crashed: the live line is
    gone, the summary counts what crashed, and the interrupted task run's line is printed."""
    written, screen = run_in_terminal(tmp_path, INTERRUPTIBLE, "1000", "call", "0.05",
                                      interrupt_after=" task runs: ")  # the live line is up
    assert screen.live_seen
    final = screen.text
    assert not [row for row in final if LIVE.search(row)], final
    found = [LINE.match(row) for row in final if LINE.match(row)]
    summary = [m["message"] for m in found if re.match(r"\d+ task runs: ", m["message"])]
    # Mostly the interrupt lands in a task run's sleep (it crashes); else in the engine's
    # own steps around it, where the task run ends without its line ("not finished").
    assert len(summary) == 1, final
    assert re.match(r"\d+ task runs: \d+ Completed, 1 Failed(, 1 Crashed|, 1 not finished)?$", summary[0]), final
    if summary[0].endswith("Crashed"):
        assert any(m["message"].startswith("Finished in state Crashed(") and m["where"].startswith("Task run")
                   for m in found)
    assert found[-1]["message"].startswith("Finished in state Crashed(") and found[-1]["where"] == "Flow run 'fan-out'"
    assert final[-1] == "KeyboardInterrupt"


@needs_pty
def test_a_dumb_terminal_gets_progress_lines_not_a_live_line(tmp_path):
    """TERM=dumb cannot redraw a line: the lines a log gets, without colour."""
    written, screen = run_in_terminal(tmp_path, PROGRESS_QUICKLY, "60", "call", "0.03", env={"TERM": "dumb"})
    assert "\x1b" not in written
    assert [row for row in screen.text if "task runs finished: " in row]


@needs_pty
def test_quiet_draws_no_live_line_on_a_terminal(tmp_path):
    written, screen = run_in_terminal(tmp_path, RUN_MAIN, "60", "call", "0.03",
                                      env={"HEADWATER_CONSOLE": "quiet"})
    assert not screen.live_seen and "\x1b[2K" not in written
    assert LINE.match(screen.text[-2])["message"] == "60 task runs: 59 Completed, 1 Failed"


# -- order and timeliness -------------------------------------------------------------------

NUMBERED = '''
@task
def chatty(i: int) -> int:
    logger = get_run_logger()
    for j in range(20):
        logger.info("task %d line %d", i, j)
    return i


@flow(flow_run_name="chatty")
def many() -> None:
    for future in [chatty.submit(i) for i in range(50)]:
        future.wait()
    for i in range(50, 60):
        chatty(i)


if __name__ == "__main__":
    many()
'''


@pytest.mark.parametrize("console", ["lines", "auto"])
def test_no_line_is_lost_or_reordered(tmp_path, console):
    """Sixty task runs logging twenty numbered lines each, from many threads: all 1,200
    printed, each task run's in order, before the flow run's Finished line."""
    result = run_script(tmp_path, NUMBERED, env={"HEADWATER_CONSOLE": console})
    assert result.returncode == 0, result.stderr
    got = messages(result.stderr)
    numbered = [tuple(map(int, m.split()[1::2])) for m in got if re.match(r"task \d+ line \d+$", m)]
    assert sorted(numbered) == [(i, j) for i in range(60) for j in range(20)]
    for i in range(60):
        assert [j for t, j in numbered if t == i] == list(range(20))
    last_numbered = max(k for k, m in enumerate(got) if m.startswith("task "))
    assert got.index("Finished in state Completed('All states completed.')") > last_numbered
    if console == "lines":
        assert count(result.stderr, r"^Created task run ") == 60
        assert count(result.stderr, r"^Finished in state Completed\(\)$") == 60


def test_a_task_runs_line_shows_while_it_still_runs(tmp_path):
    """A task logs a line and then works for two seconds: the line is on the pipe long
    before the task ends (queued lines are written within a tenth of a second)."""
    script = tmp_path / "slow_task.py"
    script.write_text(FLOW + textwrap.dedent('''
        @task
        def slow() -> None:
            get_run_logger().info("started the slow part")
            time.sleep(2)
            get_run_logger().info("done with the slow part")


        @flow
        def waits() -> None:
            slow()


        if __name__ == "__main__":
            waits()
        '''))
    process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=child_env(),
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = {}
    assert process.stderr is not None
    for line in process.stderr:
        for said in ("started the slow part", "done with the slow part"):
            if said in line:
                seen[said] = time.monotonic()
    process.wait(timeout=60)
    assert process.returncode == 0
    assert seen["done with the slow part"] - seen["started the slow part"] > 1.5  # not held back until the task ended


# -- nested flow runs -------------------------------------------------------------------------

NESTED = '''
@task
def small(i: int) -> int:
    return i


@flow(flow_run_name="inner-{n}")
def inner(n: int) -> int:
    return sum(small(i) for i in range(n))


@flow(flow_run_name="outer")
def outer() -> int:
    total = sum(f.result() for f in [small.submit(i) for i in range(25)])
    total += inner(40)
    total += inner(5)
    total += sum(f.result() for f in [small.submit(i) for i in range(10)])
    return total


if __name__ == "__main__":
    outer()
'''


def test_a_subflow_has_its_own_summary(tmp_path):
    """The outer flow run's 35 task runs and its subflow runs' 40 and 5 are counted
    apart: a summary for outer and for the big subflow, the small one prints its lines."""
    result = run_script(tmp_path, NESTED)
    assert result.returncode == 0, result.stderr
    found = lines_of(result.stderr)
    summaries = [(where, m) for _, where, m in found if re.match(r"[\d,]+ task runs?:", m)]
    assert summaries == [("Flow run 'inner-40'", "40 task runs: 40 Completed"),
                         ("Flow run 'outer'", "35 task runs: 35 Completed")]
    inner_5 = [m for _, where, m in found if where == "Flow run 'inner-5'"]
    assert sum(m.startswith("Created task run") for m in inner_5) == 5
    finished = [where for _, where, m in found if m.startswith("Finished in state Completed('All")]
    assert finished == ["Flow run 'inner-40'", "Flow run 'inner-5'", "Flow run 'outer'"]


# -- sessions -------------------------------------------------------------------------------


def test_a_nested_session_leaves_the_outer_sessions_console_mode(monkeypatch, capsys):
    """A `with Session()` opened with HEADWATER_CONSOLE=lines and closed again: the
    outer session's flows are shown in its own mode (auto) again, at its own level."""
    from headwater import Session, flow, task

    @task
    def step(i: int) -> int:
        return i

    @flow
    def thirty() -> int:
        return sum(step(i) for i in range(30))

    assert thirty() == 435  # the outer session (auto) is in use
    capsys.readouterr()
    monkeypatch.setenv("HEADWATER_CONSOLE", "lines")
    with Session():
        assert thirty() == 435
    inner = capsys.readouterr().err
    assert count(inner, r"^Created task run ") == 30 and count(inner, r"task runs:") == 0
    monkeypatch.setenv("HEADWATER_LOGGING_LEVEL", "WARNING")
    with Session():
        assert thirty() == 435
    assert messages(capsys.readouterr().err) == []
    assert thirty() == 435
    outer = capsys.readouterr().err
    assert count(outer, r"^Created task run ") == 20
    assert messages(outer)[-2] == "30 task runs: 30 Completed"


QUIET_FLOW_LINES = '''
import logging
if __name__ == "__main__":
    logging.getLogger("headwater.flow_runs").setLevel(logging.WARNING)
    fan_out(int(sys.argv[1]), "call", 0.02)
    time.sleep(0.5)  # the console's ticker would redraw a live line left behind
    print("after the flow", flush=True)
'''


@needs_pty
def test_a_flow_without_its_finished_line_leaves_no_live_line(tmp_path):
    """With the flow runs' logger above INFO there is no "Finished in state" line to end
    the progress: the live line goes all the same when the flow run ends."""
    written, screen = run_in_terminal(tmp_path, QUIET_FLOW_LINES, "40")
    assert screen.live_seen, written
    assert not [row for row in screen.text if LIVE.search(row)], screen.text
    assert screen.text[-1] == "after the flow"
    # No summary either: the flow's lines are off.
    assert not [row for row in screen.text if re.search(r" - \d+ task runs: \d+ Completed", row)]


KILLED = '''
import os, signal


@task
def last_words() -> None:
    get_run_logger().info("about to die")
    os.kill(os.getpid(), signal.SIGKILL)


@flow(flow_run_name="doomed")
def doomed() -> None:
    for i in range(3):
        work(i)  # routine lines just before: the console's queue is busy
    work(7, return_state=True)  # fails (after its retry)
    if sys.argv[1:] == ["at-once"]:
        os.kill(os.getpid(), signal.SIGKILL)  # right after the failed run's last line
    last_words()


if __name__ == "__main__":
    doomed()
'''


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL here")
def test_a_line_of_yours_is_on_the_console_before_the_process_dies(tmp_path):
    """Only the engine's routine lines wait in the console's queue: a line you log, or a
    failed run's line, is written before your next statement runs, so a process killed
    right after it (a segfault, the OOM killer) still shows it."""
    result = run_script(tmp_path, KILLED)
    assert result.returncode == -signal.SIGKILL
    assert "about to die" in messages(result.stderr)
    # A failed run's Finished line is not routine either: shown when killed right after it.
    result = run_script(tmp_path, KILLED, "at-once")
    assert result.returncode == -signal.SIGKILL
    assert count(result.stderr, r"^Finished in state Failed\(.*bad input 7") == 1


def test_a_big_flow_counts_cancelled_and_late_task_runs_without_printing_them():
    """After Ctrl-C, workers still draining end their task runs Cancelled, some after the
    flow run's own last line: in a big flow run they are counted, not printed, unless
    they failed."""
    from headwater import states
    from headwater.plugins.console_log import LINES_UP_TO, ConsoleHandler
    from headwater.run_logging import FLOW_FINISHED, TASK_CREATED, TASK_FINISHED

    handler = ConsoleHandler("auto")
    try:
        for _ in range(LINES_UP_TO + 5):
            handler.count(TASK_CREATED, "flow-1", None, "Flow run 'big'")
        assert handler.count(TASK_FINISHED, "flow-1", states.Completed(), None) is False
        assert handler.count(TASK_FINISHED, "flow-1", states.Cancelled(), None) is False
        assert handler.count(TASK_FINISHED, "flow-1", states.Failed(), None) is True
        assert handler.count(TASK_FINISHED, "flow-1", states.Crashed(), None) is True
        assert handler.count(FLOW_FINISHED, "flow-1", states.Completed(), None) is True
        # Late: after the flow run's Finished line.
        assert handler.count(TASK_FINISHED, "flow-1", states.Cancelled(), None) is False
        assert handler.count(TASK_FINISHED, "flow-1", states.TimedOut(), None) is True
        assert handler.ended["flow-1"].by_state == {"Completed": 1, "Cancelled": 2, "Failed": 1, "Crashed": 1,
                                                     "TimedOut": 1}
    finally:
        handler.output.set_live([])
        handler.close()
