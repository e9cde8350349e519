"""The hot path: per-task hooks are bound once per flow run, so with only the default
plugins a task run makes no pluggy call (counted, not timed)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.tasks import task_input_hash


@task
def plain(i):
    return i


@task(retries=2, retry_delay_seconds=0)
def retried(i):
    return i


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
def cached(i):
    return i


@flow
def workload(n):
    for i in range(n):
        plain(i)
        retried(i)
        cached(i % 3)  # hits the cache after the first few
    futures = [plain.submit(i) for i in range(n)]
    futures += retried.map(range(n))
    futures += [cached.submit(i % 3) for i in range(n)]
    return sum(f.result() for f in futures)


def _count_hook_calls(session, n):
    """Hook calls through the plugin manager while one workload(n) flow runs: also those
    made through the flow's bindings (pluggy's subset callers report to the same
    monitor)."""
    calls = []
    undo = session.pm.add_hookcall_monitoring(
        lambda hook_name, hook_impls, kwargs: calls.append(hook_name),
        lambda outcome, hook_name, hook_impls, kwargs: None,
    )
    try:
        state = workload(n, return_state=True)
    finally:
        undo()
    assert state.is_completed()
    return calls


@pytest.fixture
def default_plugins_only(headwater_home, monkeypatch):
    """A session with only the default plugins: no installed packages' plugins."""
    monkeypatch.setenv("HEADWATER_DISABLE_PLUGIN_AUTOLOAD", "1")
    with Session() as session:
        assert all(r.source == "builtin" for r in session.records)
        workload(1)  # warm up: the cache index, the policies' first look-ups
        yield session


def test_hook_calls_per_flow_run_do_not_grow_with_the_number_of_tasks(default_plugins_only):
    """A flow of 10 or 100 tasks (called, submitted, mapped; plain, retried, cached) makes
    exactly the same pluggy calls: none per task run."""
    small = _count_hook_calls(default_plugins_only, 10)
    large = _count_hook_calls(default_plugins_only, 100)
    assert sorted(small) == sorted(large), (small, large)
    # At most a few per flow run or per task: today one state policy per task (3). The
    # bound calls were counted twice before (monitor and bindings), under a bound of 12.
    assert len(large) <= 6, large


def test_a_plugin_with_a_per_task_hook_is_called_per_task(headwater_home, monkeypatch):
    """The counter sees per-task calls when a plugin adds one: headwater_state_changed is
    called for every transition of every run."""
    monkeypatch.setenv("HEADWATER_DISABLE_PLUGIN_AUTOLOAD", "1")

    class Observer:
        @hookimpl
        def headwater_state_changed(self, run, previous, state):
            pass

    with Session(plugins=[Observer()]) as session:
        workload(1)
        small = _count_hook_calls(session, 10)
        large = _count_hook_calls(session, 100)
    assert large.count("headwater_state_changed") > small.count("headwater_state_changed") >= 60 * 2  # 60 task runs, 2+ transitions each
