"""headwater.runtime: the active flow run and task run, empty outside runs."""

from __future__ import annotations

import datetime as dt

import pytest

from headwater import flow, task
from headwater.runtime import flow_run, task_run


def test_outside_a_run_every_attribute_is_empty_and_never_raises():
    """Outside any run the attributes read None, {}, [] or 0."""
    assert flow_run.id is None and flow_run.name is None and flow_run.flow_name is None
    assert flow_run.parameters == {} and flow_run.tags == [] and flow_run.run_count == 0
    assert flow_run.start_time is None
    assert task_run.id is None and task_run.name is None and task_run.task_name is None
    assert task_run.parameters == {} and task_run.tags == [] and task_run.run_count == 0


def test_an_unknown_attribute_is_an_attribute_error_listing_the_known_ones():
    """A misspelt attribute names what is available."""
    with pytest.raises(AttributeError, match="available: id, name"):
        flow_run.nmae  # noqa: B018


def test_inside_a_flow_the_flow_run_is_described():
    """In a flow body: id, name, flow_name, parameters (defaults included), run_count, start_time."""

    @flow(flow_run_name="inspect-{x}")
    def inspect_me(x: int, y: str = "why"):
        return {
            "id": flow_run.id,
            "name": flow_run.name,
            "flow_name": flow_run.flow_name,
            "parameters": flow_run.parameters,
            "run_count": flow_run.run_count,
            "start_time": flow_run.start_time,
            "task_run": task_run.id,
        }

    seen = inspect_me(1)
    assert seen["id"] and seen["name"] == "inspect-1" and seen["flow_name"] == "inspect-me"
    assert seen["parameters"] == {"x": 1, "y": "why"}
    assert seen["run_count"] == 1
    assert isinstance(seen["start_time"], dt.datetime)
    assert seen["task_run"] is None
    assert flow_run.id is None  # empty again afterwards


def test_inside_a_task_both_views_are_filled(headwater_session):
    """In a task: task_run describes the task run, flow_run its flow run."""

    @task(tags=["b", "a"])
    def look(v):
        return (task_run.id, task_run.name, task_run.task_name, task_run.parameters, task_run.tags,
                task_run.run_count, flow_run.flow_name)

    @flow
    def looking():
        return look(5)

    tid, name, task_name, params, tags, count, flow_name = looking()
    assert task_name == "look" and name.startswith("look-") and params == {"v": 5}
    assert tags == ["a", "b"] and count == 1 and flow_name == "looking"
    headwater_session.store.flush()
    assert headwater_session.store.read_task_run(tid).name == name


def test_a_task_outside_a_flow_has_a_task_run_but_no_flow_run():
    """A task called on its own sees its task run; flow_run reads empty."""

    @task
    def alone():
        return task_run.task_name, flow_run.id

    assert alone() == ("alone", None)


def test_a_subflow_sees_its_own_flow_run():
    """Inside a child flow, flow_run is the child's run; afterwards the parent's again."""

    @flow
    def child_flow():
        return flow_run.flow_name

    @flow
    def parent_flow():
        inner = child_flow()
        return inner, flow_run.flow_name

    assert parent_flow() == ("child-flow", "parent-flow")


def test_flow_run_run_count_grows_with_flow_retries():
    """flow_run.run_count counts the attempts of the flow run."""
    seen = []

    @flow(retries=2, retry_delay_seconds=0)
    def counts():
        seen.append(flow_run.run_count)
        if len(seen) < 3:
            raise RuntimeError("again")

    counts()
    assert seen == [1, 2, 3]
