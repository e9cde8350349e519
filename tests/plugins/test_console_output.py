"""The console's batched writer: lines written within a tenth of a second, once, in
order, also from a forked child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from headwater.plugins.console_output import ConsoleOutput


class Stream:
    """A stream that records each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_queued_lines_are_written_together_in_order_within_a_tenth_of_a_second(monkeypatch):
    import time

    stream = Stream()
    monkeypatch.setattr(sys, "stderr", stream)
    output = ConsoleOutput()
    for i in range(100):
        output.write(f"line {i}")
    # The first line after a quiet spell is written at once; the burst after it is queued.
    assert stream.writes == ["line 0\n"]
    deadline = time.monotonic() + 5
    while len(stream.writes) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert "".join(stream.writes) == "".join(f"line {i}\n" for i in range(100))
    assert len(stream.writes) <= 3
    output.write("urgent", now=True)
    assert stream.writes[-1] == "urgent\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_writes_its_own_lines_and_not_its_parents(tmp_path):
    """A task forks while its line is still queued: the parent prints it, once; the
    child's own line is printed while the child runs (the ticker is started again in the
    child), though the child leaves with os._exit."""
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent('''
        import os, time
        from headwater import flow, get_run_logger, task


        @task
        def forks() -> None:
            get_run_logger().info("before the fork")
            pid = os.fork()
            if pid == 0:
                get_run_logger().info("the child says hello")
                time.sleep(0.5)
                os._exit(0)
            os.waitpid(pid, 0)


        @flow
        def parent() -> None:
            forks()


        if __name__ == "__main__":
            parent()
        '''))
    env = {k: v for k, v in os.environ.items() if k not in ("HEADWATER_CONSOLE", "NO_COLOR", "FORCE_COLOR")}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("before the fork") == 1
    assert result.stderr.count("Created task run 'forks-") == 1
    assert result.stderr.count("the child says hello") == 1


def test_a_character_the_stream_cannot_encode_loses_no_line(monkeypatch):
    """A console that cannot show a character (an ASCII stream with strict errors) gets
    it escaped; the lines queued with it are written too."""
    import io

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stderr", stream)
    output = ConsoleOutput()
    output.write("before")
    output.write("caf\u00e9 au lait")
    output.write("after", now=True)
    stream.flush()
    assert raw.getvalue().decode("ascii") == "before\ncaf\\xe9 au lait\nafter\n"


def test_a_narrow_live_line_keeps_the_failures_and_counts_wide_characters():
    """On an 80-column terminal a flow run with six kinds of final state still shows its
    failures; a name in wide (CJK) characters is measured in columns, not characters."""
    from headwater.plugins.console_progress import FlowTally, columns

    tally = FlowTally("Flow run 'nightly'")
    tally.created = 20_000
    for name, times in (("Completed", 12_000), ("Cached", 400), ("Failed", 3), ("TimedOut", 1),
                        ("Crashed", 1), ("Cancelled", 52)):
        for _ in range(times):
            tally.count_finished(name)
    wide = tally.live(200)
    assert "12,000 Completed" in wide and "52 Cancelled" in wide and "/s | " in wide
    narrow = tally.live(80)
    assert columns(narrow) < 80
    assert "3 Failed, 1 TimedOut, 1 Crashed" in narrow and "Completed" not in narrow
    cjk = FlowTally("Flow run '夜間バッチ処理の実行'")
    cjk.created = 100
    cjk.count_finished("Completed")
    for width in (60, 40, 20):
        assert columns(cjk.live(width)) < width
    assert columns("夜間") == 4
