"""Async flows and tasks: awaited by the caller, recorded like sync ones."""

from __future__ import annotations

import asyncio

import pytest

from headwater import flow, task


def test_an_async_flow_is_awaited_and_returns_its_value():
    """Calling an async flow gives an awaitable whose result is the return value."""

    @flow
    async def compute(x):
        await asyncio.sleep(0)
        return x + 1

    assert asyncio.run(compute(1)) == 2


def test_async_tasks_awaited_in_an_async_flow(headwater_session):
    """Async tasks awaited inside an async flow run as recorded task runs."""

    @task
    async def fetch(n):
        await asyncio.sleep(0)
        return n * 10

    @flow
    async def gather_all():
        return await asyncio.gather(fetch(1), fetch(2))

    assert asyncio.run(gather_all()) == [10, 20]
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="gather-all")
    tasks = store.read_task_runs(flow_run_id=run.id)
    assert sorted(t.parameters["n"] for t in tasks) == [1, 2]
    assert all(t.state.is_completed() for t in tasks)


def test_sync_tasks_inside_an_async_flow():
    """A sync task called inside an async flow runs and returns its value."""

    @task
    def plain(x):
        return -x

    @flow
    async def mixed():
        return plain(3)

    assert asyncio.run(mixed()) == -3


def test_an_async_task_called_in_a_sync_flow_runs_to_completion():
    """Outside an event loop, an async task call runs it and returns the value."""

    @task
    async def later():
        await asyncio.sleep(0)
        return "done"

    @flow
    def sync_flow():
        return later()

    assert sync_flow() == "done"


def test_an_async_task_in_a_sync_flow_runs_to_completion_while_an_event_loop_runs(headwater_session):
    """A sync flow called where an event loop runs in the thread (a notebook cell, an
    async web handler) gets its async task's value, not a coroutine, and the run is
    recorded Completed."""

    @task
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    @flow
    def sync_flow():
        return double(21)

    async def notebook_cell():
        return sync_flow()

    assert asyncio.run(notebook_cell()) == 42
    (run,) = headwater_session.store.read_task_runs()
    assert run.task_name == "double" and run.state.is_completed()


def test_a_sync_task_in_an_async_flow_gets_its_async_tasks_values():
    """A sync task body cannot await: the async task it calls runs to completion, also
    when the async flow around it runs on the event loop of the same thread."""

    @task
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    @task
    def total(n):
        return sum(double(i) for i in range(n))

    @flow
    async def async_flow():
        return total(4)

    assert asyncio.run(async_flow()) == 12


def test_an_async_task_called_outside_a_flow_in_an_event_loop_is_awaitable():
    """Outside any flow, where an event loop runs, an async task call is awaited."""

    @task
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    async def main():
        return await double(5)

    assert asyncio.run(main()) == 10


def test_an_async_flow_failure_raises_the_original_exception():
    """An exception in an async flow reaches the awaiting caller."""

    @flow
    async def broken():
        raise LookupError("async broke")

    with pytest.raises(LookupError, match="async broke"):
        asyncio.run(broken())


def test_async_task_retries_and_return_state():
    """An async task retries like a sync one; return_state works when awaited."""
    attempts = []

    @task(retries=2)
    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("again")
        return "ok"

    @flow
    async def runs_flaky():
        state = await flaky(return_state=True)
        return state.result(), state.name

    assert asyncio.run(runs_flaky()) == ("ok", "Completed")
    assert len(attempts) == 3
