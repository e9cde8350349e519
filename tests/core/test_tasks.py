"""Calling tasks: inside flows, outside any flow, names, tags and recorded runs."""

from __future__ import annotations

import pytest

from headwater import flow, task


def test_a_task_called_in_a_flow_is_a_recorded_task_run(headwater_session):
    """Each call of a task inside a flow becomes one task run of that flow run."""

    @task
    def square(x):
        return x * x

    @flow
    def squares():
        return [square(i) for i in range(3)]

    assert squares() == [0, 1, 4]
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="squares")
    tasks = store.read_task_runs(flow_run_id=run.id)
    assert [t.task_name for t in tasks] == ["square"] * 3
    assert [t.parameters for t in tasks] == [{"x": 0}, {"x": 1}, {"x": 2}]
    assert all(t.state.is_completed() and t.run_count == 1 for t in tasks)


def test_a_task_called_outside_a_flow_runs():
    """A task works as a plain call with no flow around it."""

    @task
    def shout(word):
        return word.upper()

    assert shout("hi") == "HI"
    assert shout("hi", return_state=True).is_completed()


def test_a_failing_task_raises_its_exception_and_fails_the_flow():
    """The task's own exception reaches the flow; unhandled, it fails the flow."""

    @task
    def broken():
        raise KeyError("missing")

    @flow
    def uses_broken():
        broken()

    with pytest.raises(KeyError, match="missing"):
        uses_broken()


def test_return_state_on_a_task_call_does_not_raise():
    """task(..., return_state=True) gives the Failed state to inspect."""

    @task
    def broken():
        raise ValueError("nope")

    @flow
    def inspects():
        state = broken(return_state=True)
        return state.type.value, state.name

    assert inspects() == ("FAILED", "Failed")


def test_task_metadata_is_readable_as_attributes():
    """name, description, tags and options read as attributes of the task."""

    @task(name="Fetch", tags=["io", "demo"], retries=2)
    def fetch():
        """Fetch it."""

    assert fetch.name == "Fetch"
    assert fetch.description == "Fetch it."
    assert set(fetch.tags) == {"io", "demo"}
    assert fetch.retries == 2


def test_task_tags_are_recorded(headwater_session):
    """A task run records its task's tags."""

    @task(tags=["sensors"])
    def read():
        return 1

    @flow
    def reading():
        return read()

    reading()
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="reading")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert set(task_run.tags) == {"sensors"}


def test_task_with_options_changes_only_the_copy():
    """with_options makes a changed copy and leaves the original alone."""

    @task(retries=1)
    def base():
        return 1

    copy = base.with_options(retries=4, name="other")
    assert (copy.retries, copy.name) == (4, "other")
    assert (base.retries, base.name) == (1, "base")


def test_a_task_called_with_a_bad_argument_is_a_type_error():
    """Missing or unknown task arguments raise a TypeError naming them."""

    @task
    def needs(a):
        return a

    @flow
    def calls_badly():
        return needs(b=1)

    with pytest.raises(TypeError, match="'b'"):
        calls_badly()
