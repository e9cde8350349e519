"""A flow run is on record from its body's first line: a process killed (kill -9) at any
moment after that leaves the run, shown Crashed, never nothing."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from headwater.plugins.sqlite_store import SQLiteRunStore

from .procs import child_env

SCRIPT = textwrap.dedent('''
    import sys
    from headwater import flow, task

    @task
    def work(i):
        return sum(range(1000)) + i

    @flow
    def inner(n):
        print("inner", flush=True)
        return [work(i) for i in range(n)]

    @flow
    def outer(n, nested):
        if not nested:
            print("outer", flush=True)
        else:
            inner(n)
        while True:  # busy until killed
            [work(i) for i in range(n)]

    outer(int(sys.argv[1]), sys.argv[2] == "nested")
''')


def _kill_when_started(tmp_path: Path, home: Path, nested: bool, delay: float = 0.0) -> None:
    script = tmp_path / "busy.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), "50", "nested" if nested else "flat"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=child_env(home, HEADWATER_LOGGING_LEVEL="WARNING"))
    try:
        line = proc.stdout.readline()  # the body's first line ran
        assert line.strip() in (b"outer", b"inner"), line
        if delay:
            time.sleep(delay)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _flow_runs(home: Path) -> dict[str, object]:
    store = SQLiteRunStore(home / "headwater.db")  # opening marks a dead process's runs Crashed
    try:
        return {run.flow_name: run for run in store.read_flow_runs(limit=10)}
    finally:
        store.close()


@pytest.mark.parametrize("nested", [False, True], ids=["flow", "subflow"])
def test_a_run_killed_as_its_body_starts_is_recorded_crashed(tmp_path, nested):
    """kill -9 the moment the body (of the flow, or of a subflow) has started: the
    run is on record, and shown Crashed."""
    home = tmp_path / "home"
    _kill_when_started(tmp_path, home, nested)
    runs = _flow_runs(home)
    expected = {"outer", "inner"} if nested else {"outer"}
    assert set(runs) == expected
    for run in runs.values():
        assert run.state.is_crashed(), run.state
    if nested:
        assert runs["inner"].parent_flow_run_id == runs["outer"].id


def test_kills_in_the_first_100_ms_always_leave_a_crashed_run(tmp_path):
    """kill -9 at random moments in the first 100 ms of a busy body: every run is on
    record and Crashed, and none of its task runs is left looking alive."""
    rng = random.Random(3)
    for attempt in range(4):
        home = tmp_path / f"home-{attempt}"
        _kill_when_started(tmp_path, home, nested=False, delay=rng.uniform(0.0, 0.1))
        store = SQLiteRunStore(home / "headwater.db")
        try:
            (run,) = store.read_flow_runs(limit=10)
            assert run.state.is_crashed()
            assert all(t.state is None or t.state.is_final() for t in store.read_task_runs(flow_run_id=run.id))
        finally:
            store.close()
