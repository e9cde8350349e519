"""headwater.remote: a task run's attempts detached from the session, and the outcome
recorded by the flow process. A small runner here sends every run through a pickle round
trip and a separate thread, as a runner for other processes would (no Dask needed)."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import threading

import cloudpickle
import pytest

from headwater import flow, get_run_logger, get_store, task
from headwater.remote import TaskExecution
from headwater.remote import (
    RemoteError,
    UpstreamRef,
    check_cache,
    detach,
    fill_upstream,
    make_sendable,
    record_outcome,
    replace_futures,
    run_detached,
)
from headwater.task_runners import TaskRunner
from headwater.tasks import task_input_hash


class RoundTripRunner(TaskRunner):
    """Every run is pickled, run detached in a thread of its own, and recorded back."""

    sent: list[str] = []

    def start(self, context=None):
        self.context = context

    def submit(self, work):
        if not work.claim():
            return
        run = work.run_obj
        ex = TaskExecution(work.task, run, self.context, run.parameters)
        state = check_cache(ex)
        if state is not None:
            work.future.set_state(state)
            return
        package = cloudpickle.dumps((work.task, ex.policy, detach(ex)))
        RoundTripRunner.sent.append(run.name)

        def remote() -> None:
            task_, policy, detached = pickle.loads(package)
            blob = make_sendable(run_detached(task_, policy, detached), cloudpickle.dumps)
            work.future.set_state(record_outcome(ex, pickle.loads(blob)))

        threading.Thread(target=remote).start()


@pytest.fixture(autouse=True)
def _clear_sent():
    RoundTripRunner.sent.clear()


def names(run_id):
    return [s.name for s in get_store().read_states(run_id)]


@task(retries=1, retry_delay_seconds=0)
def flaky(x):
    from headwater.runtime import task_run

    get_run_logger().info("attempt %d", task_run.run_count)
    if task_run.run_count == 1:
        raise OSError("first attempt fails")
    return x * 2


def test_retries_and_logs_travel_back_and_are_recorded_in_order(capsys):
    """The detached attempt loop retries; the flow process records the whole history and
    shows the run's log lines once each."""

    @flow(task_runner=RoundTripRunner())
    def round_trip():
        return flaky.submit(21).result()

    assert round_trip() == 42
    (run,) = get_store().read_task_runs()
    assert names(run.id) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    assert run.run_count == 2
    err = capsys.readouterr().err
    assert err.count("attempt 1") == 1 and err.count("attempt 2") == 1


class _KeepAll(logging.Filter):
    """A user's own filter on the task runs' logger: it must see the engine's lines too."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def filter(self, record):
        self.seen.append(record.getMessage())
        return True


@pytest.mark.parametrize("user_filter", [False, True], ids=["plain", "with-a-user-filter"])
def test_the_finished_line_made_on_the_worker_is_shown_once_with_its_run(capsys, user_filter):
    """The "Finished in state" line a worker makes travels back with its run's label and
    is shown once, whether or not the user put a filter of their own on the logger."""
    from headwater.run_logging import task_logger

    keep = _KeepAll()
    if user_filter:
        task_logger.addFilter(keep)

    @flow(task_runner=RoundTripRunner())
    def round_trip():
        return flaky.submit(4).result()

    try:
        assert round_trip() == 8
    finally:
        task_logger.removeFilter(keep)
    (run,) = get_store().read_task_runs()
    err = capsys.readouterr().err
    assert err.count(f"Task run {run.name!r} - Finished in state Completed()") == 1
    assert err.count("Finished in state Completed()") == 1
    stored = [line["message"] for line in get_store().read_logs(task_run_id=run.id)]
    assert [m for m in stored if m.startswith("Finished")] == ["Finished in state Completed()"]
    if user_filter:
        assert "Finished in state Completed()" in keep.seen


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(minutes=1))
def cached(x):
    return {"value": x}


def test_result_and_cache_entry_are_written_by_the_flow_process():
    """A cached task's result is written and indexed by the flow process after the run
    comes back; the next run is a hit answered by check_cache, never sent."""

    @flow(task_runner=RoundTripRunner())
    def twice():
        return cached.submit(3).result()

    assert twice() == {"value": 3}
    assert twice() == {"value": 3}
    assert len(RoundTripRunner.sent) == 1
    (entry,) = get_store().read_cache_entries()
    assert entry.size and not entry.location.startswith("deferred:")
    assert entry.digest and entry.digest.startswith("sha256:")  # checked on the hit
    assert sorted(r.state.name for r in get_store().read_task_runs()) == ["Cached", "Completed"]


class HoldsALock(Exception):
    """Cannot be pickled: it carries a lock."""

    def __init__(self, detail):
        super().__init__(detail)
        self.lock = threading.Lock()


@task
def odd_failure():
    raise HoldsALock("1/2")


def test_an_exception_that_cannot_travel_becomes_remote_error():
    """An exception that cannot be unpickled arrives as RemoteError with its type and text."""

    @flow(task_runner=RoundTripRunner())
    def failing():
        return odd_failure.submit().wait().result(raise_on_failure=False)

    error = failing()
    assert isinstance(error, RemoteError)
    assert "HoldsALock: 1/2" in str(error)


def test_futures_become_placeholders_and_back():
    """replace_futures and fill_upstream swap futures nested in containers both ways."""
    from headwater.futures import Future
    from headwater.runs import TaskRun

    a, b = Future(TaskRun("a", "t")), Future(TaskRun("b", "t"))
    order = {"a": 0, "b": 1}
    value = {"xs": [a, (b, 3)], "s": {a}}
    swapped = replace_futures(value, lambda f: UpstreamRef(order[f.task_run_id]))
    assert swapped == {"xs": [UpstreamRef(0), (UpstreamRef(1), 3)], "s": {UpstreamRef(0)}}
    assert fill_upstream(pickle.loads(pickle.dumps(swapped)), ["A", "B"]) == {"xs": ["A", ("B", 3)], "s": {"A"}}


@task
def inner(x):
    return x + 1


@task
def outer(x):
    return inner(x) + inner(x)


def test_task_runs_started_on_the_worker_get_the_default_names():
    """A task called inside a detached run is named as in the flow process,
    '{task}-{key}-{index}', its index prefixed by the end of the parent run's id so it
    cannot clash with the flow process's own."""

    @flow(task_runner=RoundTripRunner())
    def nested():
        return outer.submit(1).result()

    assert nested() == 4
    runs = {r.name: r for r in get_store().read_task_runs()}
    (parent,) = [r for r in runs.values() if r.task_name == "outer"]
    prefix = parent.id[-8:]
    assert sorted(n for n in runs if n.startswith("inner")) == [
        f"inner-{inner.task_key}-{prefix}.0", f"inner-{inner.task_key}-{prefix}.1"]


def test_an_outcome_for_a_run_the_flow_ended_meanwhile_changes_nothing(headwater_session):
    """The flow run crashed and ended the run Cancelled while it was away: the outcome
    that comes back later records no second final state and persists nothing."""
    from headwater.engine.task_creation import create_task_run, standalone_context
    from headwater.remote import finish_run
    from headwater.states import Cancelled

    @task(persist_result=True)
    def away(x):
        return x

    flow_context = standalone_context(away)
    execution = create_task_run(away, flow_context, {"x": 1}, ())
    detached = detach(execution)
    outcome = run_detached(away, execution.policy, detached)
    assert outcome.final.is_completed()
    cancelled = finish_run(flow_context, execution.task_run, Cancelled(message="flow crashed"))
    assert record_outcome(execution, outcome) is cancelled
    headwater_session.store.flush()
    names = [s.name for s in headwater_session.store.read_states(execution.task_run.id)]
    assert names == ["Pending", "Cancelled"]
    assert execution.task_run.result_location is None
