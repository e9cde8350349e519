"""The task run loop (core/engine/task_loop.py): engine failures, timeouts, races, retries."""

from __future__ import annotations

import asyncio
import threading

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.policy import WrappingPolicy
from headwater.task_runners import TaskRunner


class _BrokenPolicy(WrappingPolicy):
    """A policy whose answer to a finished attempt raises (as a broken cache index would)."""

    def propose_completed(self, ctx, state):
        raise RuntimeError("disk I/O error writing the cache index")


class _BreaksOnComplete:
    @hookimpl(tryfirst=True)
    def headwater_make_state_policy(self, task, session):
        from headwater.plugins.retries import RetryPolicy

        return _BrokenPolicy(RetryPolicy(task))


def _task_runs(session, name):
    session.store.flush()
    return [r for r in session.store.read_task_runs() if r.task_name == name]


def test_cancelling_an_async_task_waiting_to_retry_a_failed_cache_key_ends_it_crashed(headwater_session):
    """An async task whose cache key failed waits AwaitingRetry; cancelling it there
    ends the run Crashed (not AwaitingRetry forever), naming the interruption."""

    def broken_key(context, parameters):
        raise ValueError("no key today")

    @task(cache_key_fn=broken_key, retries=1, retry_delay_seconds=30)
    async def fetch():
        return 1

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fetch(), 0.3)

    asyncio.run(main())
    (run,) = _task_runs(headwater_session, "fetch")
    assert run.state.name == "Crashed"
    assert "interrupted by CancelledError" in run.state.message
@pytest.mark.parametrize("in_flow", [False, True])
def test_an_engine_error_in_a_direct_task_call_ends_the_run_crashed(headwater_home, in_flow):
    """When the engine itself fails (here the state policy raises after the body
    returned), a task called directly ends Crashed in the store, not left Running, and
    the caller sees the engine's error."""

    @task
    def add_one(x):
        return x + 1

    @flow
    def calls_it():
        return add_one(1)

    with Session(plugins=[_BreaksOnComplete()]) as session:
        with pytest.raises(RuntimeError, match="disk I/O error"):
            add_one(1) if not in_flow else calls_it()
        (run,) = _task_runs(session, "add_one")
    assert run.state.name == "Crashed"
    assert "disk I/O error" in run.state.message
    assert run.end_ts is not None


def test_an_engine_error_in_a_direct_async_task_call_ends_the_run_crashed(headwater_home):
    """The same for an async task awaited directly: Crashed, and the error raised."""

    @task
    async def add_one(x):
        return x + 1

    async def main():
        return await add_one(1)

    with Session(plugins=[_BreaksOnComplete()]) as session:
        with pytest.raises(RuntimeError, match="disk I/O error"):
            asyncio.run(main())
        (run,) = _task_runs(session, "add_one")
    assert run.state.name == "Crashed"




class _ThreadRunner(TaskRunner):
    """A task runner that starts one thread per task run (and lets the test join them)."""

    threads: list[threading.Thread] = []

    def submit(self, work):
        thread = threading.Thread(target=work.run, daemon=True)
        self.threads.append(thread)
        thread.start()


def test_a_task_finishing_while_its_flow_crashes_gets_one_final_state(headwater_home):
    """A task run that finishes just as its flow run crashes ends with exactly one final
    state (Crashed, the one recorded first): never Crashed and then Completed too."""
    waiting, crashed = threading.Event(), threading.Event()
    finals = []

    class Racing(WrappingPolicy):
        def propose_completed(self, ctx, state):
            waiting.set()
            crashed.wait(5)  # the flow crashes between the engine's check and its transition
            return state

    class Plugin:
        @hookimpl(tryfirst=True)
        def headwater_make_state_policy(self, task, session):
            from headwater.plugins.retries import RetryPolicy

            return Racing(RetryPolicy(task))

        @hookimpl
        def headwater_state_changed(self, run, previous, state):
            if run.kind == "task" and state.is_final():
                finals.append(state.name)
                crashed.set()

    @task
    def work():
        return 1

    @flow(task_runner=_ThreadRunner())
    def interrupted():
        work.submit()
        waiting.wait(5)
        raise KeyboardInterrupt

    with Session(plugins=[Plugin()]):
        with pytest.raises(KeyboardInterrupt):
            interrupted()
        for thread in _ThreadRunner.threads:
            thread.join(5)
    assert finals == ["Crashed"]


def test_an_async_task_raising_its_own_timeout_error_fails_with_its_message(headwater_session):
    """An async task with a timeout that raises TimeoutError itself, well before its
    deadline, ends Failed with its own message: it did not time out."""

    @task(timeout_seconds=5)
    async def call_api():
        raise TimeoutError("upstream API timed out")

    state = call_api(return_state=True)  # outside an event loop: runs to completion
    assert state.name == "Failed"
    assert "upstream API timed out" in state.message
    with pytest.raises(TimeoutError, match="upstream API timed out"):
        state.result()


def test_an_async_flow_blocking_past_its_deadline_times_out(headwater_session):
    """An async flow whose body blocks the event loop past timeout_seconds (so it cannot
    be cancelled) still ends TimedOut, as a task does."""
    import time

    @flow(timeout_seconds=0.1)
    async def blocks():
        time.sleep(0.3)
        return 1

    state = asyncio.run(blocks(return_state=True))
    assert state.name == "TimedOut"
    assert "timeout of 0.1 second(s)" in state.message


def test_an_async_flow_over_its_deadline_times_out(headwater_session):
    """An async flow awaiting past timeout_seconds is cancelled and ends TimedOut."""

    @flow(timeout_seconds=0.1)
    async def waits():
        await asyncio.sleep(5)

    state = asyncio.run(waits(return_state=True))
    assert state.name == "TimedOut"


def test_with_only_the_default_namer_task_runs_are_named_by_a_plain_call(headwater_session):
    """With only the default naming plugin, the namer bound once per flow directory is
    run_naming's own function, called directly for each task run (no pluggy call): a task
    without task_run_name is named '{task}-{key}-{n}', one with a template by it."""
    from headwater.plugins import run_naming

    @task
    def plain():
        return 1

    @task(task_run_name="named-{x}")
    def templated(x):
        return x

    @flow
    def names():
        plain()
        templated(7)

    bindings = headwater_session.bindings_for(names.source_dir)
    namer = bindings.task_run_name
    assert namer is run_naming.headwater_task_run_name
    calls = []

    def counting(task, parameters, index):
        calls.append(task.name)
        return namer(task, parameters, index)

    bindings.task_run_name = counting
    names()
    assert calls == ["plain", "templated"]
    headwater_session.store.flush()
    assert sorted(r.name for r in headwater_session.store.read_task_runs()) == [
        "named-7", f"plain-{plain.task_key}-0"]


def test_a_failed_cache_key_fails_the_run_naming_the_step(headwater_session):
    """A cache_key_fn that raises fails the run before its body is called, and the
    state's message says the cache key computation failed (not the execution)."""
    called = []

    def broken_key(context, parameters):
        raise ValueError("no key today")

    @task(cache_key_fn=broken_key)
    def fetch():
        called.append(1)

    state = fetch(return_state=True)
    assert state.is_failed()
    assert state.message.startswith("Task run encountered an exception during cache key computation:")
    assert "no key today" in state.message
    assert called == []


def test_a_task_returning_a_state_that_does_not_end_a_run_fails_naming_it(headwater_session):
    """A run left Running or AwaitingRetry by its own return value would look alive in
    the history forever: it ends Failed, naming the task and the state."""
    from headwater import flow, task
    from headwater.states import Completed, Running, StateType

    @task
    def still_going():
        return Running()

    @task
    def done():
        return Completed(message="by hand")

    @flow
    def returns_states():
        return still_going(return_state=True), done(return_state=True)

    odd, fine = returns_states()
    assert odd.type is StateType.FAILED
    assert "'still_going' returned the state Running()" in odd.message
    assert fine.is_completed() and fine.message == "by hand"
