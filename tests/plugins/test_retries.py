"""Retries through the state policy: history, run_count, delays, conditions, flow retries."""

from __future__ import annotations

import pytest

from headwater import flow, task
from headwater.errors import RunFailed
from headwater.plugins.retries import delay_for


def _history(store, run_id):
    store.flush()
    return [s.name for s in store.read_states(run_id)]


def test_a_retried_task_shows_every_attempt_in_its_history(headwater_session):
    """Fail twice, then succeed: Pending, Running, (AwaitingRetry, Retrying) x2, Completed."""
    attempts = []

    @task(retries=3, retry_delay_seconds=0)
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("reset")
        return "payload"

    @flow
    def downloads():
        return flaky()

    assert downloads() == "payload"
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="downloads")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert _history(store, task_run.id) == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry", "Retrying", "Completed"]
    assert task_run.run_count == 3


def test_retrying_has_type_running_and_awaiting_retry_a_scheduled_time(headwater_session):
    """Retrying is of type RUNNING; AwaitingRetry (SCHEDULED) carries scheduled_time."""

    @task(retries=1, retry_delay_seconds=0)
    def once_bad():
        if not once_bad_calls:
            once_bad_calls.append(1)
            raise ValueError("first")
        return 1

    once_bad_calls: list = []

    @flow
    def retry_types():
        return once_bad()

    retry_types()
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="retry-types")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    states = {s.name: s for s in store.read_states(task_run.id)}
    assert states["Retrying"].type.value == "RUNNING"
    assert states["AwaitingRetry"].type.value == "SCHEDULED"
    assert states["AwaitingRetry"].state_details.scheduled_time is not None


def test_retries_exhausted_ends_failed_with_the_last_error(headwater_session):
    """After the last retry the run is Failed and the exception is raised to the caller."""

    @task(retries=2, retry_delay_seconds=0)
    def always_fails():
        raise ValueError("bad code")

    @flow
    def doomed():
        always_fails()

    state = doomed(return_state=True)
    assert state.is_failed()
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="doomed")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.run_count == 3
    assert _history(store, task_run.id)[-1] == "Failed"
    assert "ValueError: bad code" in task_run.state.message
    with pytest.raises(ValueError, match="bad code"):
        state.result()


def test_retry_log_lines_say_which_retry_and_when(capsys):
    """Each retry is logged as 'Retry n/N will start S second(s) from now'."""

    @task(retries=2, retry_delay_seconds=[0.01, 0.5 * 0])
    def always_fails():
        raise ValueError("bad code")

    @flow
    def logged():
        always_fails(return_state=True)

    logged()
    err = capsys.readouterr().err
    assert "Retry 1/2 will start 0.01 second(s) from now" in err
    assert "Retry 2/2 will start 0 second(s) from now" in err


def test_delay_lists_repeat_their_last_value_and_jitter_stays_positive():
    """retry_delay_seconds as a list: one per retry, the last repeats; jitter never < 0."""
    assert [delay_for([1, 2], i, None) for i in range(4)] == [1.0, 2.0, 2.0, 2.0]
    assert delay_for(5, 3, None) == 5.0
    spread = [delay_for(10, 0, 0.5) for _ in range(200)]
    assert all(5.0 <= d <= 15.0 for d in spread)
    assert len(set(spread)) > 1


def test_retry_condition_fn_can_stop_retries(headwater_session):
    """retry_condition_fn returning False ends the run Failed after one attempt."""
    attempts = []

    def only_connection_errors(task, task_run, state):
        return isinstance(state.result(raise_on_failure=False), ConnectionError)

    @task(retries=5, retry_condition_fn=only_connection_errors)
    def picky():
        attempts.append(1)
        raise ValueError("not worth retrying")

    @flow
    def picky_flow():
        picky()

    assert picky_flow(return_state=True).is_failed()
    assert len(attempts) == 1


def test_a_retry_condition_fn_that_raises_fails_the_run_naming_it(headwater_session):
    """A raising retry_condition_fn: no hang, no further attempts, the error in the state."""
    attempts = []

    def broken_condition(task, task_run, state):
        raise KeyError("condition broke")

    @task(retries=3, retry_condition_fn=broken_condition)
    def guarded():
        attempts.append(1)
        raise ValueError("original")

    @flow
    def guarded_flow():
        guarded()

    state = guarded_flow(return_state=True)
    assert state.is_failed()
    assert len(attempts) == 1
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="guarded-flow")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.state.is_failed()
    assert "broken_condition" in task_run.state.message
    assert "KeyError" in task_run.state.message and "ValueError: original" in task_run.state.message
    with pytest.raises(RunFailed, match="retry_condition_fn 'broken_condition'.*KeyError"):
        state.result()


def test_flow_retries_rerun_the_body_its_tasks_and_child_flows(headwater_session):
    """A flow retry runs the whole body again, with new task runs and child flow runs."""
    calls = {"body": 0, "task": 0, "child": 0}

    @task
    def step():
        calls["task"] += 1

    @flow
    def child():
        calls["child"] += 1
        step()

    @flow(retries=1, retry_delay_seconds=0)
    def parent():
        calls["body"] += 1
        step()
        child()
        if calls["body"] == 1:
            raise RuntimeError("first attempt fails")
        return "second time lucky"

    assert parent() == "second time lucky"
    assert calls == {"body": 2, "task": 4, "child": 2}
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="parent")
    assert run.run_count == 2
    assert _history(store, run.id) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    assert len(store.read_flow_runs(flow_name="child", parent_flow_run_id=run.id)) == 2


def test_a_flow_retry_follows_an_unhandled_task_failure(headwater_session):
    """A flow failed by its task is retried too; the task gets a fresh run."""
    calls = []

    @task
    def sometimes():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first")
        return len(calls)

    @flow(retries=2, retry_delay_seconds=0)
    def retried():
        return sometimes()

    assert retried() == 2
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="retried")
    task_states = [t.state.name for t in store.read_task_runs(flow_run_id=run.id)]
    assert task_states == ["Failed", "Completed"]


def test_run_count_is_readable_at_runtime():
    """headwater.runtime.task_run.run_count counts this run's attempts."""
    from headwater.runtime import task_run

    seen = []

    @task(retries=2)
    def counts():
        seen.append(task_run.run_count)
        if len(seen) < 3:
            raise ValueError("again")

    @flow
    def counting():
        counts()

    counting()
    assert seen == [1, 2, 3]


def test_an_interrupt_while_awaiting_a_retry_ends_the_run_crashed(headwater_session):
    """Ctrl-C during a retry delay: task run and flow run end Crashed, the interrupt is raised."""
    import os
    import signal
    import threading

    @task(retries=1, retry_delay_seconds=5)
    def fails_then_waits():
        raise ValueError("first attempt")

    @flow
    def interrupted_while_waiting():
        fails_then_waits()

    # Started in the background or under nohup, SIGINT is ignored: Ctrl-C is wanted here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupted_while_waiting()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="interrupted-while-waiting")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert _history(store, task_run.id) == ["Pending", "Running", "AwaitingRetry", "Crashed"]
    assert run.state.is_crashed()
