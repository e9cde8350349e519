"""A task that calls itself as a task: the flow fails with one clear error, every task run
reaches a final state, and the traceback is printed once (not once per level)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from headwater import Session, flow, task
from headwater.engine import task_creation
from headwater.states import StateType

from .procs import child_env

SCRIPT = textwrap.dedent(
    """
    import sys
    from headwater import flow, task

    CASE = sys.argv[1]

    @task(retries=2 if CASE == "retries" else 0)
    def descend(n):
        return descend(n + 1)  # no base case

    @task
    def countdown(n):
        return countdown(n - 1) if n else 0

    @flow
    def recursive():
        if CASE == "low-limit":
            # Python's own limit strikes first, inside the engine, at every level.
            sys.setrecursionlimit(int(sys.argv[2]))
            return countdown(40)
        return descend(0)

    state = recursive(return_state=True)
    sys.setrecursionlimit(1000)
    print("flow:", state.type.value)
    """
)


def _run(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    home = tmp_path / "home"
    script = tmp_path / "recursive.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script), *args], env=child_env(home), capture_output=True,
                            text=True, timeout=60)
    return result, str(home)


def _task_runs(home: str, monkeypatch: pytest.MonkeyPatch) -> list:
    monkeypatch.setenv("HEADWATER_HOME", home)
    with Session() as session:
        (flow_run,) = session.store.read_flow_runs()
        assert flow_run.state.type is StateType.FAILED, flow_run.state
        return session.store.read_task_runs(flow_run_id=flow_run.id)


@pytest.mark.parametrize("case", ["plain", "retries"])
def test_a_task_calling_itself_without_end_fails_once_clearly(tmp_path, monkeypatch, case):
    """Unbounded recursion through task calls (with retries too: never retried level by
    level) fails the flow with the nesting limit named, all runs Failed, one traceback."""
    result, home = _run(tmp_path, case)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "flow: FAILED" in result.stdout
    output = result.stdout + result.stderr
    assert output.count("Traceback (most recent call last)") == 1, output[-3000:]
    assert len(output.splitlines()) < 1000
    assert "MAX_TASK_NESTING" in result.stderr

    runs = _task_runs(home, monkeypatch)
    assert len(runs) == task_creation.MAX_TASK_NESTING
    assert {run.state.type for run in runs} == {StateType.FAILED}
    assert all(run.run_count == 1 for run in runs), "nothing is retried"


@pytest.mark.parametrize("limit", ["150", "220"])
def test_runs_hit_by_pythons_recursion_limit_still_reach_a_final_state(tmp_path, monkeypatch, limit):
    """Python's recursion limit reached inside the engine (while it records a run) must
    not leave runs Pending or Running: the enclosing runs end them."""
    result, home = _run(tmp_path, "low-limit", limit)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "flow: FAILED" in result.stdout
    runs = _task_runs(home, monkeypatch)
    assert runs
    left = {run.name: run.state for run in runs if run.state is None or not run.state.is_final()
            or "process running this run ended" in (run.state.message or "")}
    assert not left, left  # ended by the flow's process, not marked Crashed after it exited


def test_nesting_within_the_limit_works_and_the_limit_is_a_clear_error(headwater_session):
    from headwater.errors import TaskNestingError

    limit = task_creation.MAX_TASK_NESTING
    @task
    def depth(n: int) -> int:
        return depth(n - 1) + 1 if n else 0

    @flow
    def nested(n: int) -> int:
        return depth(n)

    assert nested(limit - 1) == limit - 1
    with pytest.raises(TaskNestingError, match=rf"task 'depth' was not run: task runs are nested "
                                               rf"{limit} deep"):
        nested(limit)
    with pytest.raises(RecursionError):  # TaskNestingError is one
        nested(limit + 5)
