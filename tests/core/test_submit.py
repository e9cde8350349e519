"""Submitting tasks inside a flow: futures, dependencies, waiting, failures and history."""

from __future__ import annotations

import pickle
import threading

import pytest

from headwater import flow, task
from headwater.errors import RunFailed, UpstreamFailed


@task
def add_one(x):
    return x + 1


@task
def total(values):
    return sum(values)


@task
def explode():
    raise ValueError("boom")


def _task_runs(session, flow_run_id):
    session.store.flush()
    return {run.name: run for run in session.store.read_task_runs(flow_run_id=flow_run_id)}


def test_submit_outside_a_flow_is_a_clear_error():
    """task.submit() with no flow run raises a RuntimeError saying what to do instead."""
    with pytest.raises(RuntimeError, match=r"add_one.submit\(\) was called outside a flow.*add_one\(\.\.\.\)"):
        add_one.submit(1)


def test_submit_inside_a_task_called_outside_a_flow_is_the_same_error():
    """A task called with no flow around it has no runner to submit to either."""

    @task
    def outer():
        return add_one.submit(1)

    with pytest.raises(RuntimeError, match="outside a flow"):
        outer()


def test_a_future_passed_to_a_task_is_resolved_and_recorded_as_upstream(headwater_session):
    """A future argument becomes its result in the downstream task, and the downstream
    run records the upstream run's id."""

    @flow
    def chain():
        first = add_one.submit(1)
        second = add_one.submit(first)
        return second.result(), first.task_run_id, second.task_run_id

    value, first_id, second_id = chain(return_state=True).result()
    assert value == 3
    headwater_session.store.flush()
    second = headwater_session.store.read_task_run(second_id)
    assert second.upstream_ids == (first_id,)
    assert second.parameters == {"x": 2}


def test_futures_nested_in_lists_tuples_and_dicts_are_resolved_and_recorded(headwater_session):
    """Futures inside containers are resolved before the task runs and each one is a
    recorded dependency."""
    seen = {}

    @task
    def gather(items, mapping):
        seen["args"] = (items, mapping)
        return sum(items[0]) + items[1] + sum(mapping.values())

    @flow
    def nested():
        a, b, c = add_one.submit(0), add_one.submit(1), add_one.submit(2)
        future = gather.submit([(a, b), 10], {"c": c})
        return future.result(), [f.task_run_id for f in (a, b, c)], future.task_run_id

    value, upstream_ids, gather_id = nested()
    assert value == 1 + 2 + 10 + 3
    assert seen["args"] == ([(1, 2), 10], {"c": 3})
    assert isinstance(seen["args"][0][0], tuple)
    headwater_session.store.flush()
    assert headwater_session.store.read_task_run(gather_id).upstream_ids == tuple(upstream_ids)


def test_a_future_passed_to_a_direct_call_is_resolved():
    """Calling a task with a future waits for it and passes its result."""

    @flow
    def mixed():
        return add_one(add_one.submit(1))

    assert mixed() == 3


def test_wait_for_orders_runs_without_passing_data(headwater_session):
    """wait_for=[future] makes a run start only after that future is done, and records it."""
    order = []
    gate = threading.Event()

    @task
    def first():
        gate.wait(5)
        order.append("first")

    @task
    def second():
        order.append("second")

    @flow
    def ordered():
        a = first.submit()
        b = second.submit(wait_for=[a])
        gate.set()
        b.wait()
        return a.task_run_id, b.task_run_id

    a_id, b_id = ordered()
    assert order == ["first", "second"]
    headwater_session.store.flush()
    assert headwater_session.store.read_task_run(b_id).upstream_ids == (a_id,)


def test_wait_for_accepts_a_single_future_and_the_list_map_returned():
    """wait_for takes one future, a list of futures, or a list holding a map's futures."""
    order = []

    @task
    def step(name):
        order.append(name)

    @flow
    def f():
        a = step.submit("a")
        mapped = step.map(["m1", "m2"], wait_for=a)
        step(name="last", wait_for=[mapped])

    f()
    assert order[0] == "a" and order[-1] == "last" and sorted(order[1:3]) == ["m1", "m2"]


@pytest.mark.parametrize("bad", [3, "a future", [1, 2]])
def test_wait_for_with_something_that_is_not_a_future_is_an_error(bad):
    """wait_for must hold futures: anything else is a TypeError naming the value."""

    @flow
    def f():
        add_one.submit(1, wait_for=bad)

    with pytest.raises(TypeError, match="wait_for"):
        f()


def test_a_downstream_of_a_failed_task_is_not_ready_and_raises_clearly(headwater_session):
    """An upstream failure stops the downstream task: NotReady in the store, with a
    message naming the upstream run; .result() raises UpstreamFailed."""
    ran = []

    @task
    def after(x):
        ran.append(x)

    @flow
    def f():
        bad = explode.submit()
        later = after.submit(bad)
        with pytest.raises(UpstreamFailed, match=bad.task_run_name):
            later.result()
        return bad.task_run_name, later.task_run_id

    state = f(return_state=True)
    assert ran == []
    assert state.is_completed(), "every failure was read, so the flow completes"
    upstream_name, later_id = state.result()
    headwater_session.store.flush()
    later = headwater_session.store.read_task_run(later_id)
    assert later.state.name == "NotReady"
    assert upstream_name in later.state.message
    assert [s.name for s in headwater_session.store.read_states(later_id)] == ["Pending", "NotReady"]


def test_a_flow_waits_for_every_submitted_task_before_finishing():
    """Futures the flow never reads still finish before the flow returns."""
    done = []

    @task
    def slow(i):
        threading.Event().wait(0.05)
        done.append(i)

    @flow
    def fire_and_forget():
        for i in range(4):
            slow.submit(i)
        return "returned"

    assert fire_and_forget() == "returned"
    assert sorted(done) == [0, 1, 2, 3]


def test_an_unread_failed_future_fails_the_flow_with_a_count(headwater_session):
    """A failure the flow never looked at fails the flow: '1/3 states failed.', and the
    error names the failed task run."""
    names = []

    @flow
    def careless():
        add_one.submit(1)
        names.append(explode.submit().task_run_name)
        add_one.submit(2)

    state = careless(return_state=True)
    assert state.is_failed()
    assert state.message == "1/3 states failed."
    with pytest.raises(RunFailed, match=names[0]):
        state.result()
    with pytest.raises(RunFailed, match="1/3 states failed."):
        careless()


def test_a_not_ready_downstream_is_not_counted_as_failed():
    """The unread chain failed → NotReady fails the flow, counting only the failure."""

    @flow
    def chain():
        add_one.submit(explode.submit())
        add_one.submit(1)

    state = chain(return_state=True)
    assert state.is_failed() and state.message == "1/3 states failed."


def test_a_failed_future_that_was_read_does_not_fail_the_flow():
    """Handling a failure (reading the future's state or result) lets the flow complete."""

    @flow
    def careful():
        future = explode.submit()
        if future.wait().is_failed():
            return "handled"

    assert careful() == "handled"


def test_submitted_runs_have_the_same_history_as_called_ones(headwater_session):
    """A submitted task run is recorded with its full state history, like a called one,
    and belongs to the flow run."""

    @task(retries=1, retry_delay_seconds=0)
    def flaky(attempts=[]):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("once")
        return "ok"

    @task
    def called_task():
        return 1

    @flow
    def f():
        called_task()
        submitted = add_one.submit(1)
        retried = flaky.submit()
        return submitted.task_run_id, retried.task_run_id

    state = f(return_state=True)
    submitted_id, retried_id = state.result()
    store = headwater_session.store
    store.flush()
    runs = _task_runs(headwater_session, store.read_flow_runs(flow_name="f")[0].id)
    assert len(runs) == 3
    (called_id,) = [r.id for r in runs.values() if r.task_name == "called_task"]
    names = lambda run_id: [s.name for s in store.read_states(run_id)]  # noqa: E731
    assert names(submitted_id) == names(called_id) == ["Pending", "Running", "Completed"]
    assert names(retried_id) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    assert all(r.start_time is not None and r.end_time is not None for r in runs.values())
    assert runs[next(n for n, r in runs.items() if r.id == retried_id)].run_count == 2


def test_an_unpicklable_return_value_works_on_the_thread_runner():
    """Nothing is pickled when a task runs in a thread: a lock can be returned and passed on."""

    @task
    def make_lock():
        return threading.Lock()

    @task
    def use(lock):
        with lock:
            return "used"

    @flow
    def f():
        lock = make_lock.submit()
        return use.submit(lock).result(), lock.result()

    value, lock = f()
    assert value == "used"
    with pytest.raises(TypeError):
        pickle.dumps(lock)


def test_flow_runs_are_logged_with_the_runner_once(headwater_session):
    """'Using task runner ...' is logged exactly once per flow run, even when the flow
    retries."""
    attempts = []

    @flow(retries=2, retry_delay_seconds=0)
    def retried():
        attempts.append(1)
        add_one.submit(1).result()
        if len(attempts) < 3:
            raise RuntimeError("again")

    state = retried(return_state=True)
    assert state.is_completed() and len(attempts) == 3
    store = headwater_session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name="retried")
    messages = [row["message"] for row in store.read_logs(flow_run_id=run.id)]
    assert [m for m in messages if m.startswith("Using task runner")] == [
        "Using task runner 'ConcurrentTaskRunner'"
    ]


def test_a_runner_that_cannot_take_work_crashes_that_run_and_raises(headwater_session):
    """If the runner's submit() raises, the task run ends Crashed (never left Pending for
    the flow to wait on forever) and the error reaches the flow body."""
    from headwater.task_runners import TaskRunner

    class Refusing(TaskRunner):
        def submit(self, work):
            raise OSError("no workers left")

    seen = {}

    @flow(task_runner=Refusing)
    def f():
        try:
            add_one.submit(1)
        except OSError as exc:
            seen["error"] = str(exc)
        return "finished"

    assert f() == "finished"
    assert seen["error"] == "no workers left"
    headwater_session.store.flush()
    (run,) = headwater_session.store.read_flow_runs(flow_name="f")
    (task_run,) = headwater_session.store.read_task_runs(flow_run_id=run.id)
    assert task_run.state.is_crashed() and "no workers left" in task_run.state.message


def test_work_run_in_a_thread_without_the_flows_context_still_belongs_to_its_flow_run():
    """A runner may run work in a plain new thread (no copied context variables): the
    task still sees its flow run, and tasks it submits go to the same runner and flow run."""
    from headwater.runtime import flow_run
    from headwater.task_runners import TaskRunner

    class BareThreads(TaskRunner):
        def start(self, context=None):
            self.threads = []

        def submit(self, work):
            thread = threading.Thread(target=work.run, daemon=True)
            self.threads.append(thread)
            thread.start()

        def shutdown(self, wait=True):
            for thread in self.threads:
                thread.join()

    @task
    def outer(n):
        return flow_run.name, sum(f.result() for f in add_one.map(range(n)))

    @flow(task_runner=BareThreads(), flow_run_name="bare-threads")
    def bare():
        return outer.submit(3).result()

    assert bare() == ("bare-threads", 1 + 2 + 3)
