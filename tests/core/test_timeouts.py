"""timeout_seconds on flows and tasks: TimedOut (type FAILED), subject to retries."""

from __future__ import annotations

import asyncio
import time

import pytest

from headwater import flow, task
from headwater.errors import TaskTimeout


def test_a_slow_task_times_out(headwater_session):
    """A task over its timeout ends TimedOut (type FAILED) and raises a TimeoutError."""

    @task(timeout_seconds=0.1)
    def slow():
        time.sleep(0.5)

    @flow
    def waits():
        return slow(return_state=True)

    state = waits(return_state=True)
    assert state.is_failed()
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="waits")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.state.name == "TimedOut"
    assert task_run.state.type.value == "FAILED"
    assert "timeout of 0.1 second(s)" in task_run.state.message


def test_a_timeout_is_retried(headwater_session):
    """TimedOut goes through retries like any failure."""
    attempts = []

    @task(timeout_seconds=0.1, retries=1, retry_delay_seconds=0)
    def slow_then_fast():
        attempts.append(1)
        if len(attempts) == 1:
            time.sleep(1)
        return "fast"

    @flow
    def retries_timeout():
        return slow_then_fast()

    assert retries_timeout() == "fast"
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="retries-timeout")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert [s.name for s in store.read_states(task_run.id)] == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]


def test_a_slow_flow_times_out():
    """A flow over its timeout ends TimedOut; the caller gets a TimeoutError."""

    @flow(timeout_seconds=0.1)
    def slow_flow():
        time.sleep(1)

    state = slow_flow(return_state=True)
    assert state.name == "TimedOut" and state.is_failed()
    with pytest.raises(TimeoutError, match="timeout of 0.1 second"):
        slow_flow()


def test_an_async_task_timeout_cancels_it():
    """An async task is cancelled at its timeout and ends TimedOut."""

    @task(timeout_seconds=0.1)
    async def sleepy():
        await asyncio.sleep(5)

    @flow
    async def async_waits():
        state = await sleepy(return_state=True)
        return state.name, type(state.result(raise_on_failure=False))

    assert asyncio.run(async_waits()) == ("TimedOut", TaskTimeout)


def test_an_async_flow_timeout():
    """An async flow over its timeout ends TimedOut."""

    @flow(timeout_seconds=0.1)
    async def slow_async_flow():
        await asyncio.sleep(5)

    state = asyncio.run(slow_async_flow(return_state=True))
    assert state.name == "TimedOut"


def test_a_task_within_its_timeout_completes():
    """A task that finishes in time keeps its result."""

    @task(timeout_seconds=5)
    def quick():
        return "in time"

    @flow
    def fine():
        return quick()

    assert fine() == "in time"


def test_blocking_code_in_an_async_task_still_ends_timed_out():
    """Blocking code cannot be cancelled, but an async task that overran ends TimedOut."""

    @task(timeout_seconds=0.05)
    async def blocks():
        time.sleep(0.3)  # never yields to the event loop
        return "too late"

    @flow
    async def runs_blocking():
        state = await blocks(return_state=True)
        return state.name

    assert asyncio.run(runs_blocking()) == "TimedOut"


def test_a_timed_out_flow_body_starts_no_new_task_runs(headwater_session):
    """After a flow timeout the abandoned body finishes its current task, then starts none."""
    import threading

    finished = threading.Event()

    @task
    def slow_step():
        time.sleep(0.4)

    @task
    def later_step():
        return "should not run"

    @flow(timeout_seconds=0.1)
    def abandoned():
        slow_step()
        try:
            later_step()
        finally:
            finished.set()

    assert abandoned(return_state=True).name == "TimedOut"
    assert finished.wait(5)
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="abandoned")
    assert [t.task_name for t in store.read_task_runs(flow_run_id=run.id)] == ["slow_step"]
    assert run.state.name == "TimedOut"


def test_a_flow_retried_after_a_timeout_runs_its_tasks_again():
    """A timed-out flow with retries runs a fresh attempt whose tasks do run."""
    attempts = []

    @task
    def step():
        return "done"

    @flow(timeout_seconds=0.2, retries=1, retry_delay_seconds=0)
    def slow_first():
        attempts.append(1)
        if len(attempts) == 1:
            time.sleep(0.6)
        return step()

    assert slow_first() == "done"
    assert len(attempts) == 2
