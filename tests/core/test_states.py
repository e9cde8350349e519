"""States: their types and names, how they read (repr/str), and result()."""

from __future__ import annotations

import pytest

from headwater import flow, task
from headwater.errors import RunFailed
from headwater.states import (
    AwaitingRetry,
    Cached,
    Completed,
    Crashed,
    Failed,
    NotReady,
    Paused,
    Pending,
    Retrying,
    Running,
    State,
    StateType,
    TimedOut,
)


def test_repr_shows_message_type_and_result():
    """repr reads like Completed(message='All states completed.', type=COMPLETED, result=4)."""
    state = Completed(message="All states completed.", data=4)
    assert repr(state) == "Completed(message='All states completed.', type=COMPLETED, result=4)"


def test_str_shows_type_only_when_the_name_differs():
    """str of Cached shows its type; str of Completed does not."""
    assert str(Cached()) == "Cached(type=COMPLETED)"
    assert str(Completed()) == "Completed()"
    assert str(Failed(message="boom")) == "Failed('boom')"
    assert str(Retrying()) == "Retrying(type=RUNNING)"


def test_named_states_have_the_documented_types():
    """Each constructor gives the name and type of DESIGN section 2."""
    expected = {
        Pending: (StateType.PENDING, "Pending"),
        Running: (StateType.RUNNING, "Running"),
        Retrying: (StateType.RUNNING, "Retrying"),
        Completed: (StateType.COMPLETED, "Completed"),
        Cached: (StateType.COMPLETED, "Cached"),
        AwaitingRetry: (StateType.SCHEDULED, "AwaitingRetry"),
        Failed: (StateType.FAILED, "Failed"),
        TimedOut: (StateType.FAILED, "TimedOut"),
        Crashed: (StateType.CRASHED, "Crashed"),
    }
    for make, (type_, name) in expected.items():
        state = make()
        assert (state.type, state.name) == (type_, name)


def test_predicates_follow_the_type():
    """is_completed/is_failed/is_final follow the state type, not the name."""
    assert Cached().is_completed() and Cached().is_final()
    assert TimedOut().is_failed() and TimedOut().is_final()
    assert Retrying().is_running() and not Retrying().is_final()
    assert Crashed().is_crashed() and Crashed().is_final()
    assert AwaitingRetry().is_scheduled()


def test_a_run_has_ended_when_final_or_not_ready():
    """NotReady is of type PENDING but its run never goes on: it has ended, as final
    states have; a run merely waiting (Pending, Paused, AwaitingRetry) has not."""
    assert NotReady().is_pending() and not NotReady().is_final() and NotReady().has_ended()
    assert Cached().has_ended() and Failed().has_ended() and Crashed().has_ended()
    for waiting in (Pending(), Paused(), AwaitingRetry(), Running(), Retrying()):
        assert not waiting.has_ended(), waiting
    assert not State(StateType.PENDING, "Late").has_ended()


def test_result_of_a_failed_state_raises_its_exception():
    """result() re-raises the failure; raise_on_failure=False returns it."""
    error = ValueError("bad")
    state = Failed(message="bad", data=error)
    with pytest.raises(ValueError, match="bad"):
        state.result()
    assert state.result(raise_on_failure=False) is error


def test_result_of_a_failed_state_without_exception_raises_run_failed():
    """A failed state that carries no exception still raises, naming the state."""
    with pytest.raises(RunFailed, match="Failed"):
        Failed(message="nope").result()


def test_state_details_carry_the_scheduled_time():
    """AwaitingRetry carries scheduled_time in state_details; a timestamp is always set."""
    import datetime as dt

    when = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    state = AwaitingRetry(scheduled_time=when)
    assert state.state_details.scheduled_time == when
    assert state.timestamp.tzinfo is not None
    assert isinstance(state, State)


def test_a_flow_run_goes_pending_running_completed(headwater_session):
    """The recorded history of a successful flow run and task run."""

    @task
    def double(x):
        return 2 * x

    @flow
    def doubling(x):
        return double(x)

    state = doubling(2, return_state=True)
    assert repr(state) == "Completed(message='All states completed.', type=COMPLETED, result=4)"
    store = headwater_session.store
    store.flush()
    run = store.read_flow_runs(flow_name="doubling")[0]
    assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Completed"]
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert [s.name for s in store.read_states(task_run.id)] == ["Pending", "Running", "Completed"]


def test_a_failing_flow_run_ends_failed(headwater_session):
    """Pending → Running → Failed, with the exception's type and text in the message."""

    @flow
    def broken():
        raise ValueError("no good")

    state = broken(return_state=True)
    assert state.is_failed()
    assert "ValueError: no good" in state.message
    store = headwater_session.store
    store.flush()
    run = store.read_flow_runs(flow_name="broken")[0]
    assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Failed"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_a_flow_ends_crashed_and_is_reraised(headwater_session, error):
    """KeyboardInterrupt/SystemExit in a flow body: the run ends Crashed, the caller sees it."""

    @flow
    def interrupted():
        raise error()

    with pytest.raises(error):
        interrupted()
    store = headwater_session.store
    store.flush()
    run = store.read_flow_runs(flow_name="interrupted")[0]
    assert run.state.is_crashed()
    assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Crashed"]
    assert error.__name__ in run.state.message


def test_base_exception_in_a_task_crashes_task_and_flow(headwater_session):
    """An interrupt inside a task ends the task run and its flow run Crashed, re-raised."""

    @task
    def stop():
        raise KeyboardInterrupt()

    @flow
    def stopping():
        stop()

    with pytest.raises(KeyboardInterrupt):
        stopping()
    store = headwater_session.store
    store.flush()
    run = store.read_flow_runs(flow_name="stopping")[0]
    assert run.state.is_crashed()
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.state.is_crashed()
    assert [s.name for s in store.read_states(task_run.id)] == ["Pending", "Running", "Crashed"]


def test_final_states_carry_the_ids_of_their_runs():
    """The state a task call or a flow call ends in names its task run and flow run."""
    from headwater import flow, get_store, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def ids() -> object:
        return [double(2, return_state=True)]

    flow_state = ids(return_state=True)
    task_state = flow_state.result()[0]
    store = get_store()
    store.flush()
    run = store.read_flow_runs(limit=1)[0]
    assert flow_state.state_details.flow_run_id == run.id
    assert task_state.state_details.flow_run_id == run.id
    assert task_state.state_details.task_run_id == store.read_task_runs(flow_run_id=run.id)[0].id


def test_state_details_of_a_state_pickled_before_run_ids_were_kept():
    """A State unpickled from an older headwater (no ``_run_ids`` slot value) still
    gives its details, instead of raising AttributeError."""
    from headwater import states as S

    state = S.Completed(data=1)
    del state._run_ids
    assert state.state_details.task_run_id is None


def test_run_ids_reach_details_made_before_or_after_the_run_ended():
    """Which run a final state ended is in its details whether someone read the details
    before the engine noted the run (details made first) or after."""
    from headwater import states as S

    early, late = S.Completed(), S.Completed()
    early.state_details  # made before the run is noted
    early.note_ended_run("flow-1", "task-1")
    late.note_ended_run("flow-1", "task-1")
    for state in (early, late):
        assert (state.state_details.flow_run_id, state.state_details.task_run_id) == ("flow-1", "task-1")
