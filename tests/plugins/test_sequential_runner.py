"""The sequential task runner: each submitted task runs to completion, in order."""

from __future__ import annotations

import threading
import time

from headwater import flow, task
from headwater.task_runners import SequentialTaskRunner


@task
def nap(seconds):
    time.sleep(seconds)


def test_four_sleeping_tasks_take_their_full_time_one_after_another():
    """Four 0.5 s sleeps submitted together take at least the 2 s they add up to."""

    @flow(task_runner=SequentialTaskRunner())
    def sleepers():
        for _ in range(4):
            nap.submit(0.5)

    started = time.perf_counter()
    sleepers()
    assert time.perf_counter() - started >= 2.0


def test_submitted_tasks_run_in_submission_order_in_the_flow_thread():
    """Each task has finished before submit() returns, in the flow's own thread."""
    events = []

    @task
    def step(i):
        events.append(("run", i, threading.current_thread().name))
        return i

    @flow(task_runner="sequential")
    def ordered():
        for i in range(5):
            future = step.submit(i)
            events.append(("submitted", i, future.done()))

    ordered()
    flow_thread = threading.current_thread().name
    expected = []
    for i in range(5):
        expected += [("run", i, flow_thread), ("submitted", i, True)]
    assert events == expected


def test_a_failure_does_not_stop_later_submissions():
    """A failed task ends its own run; the next submitted task still runs."""
    ran = []

    @task
    def explode():
        raise ValueError("boom")

    @task
    def after():
        ran.append("after")

    @flow(task_runner=SequentialTaskRunner)
    def f():
        bad = explode.submit()
        after.submit()
        return bad.state.is_failed()

    assert f() is True
    assert ran == ["after"]


def test_async_tasks_run_to_completion_too():
    """An async task submitted to the sequential runner is run to completion at once."""

    @task
    async def async_double(x):
        return 2 * x

    @flow(task_runner="sequential")
    def f():
        future = async_double.submit(4)
        return future.done(), future.result()

    assert f() == (True, 8)


def test_an_async_flow_can_submit_async_tasks_to_it():
    """In an async flow (an event loop already running in the flow's thread) an async
    task submitted to the sequential runner still runs to completion at once."""
    import asyncio

    @task
    async def async_inc(x):
        await asyncio.sleep(0)
        return x + 1

    @task
    def inc(x):
        return x + 1

    @flow(task_runner=SequentialTaskRunner())
    async def f():
        future = async_inc.submit(inc.submit(1))
        return future.done(), future.result()

    assert asyncio.run(f()) == (True, 3)
