"""The task run loop (core/engine.py): engine failures, timeouts, races, retries."""

from __future__ import annotations

import asyncio
import threading

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.policy import WrappingPolicy


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
