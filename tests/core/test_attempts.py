"""The attempt generators (headwater.engine.attempts), driven by hand with send/throw:
every decision of a task run's and a flow run's attempts, with no thread, no sleep and
no driver. What they yield is all the I/O a run asks for."""

from __future__ import annotations

import pytest

from headwater import flow, task
from headwater.engine.attempts import CALL_BODY, WAIT_FOR_FUTURES, Wait, flow_attempts, task_attempts
from headwater.engine.context import flow_run_ctx
from headwater.engine.flow_loop import FlowExecution
from headwater.engine.task_creation import create_task_run, standalone_context
from headwater.session import Session
from headwater.states import StateType


def _execution(a_task, **parameters):
    flow_context = standalone_context(a_task)
    return create_task_run(a_task, flow_context, parameters, ())


def _end(attempts, answer=None, throw=None):
    with pytest.raises(StopIteration) as done:
        if throw is not None:
            attempts.throw(throw)
        else:
            attempts.send(answer)
    return done.value.value


@task(retries=2, retry_delay_seconds=[30, 60])
def flaky(x):
    return x


def test_a_failed_attempt_asks_to_wait_the_retry_delay_then_calls_again(headwater_session):
    execution = _execution(flaky, x=1)
    attempts = task_attempts(execution)
    assert next(attempts) is CALL_BODY
    assert execution.task_run.state.name == "Running"

    command = attempts.throw(ValueError("first"))
    assert isinstance(command, Wait) and 25 < command.seconds <= 30  # no sleep happened
    assert execution.task_run.state.name == "AwaitingRetry"
    assert execution.retries_done == 1

    assert attempts.send(None) is CALL_BODY
    assert execution.task_run.state.name == "Retrying"
    command = attempts.throw(ValueError("second"))
    assert isinstance(command, Wait) and 55 < command.seconds <= 60  # the list's next delay

    assert attempts.send(None) is CALL_BODY
    final = _end(attempts, throw=ValueError("third"))  # retries used up: final, no Wait
    assert final.type is StateType.FAILED and "third" in final.message
    assert execution.task_run.run_count == 3

    headwater_session.store.flush()
    history = [s.name for s in headwater_session.store.read_states(execution.task_run.id)]
    assert history == ["Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry",
                       "Retrying", "Failed"]


def test_a_returned_value_completes_the_run_on_the_first_attempt(headwater_session):
    execution = _execution(flaky, x=7)
    attempts = task_attempts(execution)
    assert next(attempts) is CALL_BODY
    final = _end(attempts, answer=7)
    assert final.is_completed() and final.result() == 7
    assert execution.task_run.state is final


@task(retries=1, retry_delay_seconds=0)
def at_once(x):
    return x


def test_a_retry_due_at_once_is_not_a_wait(headwater_session):
    """Zero seconds to wait: the generator goes straight to the next attempt (both
    drivers alike; the async loop used to sleep(0) where the sync one did not)."""
    execution = _execution(at_once, x=1)
    attempts = task_attempts(execution)
    next(attempts)
    assert attempts.throw(ValueError("once")) is CALL_BODY
    assert _end(attempts, answer=1).is_completed()


def test_an_interrupt_during_the_wait_ends_the_run_crashed_and_is_raised(headwater_session):
    execution = _execution(flaky, x=1)
    attempts = task_attempts(execution)
    next(attempts)
    assert isinstance(attempts.throw(ValueError("first")), Wait)
    with pytest.raises(KeyboardInterrupt):
        attempts.throw(KeyboardInterrupt())
    assert execution.task_run.state.type is StateType.CRASHED
    assert "KeyboardInterrupt" in execution.task_run.state.message


def test_an_interrupt_in_the_body_ends_the_run_crashed_without_a_retry(headwater_session):
    execution = _execution(flaky, x=1)
    attempts = task_attempts(execution)
    next(attempts)
    with pytest.raises(KeyboardInterrupt):
        attempts.throw(KeyboardInterrupt())
    assert execution.task_run.state.type is StateType.CRASHED
    assert execution.retries_done == 0


@flow(retries=1, retry_delay_seconds=45)
def retried_flow():
    return "body"


def _flow_execution(a_flow):
    execution = FlowExecution(a_flow, {}, Session.current())
    execution.enter()
    assert execution.create() is None and execution.start_runner() is None
    return execution


def test_a_flow_attempt_waits_for_its_futures_then_settles(headwater_session):
    execution = _flow_execution(retried_flow)
    try:
        attempts = flow_attempts(execution)
        assert next(attempts) is CALL_BODY
        assert flow_run_ctx.get() is execution
        assert attempts.send("body") is WAIT_FOR_FUTURES
        final = _end(attempts, answer=None)
        assert final.is_completed() and final.result() == "body"
    finally:
        execution.finish()
        execution.exit()
    assert execution.flow_run.state.is_completed()


def test_a_failed_flow_attempt_waits_for_its_futures_then_the_retry_delay(headwater_session):
    execution = _flow_execution(retried_flow)
    try:
        attempts = flow_attempts(execution)
        next(attempts)
        # Its submitted tasks are waited for before the failure is judged.
        assert attempts.throw(ValueError("flow body failed")) is WAIT_FOR_FUTURES
        command = attempts.send(None)
        assert isinstance(command, Wait) and 40 < command.seconds <= 45
        assert execution.flow_run.state.name == "AwaitingRetry"
        assert attempts.send(None) is CALL_BODY
        assert execution.flow_run.state.name == "Retrying"
        attempts.throw(ValueError("again"))  # WAIT_FOR_FUTURES
        final = _end(attempts, answer=None)
        assert final.type is StateType.FAILED and "again" in final.message
    finally:
        execution.finish()
        execution.exit()
