"""Subflows: a flow called inside a flow is recorded as a child of its parent run."""

from __future__ import annotations

import pytest

from headwater import flow, task


def test_a_subflow_is_recorded_with_its_parent_id(headwater_session):
    """The child flow run carries parent_flow_run_id; the parent can list its children."""

    @flow
    def child(n):
        return n * 2

    @flow
    def parent():
        return [child(1), child(2)]

    assert parent() == [2, 4]
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="parent")
    children = store.read_flow_runs(parent_flow_run_id=run.id)
    assert sorted(c.parameters["n"] for c in children) == [1, 2]
    assert all(c.flow_name == "child" and c.state.is_completed() for c in children)
    assert run.parent_flow_run_id is None


def test_a_subflow_called_in_a_task_records_the_task_too(headwater_session):
    """A flow called inside a task links to the task run and the flow run."""

    @flow
    def inner():
        return "in"

    @task
    def wraps():
        return inner()

    @flow
    def outer():
        return wraps()

    assert outer() == "in"
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="outer")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    (child,) = store.read_flow_runs(flow_name="inner")
    assert child.parent_flow_run_id == run.id
    assert child.parent_task_run_id == task_run.id


def test_a_failing_subflow_fails_the_parent_with_its_exception():
    """The child's exception reaches the parent; unhandled, the parent fails too."""

    @flow
    def bad_child():
        raise ArithmeticError("child broke")

    @flow
    def parent():
        bad_child()

    with pytest.raises(ArithmeticError, match="child broke"):
        parent()


def test_a_subflows_tasks_belong_to_the_subflow(headwater_session):
    """Task runs inside a child flow are recorded under the child's run, not the parent's."""

    @task
    def step():
        return 1

    @flow
    def child():
        return step()

    @flow
    def parent():
        return child() + step()

    assert parent() == 2
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="parent")
    (child_run,) = store.read_flow_runs(flow_name="child")
    assert len(store.read_task_runs(flow_run_id=run.id)) == 1
    assert len(store.read_task_runs(flow_run_id=child_run.id)) == 1


def test_nested_subflows_three_deep(headwater_session):
    """Grandchild → child → parent links hold at every level."""

    @flow
    def grandchild():
        return "g"

    @flow
    def middle():
        return grandchild()

    @flow
    def top():
        return middle()

    assert top() == "g"
    store = headwater_session.store
    store.flush()
    (t,) = store.read_flow_runs(flow_name="top")
    (m,) = store.read_flow_runs(flow_name="middle")
    (g,) = store.read_flow_runs(flow_name="grandchild")
    assert (m.parent_flow_run_id, g.parent_flow_run_id) == (t.id, m.id)
