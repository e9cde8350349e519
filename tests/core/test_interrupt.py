"""KeyboardInterrupt while tasks run: the process exits and nothing is left Running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from headwater import Session
from headwater.states import StateType

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    # Started in the background or under nohup, SIGINT is ignored: Ctrl-C is wanted here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from headwater import flow, task
    from headwater.task_runners import ConcurrentTaskRunner, SequentialTaskRunner

    started = threading.Semaphore(0)

    @task
    def sleeper(i):
        started.release()
        if RUNNER == "sequential":
            os.kill(os.getpid(), signal.SIGINT)  # the interrupt lands inside this task
        time.sleep(30)

    @task
    def after(x):
        return x

    RUNNER = sys.argv[1]

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2) if RUNNER == "concurrent"
          else SequentialTaskRunner())
    def interrupted():
        futures = [sleeper.submit(i) for i in range(3)]  # two run, one waits for a worker
        after.submit(futures[0])  # waits for its upstream
        started.acquire(); started.acquire()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the two tasks sleep
        for future in futures:
            future.result()

    interrupted()
    """
)


@pytest.mark.parametrize("runner", ["concurrent", "sequential"])
def test_an_interrupted_flow_leaves_no_run_running(tmp_path, monkeypatch, runner):
    """Ctrl-C during a flow: the process exits promptly with the interrupt, the flow run
    is Crashed, and every task run it started or queued is Crashed or Cancelled."""
    home = tmp_path / "home"
    script = tmp_path / "interrupted.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(home), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")
    result = subprocess.run([sys.executable, str(script), runner], env=env, capture_output=True,
                            text=True, timeout=25)
    assert result.returncode != 0
    assert "KeyboardInterrupt" in result.stderr

    monkeypatch.setenv("HEADWATER_HOME", str(home))
    with Session() as session:
        (flow_run,) = session.store.read_flow_runs(flow_name="interrupted")
        task_runs = session.store.read_task_runs(flow_run_id=flow_run.id)
        assert flow_run.state.type is StateType.CRASHED
        assert "KeyboardInterrupt" in flow_run.state.message
        finals = {run.name: run.state.type for run in task_runs}
        assert finals, "the task runs were recorded"
        assert set(finals.values()) <= {StateType.CRASHED, StateType.CANCELLED}, finals
        if runner == "concurrent":
            assert len(finals) == 4
            assert list(finals.values()).count(StateType.CRASHED) == 2  # the two sleeping
        for run in [flow_run, *task_runs]:
            assert [s for s in session.store.read_states(run.id) if s.is_final()], run


def test_futures_held_after_an_interrupt_are_finished_not_left_hanging():
    """After a flow is interrupted, a future the caller kept reads the run's final state
    (Crashed or Cancelled) at once instead of blocking until the thread finishes."""
    import time as _time

    import pytest

    from headwater import flow, task

    @task
    def slow() -> int:
        _time.sleep(1.5)
        return 1

    kept = []

    @flow
    def interrupted() -> None:
        kept.append(slow.submit())
        kept.append(slow.submit())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    started = _time.perf_counter()
    states = [future.wait(timeout=5) for future in kept]
    assert _time.perf_counter() - started < 1.0
    assert all(s is not None and s.type.value in ("CRASHED", "CANCELLED") for s in states), states
