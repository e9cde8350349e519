"""A flow that returns a state of its own making: Completed with a message, Cancelled;
on_cancellation callbacks."""

from __future__ import annotations

import pytest

from headwater import flow, get_store, task
from headwater.errors import ConfigurationError, RunFailed
from headwater.states import Cancelled, Completed, StateType


def test_a_flow_returning_completed_with_a_message_ends_with_that_message():
    """The run ends Completed with the returned message and data, recorded so."""

    @flow
    def report() -> Completed:
        return Completed(message="3 files uploaded", data=3)

    state = report(return_state=True)
    assert (state.message, state.result()) == ("3 files uploaded", 3)
    [run] = get_store().read_flow_runs()
    assert run.state.message == "3 files uploaded"


def test_a_bare_completed_or_a_task_s_state_keeps_the_usual_message():
    """Completed() with no message, or a task run's own state returned, ends with
    "All states completed." as a plain return value does."""

    @task
    def one() -> int:
        return 1

    @flow
    def bare() -> Completed:
        return Completed()

    @flow
    def passes_on() -> object:
        return one(return_state=True)

    assert bare(return_state=True).message == "All states completed."
    returned = passes_on(return_state=True)
    assert (returned.message, returned.result()) == ("All states completed.", 1)


def test_a_flow_returning_cancelled_ends_cancelled_and_calls_on_cancellation():
    """Returning Cancelled(): the run ends Cancelled with its message (no retry, no
    failure), on_cancellation runs with (flow, run, state), and calling it raises."""
    seen = []

    @flow(retries=2, on_cancellation=[lambda f, run, state: seen.append((f.name, run.name, state.name))],
          on_failure=[lambda f, run, state: seen.append("failure")], flow_run_name="stopped")
    def stops() -> Cancelled:
        return Cancelled(message="nothing to do today")

    state = stops(return_state=True)
    assert state.type is StateType.CANCELLED and state.message == "nothing to do today"
    assert seen == [("stops", "stopped", "Cancelled")]
    [run] = get_store().read_flow_runs()
    assert run.run_count == 1 and run.state.type is StateType.CANCELLED
    with pytest.raises(RunFailed, match="nothing to do today"):
        stops()


def test_a_task_ending_cancelled_calls_its_on_cancellation_callbacks():
    """A task returning Cancelled() calls its on_cancellation callback, not on_failure."""
    seen = []

    @task(on_cancellation=lambda t, run, state: seen.append((t.name, state.message)),
          on_failure=[lambda t, run, state: seen.append("failure")])
    def skip() -> Cancelled:
        return Cancelled(message="skipped")

    @flow
    def runs_it() -> str:
        return skip(return_state=True).type.value

    assert runs_it() == "CANCELLED"
    assert seen == [("skip", "skipped")]


def test_on_cancellation_must_be_callables():
    """A bad on_cancellation names the option and what it expects."""
    with pytest.raises(ConfigurationError, match=r"on_cancellation=.*a callable or a list of callables"):
        @task(on_cancellation="not callable")
        def bad() -> None:
            pass


def test_a_flow_returning_failed_with_a_message_ends_with_that_message_and_raises_failed_run():
    """``return Failed(message=...)`` ends the run with that message (not wrapped), and
    calling the flow raises FailedRun, Prefect's name; Cancelled raises CancelledRun."""
    from headwater.errors import CancelledRun, FailedRun
    from headwater.states import Failed

    @flow
    def refuses() -> Failed:
        return Failed(message="nope")

    @flow
    def stops() -> Cancelled:
        return Cancelled(message="nothing to do")

    state = refuses(return_state=True)
    assert state.is_failed() and state.message == "nope"
    assert get_store().read_flow_runs()[0].state.message == "nope"
    with pytest.raises(FailedRun, match="nope"):
        refuses()
    with pytest.raises(CancelledRun, match="nothing to do"):
        stops()
