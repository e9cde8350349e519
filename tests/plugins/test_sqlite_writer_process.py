"""The store's writer process (busy flows): what it writes is what the thread would have
written, rows name the flow process, nothing is lost when it cannot start or dies, it
ignores Ctrl-C, and it ends with the flow process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import headwater.plugins.sqlite_store as sqlite_store
import headwater.plugins.sqlite_writer_process as writer_process
from headwater import Session, flow, task
from headwater.plugins.sqlite_store import SQLiteRunStore


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubles(n: int) -> int:
    return sum(double(i) for i in range(n))


def _until(condition, seconds: float = 20.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _ready_process(store: SQLiteRunStore) -> writer_process.WriterProcess:
    """Run flows until the store has handed batches to a ready writer process."""
    doubles(5)  # a batch above the (lowered) threshold starts the process
    store.flush()
    process = store._process
    assert process is not None, "no writer process was started"
    _until(process.is_ready)
    return process


def _histories_whole(store: SQLiteRunStore, n_flows: int) -> None:
    runs = store.read_flow_runs(flow_name="doubles", limit=100)
    assert len(runs) == n_flows and all(r.state.is_completed() for r in runs)
    for run in runs:
        task_runs = store.read_task_runs(flow_run_id=run.id)
        assert len(task_runs) == run.parameters["n"]
        assert [r.parameters["x"] for r in task_runs] == list(range(run.parameters["n"]))
        for task_run in task_runs:
            assert [s.name for s in store.read_states(task_run.id)] == ["Pending", "Running", "Completed"]


@pytest.fixture
def low_threshold(monkeypatch):
    """Every batch of 5 entries or more goes to the writer process."""
    monkeypatch.setattr(sqlite_store, "PROCESS_AT", 5)


def test_batches_go_to_a_writer_process_that_names_the_flow_process(headwater_session, low_threshold):
    """Once ready, the writer process writes the batches: every history is whole, rows
    carry the flow process's pid (crash detection keeps working), and closing the store
    ends the child."""
    store = headwater_session.store
    process = _ready_process(store)
    sent_before = process._next
    for n in (50, 300):
        doubles(n)
    store.flush()
    assert process._next > sent_before, "the batches were not sent to the writer process"
    child = process._proc.pid
    assert child != os.getpid()
    _histories_whole(store, 3)
    pids = {row[0] for row in store._conn().execute("SELECT DISTINCT pid FROM task_runs")}
    assert pids == {os.getpid()}
    store.close()
    assert process._proc.poll() == 0  # ended cleanly when its stdin closed


def test_when_the_writer_process_cannot_start_the_thread_writes(headwater_session, low_threshold, monkeypatch):
    """A writer process that cannot be started (no such interpreter) changes nothing the
    user sees: the thread writes every batch."""
    monkeypatch.setattr(writer_process.sys, "executable", "/nonexistent/python")
    store = headwater_session.store
    doubles(5)
    doubles(200)
    store.flush()
    assert store._process is None
    _histories_whole(store, 2)


def test_when_the_writer_process_dies_nothing_is_lost(headwater_session, low_threshold):
    """Killing the writer process between flows: the thread writes what it had not
    confirmed and everything after, and no flow call reports an error."""
    store = headwater_session.store
    process = _ready_process(store)
    process._proc.kill()
    process._proc.wait()
    for n in (40, 200):
        doubles(n)
    store.flush()
    assert store._process is None
    _histories_whole(store, 3)


def test_the_writer_process_ignores_ctrl_c(headwater_session, low_threshold):
    """Ctrl-C in a terminal reaches the whole process group; the writer process keeps
    going so the flow process can still record what the interrupt did."""
    store = headwater_session.store
    process = _ready_process(store)
    os.kill(process._proc.pid, signal.SIGINT)
    time.sleep(0.1)
    doubles(100)
    store.flush()
    assert process._proc.poll() is None and store._process is process
    _histories_whole(store, 2)


BUSY = textwrap.dedent('''
    import os, sys, time
    import headwater.plugins.sqlite_store as sqlite_store
    sqlite_store.PROCESS_AT = 5
    from headwater import flow, get_store, task

    @task
    def step(i):
        if i == 50:
            print(get_store()._process._proc.pid, flush=True)
            time.sleep(60)  # killed here
        return i

    @flow
    def busy():
        for i in range(10):
            step(i)
        get_store().flush()
        while not get_store()._process.is_ready():
            time.sleep(0.01)
        for i in range(100):
            step(i)

    busy()
''')


def test_a_killed_flow_process_ends_its_writer_process_and_its_runs_crash(tmp_path, headwater_home):
    """SIGKILL of a flow process whose batches go to a writer process: the child ends
    (its stdin closes), and the next session shows the runs left Running as Crashed and
    the finished ones Completed."""
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(headwater_home), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        time.sleep(0.2)  # the writer's next tick sends the runs recorded so far
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    _until(lambda: not Path(f"/proc/{child}").exists() or _is_zombie(child))
    with Session() as session:
        (run,) = session.store.read_flow_runs(flow_name="busy")
        assert run.state.is_crashed()
        states = [r.state.name for r in session.store.read_task_runs(flow_run_id=run.id)]
        assert states[:60] == ["Completed"] * 60 and states[60] == "Crashed"


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
