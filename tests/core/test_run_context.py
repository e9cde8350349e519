"""``headwater.context.get_run_context()``: the active task run's or flow run's context."""

from __future__ import annotations

import threading

import pytest

from headwater import flow, task
from headwater.context import (FlowRunContext, MissingContextError, TaskRunContext, flow_run_ctx,
                               get_run_context, task_run_ctx)
from headwater.errors import HeadwaterError


def test_outside_a_run_it_raises_missing_context_error():
    """Outside any run: MissingContextError, a headwater error and a RuntimeError, whose
    message says where to call it."""
    with pytest.raises(MissingContextError, match=r"outside a flow run or task run") as caught:
        get_run_context()
    assert isinstance(caught.value, HeadwaterError) and isinstance(caught.value, RuntimeError)


def test_in_a_task_it_describes_the_task_run_and_its_flow_run():
    """Inside a task: task_run (name, id, tags, run_count, parameters), task and flow_run."""
    attempts = []

    @task(tags=["t"], retries=1, task_run_name="double-{x}")
    def double(x: int) -> dict:
        ctx = get_run_context()
        run = ctx.task_run
        attempts.append(run.run_count)
        if run.run_count == 1:
            raise ValueError("first attempt fails")
        return {"name": run.name, "id": run.id, "tags": sorted(run.tags), "run_count": run.run_count,
                "parameters": dict(run.parameters), "task": ctx.task.name, "flow_run": ctx.flow_run.name,
                "is_task_context": isinstance(ctx, TaskRunContext)}

    @flow(flow_run_name="outer")
    def pipeline() -> dict:
        return double(4)

    seen = pipeline()
    assert seen.pop("id")
    assert seen == {"name": "double-4", "tags": ["t"], "run_count": 2, "parameters": {"x": 4},
                    "task": "double", "flow_run": "outer", "is_task_context": True}
    assert attempts == [1, 2]


def test_in_a_flow_it_describes_the_flow_run_its_flow_and_task_runner():
    """Inside a flow body (not in a task): flow_run, flow and the task runner."""

    @flow(flow_run_name="described", task_runner="sequential")
    def described() -> tuple:
        ctx = get_run_context()
        return ctx.flow_run.name, ctx.flow.name, ctx.task_runner.name, isinstance(ctx, FlowRunContext)

    assert described() == ("described", "described", "SequentialTaskRunner", True)


def test_a_task_called_outside_a_flow_has_no_flow_run():
    """A task called outside any flow still has its task run; flow_run is None."""

    @task
    def alone() -> tuple:
        ctx = get_run_context()
        return ctx.task_run.task_name, ctx.flow_run

    assert alone() == ("alone", None)


def test_a_thread_started_by_hand_has_no_run_context():
    """A thread the flow starts itself does not inherit the context: MissingContextError,
    as it has no way to know which run it belongs to."""
    errors = []

    @flow
    def starts_a_thread() -> None:
        def body() -> None:
            try:
                get_run_context()
            except MissingContextError as exc:
                errors.append(exc)

        worker = threading.Thread(target=body)
        worker.start()
        worker.join()

    starts_a_thread()
    assert len(errors) == 1


def test_the_context_variables_keep_their_names():
    """The context variables stay importable from headwater.context, empty outside runs."""
    assert flow_run_ctx.get() is None and task_run_ctx.get() is None


def test_flow_run_context_get_is_the_active_flow_run_s_context_or_none():
    """FlowRunContext.get(): the flow run's context in the flow and its tasks, None outside."""

    @task
    def in_task() -> str:
        return FlowRunContext.get().flow_run.name

    @flow(flow_run_name="got")
    def in_flow() -> tuple:
        return FlowRunContext.get().flow_run.name, in_task()

    assert in_flow() == ("got", "got")
    assert FlowRunContext.get() is None


def test_task_run_context_get_is_the_active_task_run_or_none():
    """Prefect's ``TaskRunContext.get()``: the task run's context inside it, else None;
    ``FlowRunContext.get().parameters`` the flow run's parameters."""
    seen = []

    @task
    def inside() -> None:
        seen.append(TaskRunContext.get().task_run.name)

    @flow
    def outer(day: str = "monday") -> None:
        seen.append(TaskRunContext.get())
        seen.append(FlowRunContext.get().parameters)
        inside()

    assert TaskRunContext.get() is None
    outer()
    assert seen[0] is None and seen[1] == {"day": "monday"} and seen[2].startswith("inside-")
