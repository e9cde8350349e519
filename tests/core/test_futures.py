"""Futures of submitted task runs: result, wait, state, and futures found in arguments."""

from __future__ import annotations

import threading

import pytest

from headwater import flow, task
from headwater.errors import UpstreamFailed
from headwater.futures import Future, collect_futures, resolve_futures


@task
def double(x):
    return x * 2


@task
def explode(message="boom"):
    raise ValueError(message)


def test_result_returns_the_task_return_value():
    """future.result() is what the task returned."""

    @flow
    def f():
        return double.submit(21).result()

    assert f() == 42


def test_result_raises_the_task_exception_and_can_be_told_not_to():
    """A failed future re-raises the task's own exception; raise_on_failure=False returns it."""
    seen = {}

    @flow
    def f():
        future = explode.submit("bad input")
        with pytest.raises(ValueError, match="bad input"):
            future.result()
        seen["exc"] = future.result(raise_on_failure=False)

    f()
    assert isinstance(seen["exc"], ValueError) and str(seen["exc"]) == "bad input"


def test_wait_returns_the_final_state_and_state_reads_it():
    """future.wait() blocks until the run ends and returns its final state."""
    seen = {}

    @flow
    def f():
        future = double.submit(1)
        seen["waited"] = future.wait()
        seen["state"] = future.state

    f()
    assert seen["waited"].is_completed() and seen["waited"].result() == 2
    assert seen["state"] is seen["waited"]


def test_wait_and_result_with_a_timeout():
    """wait(timeout) returns None while the task still runs; result(timeout) raises
    TimeoutError naming the run."""
    release = threading.Event()
    seen = {}

    @task
    def blocked():
        release.wait(10)
        return "done"

    @flow
    def f():
        future = blocked.submit()
        seen["wait"] = future.wait(timeout=0.05)
        seen["pending"] = future.state
        with pytest.raises(TimeoutError, match="blocked-"):
            future.result(timeout=0.05)
        release.set()
        return future.result()

    assert f() == "done"
    assert seen["wait"] is None
    assert not seen["pending"].is_final()


def test_state_of_an_unfinished_future_is_the_run_state():
    """Before the run ends, future.state is its current (non-final) state."""
    release = threading.Event()
    started = threading.Event()
    seen = {}

    @task
    def slow():
        started.set()
        release.wait(10)

    @flow
    def f():
        future = slow.submit()
        started.wait(10)
        seen["running"] = future.state
        release.set()
        future.wait()

    f()
    assert seen["running"].is_running()


def test_a_future_whose_upstream_failed_ends_not_ready_and_result_says_why():
    """A task fed a failed future never runs: it ends Pending/NotReady, its message names
    the upstream run, and .result() raises UpstreamFailed with that message."""
    ran = []
    seen = {}

    @task
    def downstream(x):
        ran.append(x)

    @flow
    def f():
        failed = explode.submit()
        after = downstream.submit(failed)
        seen["state"] = after.wait()
        seen["upstream_name"] = failed.task_run_name
        with pytest.raises(UpstreamFailed, match=failed.task_run_name) as info:
            after.result()
        seen["error"] = info.value
        failed.wait()

    f()
    state = seen["state"]
    assert ran == []
    assert state.name == "NotReady" and state.is_pending()
    assert seen["upstream_name"] in state.message
    assert "did not reach a 'COMPLETED' state" in str(seen["error"])


def test_futures_nested_in_containers_are_found_and_resolved():
    """collect_futures finds futures inside lists, tuples, sets and dicts; resolve_futures
    swaps each for its result and keeps the container types."""

    @flow
    def f():
        a, b = double.submit(1), double.submit(2)
        value = {"pair": (a, [b, 3]), "one": a}
        found: list[Future] = []
        collect_futures(value, found)
        for future in found:
            future.wait()
        return found, resolve_futures(value), a, b

    found, resolved, a, b = f()
    assert found == [a, b, a]
    assert resolved == {"pair": (2, [4, 3]), "one": 2}
    assert isinstance(resolved["pair"], tuple)


def test_repr_names_the_run_and_its_state():
    """A future's repr shows the task run name and its final state once done."""

    @flow
    def f():
        future = double.submit(3)
        future.wait()
        return future.task_run_name, repr(future)

    name, text = f()
    assert text.startswith(f"<Future {name!r} Completed")


def test_a_flow_returning_a_future_returns_its_result():
    """Returning a future from a flow is returning the task's result."""

    @flow
    def f():
        return double.submit(4)

    assert f() == 8


def test_done_callbacks_run_once_the_future_is_done():
    """add_done_callback runs the callback when the run ends, or at once if it has."""
    calls = []

    @flow
    def f():
        future = double.submit(5)
        future.add_done_callback(lambda fut: calls.append(("early", fut.state.result())))
        future.wait()
        future.add_done_callback(lambda fut: calls.append(("late", fut.state.result())))

    f()
    assert sorted(calls) == [("early", 10), ("late", 10)]


def _pause_at_last_line(code, seconds, when=lambda frame: True):
    """Slow down (never change) one thread: sleep before the last line of ``code`` runs.
    A white-box way to hit a narrow window between two threads deterministically."""
    import dis
    import threading
    import time

    last = max(line for _, line in dis.findlinestarts(code) if line is not None)

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None

        def local(frame, event, arg):
            if event == "line" and frame.f_lineno == last and when(frame):
                time.sleep(seconds)
            return local

        return local

    threading.settrace(tracer)
    return lambda: threading.settrace(None)


def test_a_failure_finishing_while_the_flow_waits_is_counted(headwater_session):
    """A task that fails while the flow run is waiting for its futures fails the flow
    run, even when the worker is slow between telling the flow run it finished and
    counting the failure (the flow must not see 'nothing pending' in between)."""
    import time

    from headwater.context import FlowRunContext
    from headwater.task_runners import ConcurrentTaskRunner

    @task
    def boom() -> None:
        time.sleep(0.05)
        raise ValueError("boom")

    @task
    def slow() -> int:
        time.sleep(0.2)
        return 1

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def unobserved() -> int:
        slow.submit()
        boom.submit()
        return 1

    undo = _pause_at_last_line(FlowRunContext.finished.__code__, 0.4,
                               lambda frame: not frame.f_locals["future"]._state.is_completed())
    try:
        states = [unobserved(return_state=True) for _ in range(3)]
    finally:
        undo()
    assert [s.name for s in states] == ["Failed"] * 3
    assert all(s.message == "1/2 states failed." for s in states)
