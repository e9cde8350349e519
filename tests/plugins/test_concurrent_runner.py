"""The concurrent task runner (the default), and how a flow's task runner is chosen."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import time
import tracemalloc

import pytest

from headwater import Session, flow, hookimpl, task
from headwater.errors import ConfigurationError, UnknownComponentError
from headwater.runs import TaskRun
from headwater.task_runners import ConcurrentTaskRunner, SequentialTaskRunner, TaskRunner


@task
def nap(seconds):
    time.sleep(seconds)
    return threading.current_thread().name


@task
def where():
    return threading.current_thread().name


def _run_with_deadline(fn, seconds):
    """Run fn in a thread (with this context); fail the test instead of hanging on a deadlock."""
    outcome = {}
    context = contextvars.copy_context()

    def target():
        try:
            outcome["value"] = context.run(fn)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: deadlocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _runner_logged(session, flow_name):
    store = session.store
    store.flush()
    (run,) = store.read_flow_runs(flow_name=flow_name)
    return [row["message"] for row in store.read_logs(flow_run_id=run.id)
            if row["message"].startswith("Using task runner")]


# -- running concurrently ---------------------------------------------------------------------


def test_four_sleeping_tasks_run_concurrently():
    """Four 0.5 s sleeps submitted together finish well under the 2 s they take in turn,
    each in a worker thread."""

    @flow
    def sleepers():
        futures = [nap.submit(0.5) for _ in range(4)]
        return [f.result() for f in futures]

    started = time.perf_counter()
    threads = sleepers()
    took = time.perf_counter() - started
    assert took < 1.5, f"four 0.5 s tasks took {took:.2f} s: not concurrent"
    assert all(name.startswith("headwater-worker-") for name in threads)


def test_the_pool_is_bounded_by_max_workers():
    """No more than max_workers sync tasks run at the same time."""
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @task
    def busy():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2))
    def f():
        for _ in range(12):
            busy.submit()

    f()
    assert peak[0] == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", True])
def test_max_workers_must_be_a_positive_whole_number(bad):
    """ConcurrentTaskRunner(max_workers=...) rejects anything but an int of at least 1."""
    with pytest.raises(ConfigurationError, match=rf"max_workers={bad!r}.*at least 1"):
        ConcurrentTaskRunner(max_workers=bad)


def test_nested_submits_with_one_worker_do_not_deadlock():
    """Tasks that submit tasks and wait for them finish, even when the single worker is
    busy with the waiting task, with chains of dependencies inside."""

    @task
    def double(x):
        return 2 * x

    @task
    def fan_out(x):
        first = double.submit(x)
        second = double.submit(first)  # depends on a nested future
        mapped = double.map([first, second])
        return second.result() + sum(f.result() for f in mapped)

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def nested():
        return [f.result() for f in fan_out.map([1, 2, 3])]

    # x → first 2x, second 4x, mapped [4x, 8x]: 16x in all.
    assert _run_with_deadline(nested, 20) == [16, 32, 48]


def test_async_tasks_run_on_one_event_loop_not_in_the_pool():
    """Async tasks share an event loop in a thread of its own: four 0.5 s awaits overlap
    even with a single worker thread."""

    @task
    async def async_nap():
        await asyncio.sleep(0.5)
        return threading.current_thread().name, id(asyncio.get_running_loop())

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def f():
        futures = [async_nap.submit() for _ in range(4)]
        return [fut.result() for fut in futures]

    started = time.perf_counter()
    seen = f()
    took = time.perf_counter() - started
    assert took < 1.5, f"four async 0.5 s tasks took {took:.2f} s: not on an event loop"
    assert len({loop for _, loop in seen}) == 1
    assert not any(name.startswith("headwater-worker-") for name, _ in seen)


def test_sync_and_async_tasks_can_depend_on_each_other():
    """A sync task's future feeds an async task and the other way round."""

    @task
    async def async_inc(x):
        await asyncio.sleep(0)
        return x + 1

    @task
    def inc(x):
        return x + 1

    @flow
    def mixed():
        return inc.submit(async_inc.submit(inc.submit(0))).result()

    assert mixed() == 3


def test_async_tasks_can_depend_on_async_tasks():
    """A chain of async futures runs on the runner's loop, each fed the previous result."""

    @task
    async def async_inc(x):
        await asyncio.sleep(0.01)
        return x + 1

    @flow
    def chain():
        return async_inc.submit(async_inc.submit(async_inc.submit(0))).result()

    assert _run_with_deadline(chain, 20) == 3


def test_an_async_task_can_submit_and_wait_for_async_tasks():
    """An async task that submits async tasks and blocks on their results does not
    deadlock its event loop, even with one worker thread."""

    @task
    async def leaf(x):
        await asyncio.sleep(0.01)
        return x * 10

    @task
    async def parent(x):
        first = leaf.submit(x)
        return leaf.submit(first).result() + 1

    @flow(task_runner=ConcurrentTaskRunner(max_workers=1))
    def f():
        return [future.result() for future in parent.map([1, 2])]

    assert _run_with_deadline(f, 20) == [101, 201]


def test_an_async_flow_submits_to_the_runner():
    """An async flow can submit sync and async tasks and read their results."""

    @task
    async def async_double(x):
        await asyncio.sleep(0)
        return 2 * x

    @flow
    async def async_flow():
        return [async_double.submit(1).result(), nap.submit(0).result().startswith("headwater-worker")]

    assert asyncio.run(async_flow()) == [2, True]


def test_ten_thousand_submitted_tasks_finish_without_keeping_runs_alive(headwater_home, monkeypatch):
    """10,000 submitted tasks all finish; once done, holding their futures keeps only the
    results alive: no TaskRun objects, and a few hundred bytes per future (about 400
    measured; a kept run with its parameters and engine objects costs several KB)."""
    monkeypatch.setenv("HEADWATER_LOGGING_LEVEL", "WARNING")  # 20,000 INFO lines are not the point

    @task
    def inc(x):
        return x + 1

    @flow
    def many(n):
        return [inc.submit(i) for i in range(n)]

    @flow
    def collect(n):
        futures = many.fn(n)  # the body only: futures of this flow run
        for future in futures:
            future.wait()
        return futures

    with Session() as session:
        collect(10, return_state=True)  # warm up: plugins, store, worker threads
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            state = collect(10_000, return_state=True)
            futures = state.result()
            session.store.flush()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert state.is_completed()
    assert len(futures) == 10_000 and sum(f.result() for f in futures) == sum(range(1, 10_001))
    # Task runs of this test's flows only: another test's may live on in what pytest keeps.
    assert not [o for o in gc.get_objects() if isinstance(o, TaskRun) and o.task_name == "inc"
                and o.flow_run_id is not None and o.name.startswith("inc-")]
    assert held / 10_000 < 1_500, f"{held / 10_000:.0f} bytes held per finished task run"


# -- choosing the runner ------------------------------------------------------------------------


def test_the_default_runner_is_concurrent_and_logged_once(headwater_session):
    """With no task_runner the flow uses the concurrent runner and says so once."""

    @flow
    def default_flow():
        return [where.submit().result() for _ in range(3)]

    assert all(name.startswith("headwater-worker-") for name in default_flow())
    assert _runner_logged(headwater_session, "default-flow") == ["Using task runner 'ConcurrentTaskRunner'"]


@pytest.mark.parametrize("option", [SequentialTaskRunner(), SequentialTaskRunner, "sequential"],
                         ids=["instance", "class", "name"])
def test_task_runner_accepts_an_instance_a_class_or_a_name(headwater_session, option):
    """task_runner= may be an instance, a class or a registered name; each selects it."""

    @flow(task_runner=option)
    def chosen():
        return where.submit().result()

    assert chosen() == threading.current_thread().name
    assert _runner_logged(headwater_session, "chosen") == ["Using task runner 'SequentialTaskRunner'"]


def test_a_runner_instance_is_a_template_copied_per_flow_run():
    """The instance on the decorator is never started itself: each flow run gets a copy."""
    template = ConcurrentTaskRunner(max_workers=3)
    used = []

    class Spy:
        @hookimpl(wrapper=True)
        def headwater_make_task_runner(self, flow, session):
            runner = yield
            used.append(runner)
            return runner

    @flow(task_runner=template)
    def f():
        where.submit().result()

    with Session(plugins=[Spy()]):
        f()
        f()
    assert len(used) == 2 and used[0] is not used[1]
    assert template not in used
    assert all(r.max_workers == 3 for r in used)
    assert template._threads == []


def test_headwater_task_runner_sets_the_default(headwater_home, monkeypatch):
    """HEADWATER_TASK_RUNNER picks the runner of flows that do not choose one."""
    monkeypatch.setenv("HEADWATER_TASK_RUNNER", "sequential")

    @flow
    def env_flow():
        return where.submit().result()

    with Session():
        assert env_flow() == threading.current_thread().name


def test_an_unknown_runner_name_fails_the_run_listing_registered_names(headwater_session):
    """task_runner="nope" raises an error listing the registered names; the flow run is
    recorded Failed before its body runs."""
    ran = []

    @flow(task_runner="nope")
    def misconfigured():
        ran.append(1)

    with pytest.raises(UnknownComponentError) as info:
        misconfigured()
    message = str(info.value)
    assert "task_runner='nope'" in message and "'concurrent'" in message and "'sequential'" in message
    assert ran == []
    headwater_session.store.flush()
    (run,) = headwater_session.store.read_flow_runs(flow_name="misconfigured")
    assert run.state.is_failed() and "no task runner is registered under that name" in run.state.message
    state = misconfigured(return_state=True)
    assert state.is_failed() and "'sequential'" in state.message


def test_an_unknown_name_in_the_environment_names_the_setting(headwater_home, monkeypatch):
    """A bad HEADWATER_TASK_RUNNER is reported as that setting, with the registered names."""
    monkeypatch.setenv("HEADWATER_TASK_RUNNER", "threads")

    @flow
    def env_flow():
        pass

    with Session():
        with pytest.raises(UnknownComponentError, match=r"HEADWATER_TASK_RUNNER='threads'.*'concurrent'"):
            env_flow()


@pytest.mark.parametrize("bad", [42, dict, object()], ids=["number", "class", "object"])
def test_a_task_runner_of_the_wrong_kind_is_a_clear_error(bad):
    """Something that is neither a TaskRunner, a TaskRunner class nor a name is rejected
    when the flow is defined, naming the value and what is expected."""
    with pytest.raises(ConfigurationError, match=r"task_runner=.*expected a TaskRunner instance or class"):

        @flow(task_runner=bad)
        def wrong():
            pass


def test_a_plugin_can_register_a_runner_by_name():
    """A runner registered in headwater_register_components is usable by name and listed
    in the unknown-name error."""

    class InlineRunner(TaskRunner):
        def submit(self, work):
            work.run()

    class Plugin:
        @hookimpl
        def headwater_register_components(self, registry):
            registry.add_task_runner("inline", InlineRunner)

    @flow(task_runner="inline")
    def inline_flow():
        return where.submit().result()

    @flow(task_runner="inlined")
    def typo_flow():
        pass

    with Session(plugins=[Plugin()]):
        assert inline_flow() == threading.current_thread().name
        with pytest.raises(UnknownComponentError, match="'inline'"):
            typo_flow()


def test_headwater_make_task_runner_chooses_the_runner_per_flow():
    """A plugin's headwater_make_task_runner decides the runner, once per flow run."""
    calls = []

    class Counting(SequentialTaskRunner):
        submitted = 0

        def submit(self, work):
            Counting.submitted += 1
            super().submit(work)

    class Plugin:
        @hookimpl
        def headwater_make_task_runner(self, flow, session):
            calls.append(flow.name)
            return Counting() if flow.name == "counted" else None

    @flow(name="counted")
    def counted():
        for _ in range(3):
            where.submit()

    @flow(name="plain")
    def plain():
        return where.submit().result()

    with Session(plugins=[Plugin()]):
        counted()
        assert plain().startswith("headwater-worker-")  # None: the default decides
    assert calls == ["counted", "plain"]
    assert Counting.submitted == 3


# -- ThreadPoolTaskRunner: Prefect 3's name ---------------------------------------------------


def test_thread_pool_task_runner_is_the_concurrent_runner_under_prefect_3s_name(headwater_session, caplog):
    """ThreadPoolTaskRunner(max_workers=2) bounds the pool like ConcurrentTaskRunner,
    each flow run gets a copy of the same class, and the log names it."""
    from headwater.task_runners import ThreadPoolTaskRunner

    running = []
    peak = []
    lock = threading.Lock()

    @task
    def count(i):
        with lock:
            running.append(i)
            peak.append(len(running))
        time.sleep(0.05)
        with lock:
            running.pop()

    template = ThreadPoolTaskRunner(max_workers=2)

    @flow(task_runner=template)
    def bounded():
        for future in count.map(range(6)):
            future.result()

    with caplog.at_level("INFO", logger="headwater"):
        bounded()
    assert max(peak) == 2
    assert repr(template) == "ThreadPoolTaskRunner(max_workers=2)"
    assert type(template.duplicate()) is ThreadPoolTaskRunner
    assert "Using task runner 'ThreadPoolTaskRunner'" in caplog.text


def test_thread_pool_task_runner_is_registered_as_threadpool():
    """task_runner="threadpool" picks it by name."""
    from headwater.task_runners import ThreadPoolTaskRunner

    seen = {}

    @flow(task_runner="threadpool")
    def named():
        from headwater.engine.context import flow_run_ctx

        seen["runner"] = type(flow_run_ctx.get().task_runner)
        return where.submit().result()

    assert named().startswith("headwater-worker-")
    assert seen["runner"] is ThreadPoolTaskRunner


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", True])
def test_thread_pool_task_runner_names_a_bad_max_workers(bad):
    """A bad max_workers is a one-line error naming the class, the value and what was
    expected."""
    from headwater.task_runners import ThreadPoolTaskRunner

    with pytest.raises(ConfigurationError) as caught:
        ThreadPoolTaskRunner(max_workers=bad)
    assert str(caught.value) == (f"ThreadPoolTaskRunner(max_workers={bad!r}): expected a whole number "
                                 f"of at least 1, or None for the default")
