"""DaskTaskRunner against a temporary in-process LocalCluster: results, dependencies,
retries on the worker, caching in the flow process, state histories, failures and
pickling errors. (tests/contrib/test_dask_cluster.py repeats the core of it against real
scheduler and worker processes.)"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import traceback

import pytest

distributed = pytest.importorskip("distributed")

import headwater  # noqa: E402
from headwater import flow, get_run_logger, get_store, task, unmapped  # noqa: E402
from headwater.errors import ConfigurationError  # noqa: E402
from headwater.remote import NotPicklable  # noqa: E402
from headwater.tasks import task_input_hash  # noqa: E402
from headwater_dask import DaskTaskRunner  # noqa: E402

pytestmark = pytest.mark.timeout(60)

IN_PROCESS = {"processes": False, "n_workers": 1, "threads_per_worker": 4, "dashboard_address": ":0"}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(**IN_PROCESS) as cluster:
        yield cluster


@pytest.fixture
def runner(cluster):
    return DaskTaskRunner(address=cluster.scheduler_address)


@pytest.fixture
def submitted(monkeypatch):
    """Keys of every task run this test sends to Dask."""
    keys: list[str] = []
    original = distributed.Client.submit

    def counting(self, fn, *args, **kwargs):
        keys.append(kwargs.get("key", ""))
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "submit", counting)
    return keys


def on_dask_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def state_names(run_id: str) -> list[str]:
    return [s.name for s in get_store().read_states(run_id)]


@task
def double(x):
    assert on_dask_worker(), "expected to run on a Dask worker"
    return x * 2


@task
def total(values, extra):
    return sum(values) + sum(extra.values())


def test_results_and_nested_future_arguments(runner, submitted):
    """Submitted tasks run on Dask workers; futures nested in lists and dicts reach the
    downstream task as their results, and every run is recorded Pending → Running →
    Completed in the flow process's store."""

    @flow(task_runner=runner)
    def pipeline():
        a = double.submit(1)
        b = double.submit(2)
        return total.submit([a, b], {"c": double.submit(a)}).result()

    assert pipeline() == 1 * 2 + 2 * 2 + 4
    runs = get_store().read_task_runs()
    assert len(runs) == 4 and len(submitted) == 4
    for run in runs:
        assert run.state.is_completed()
        assert state_names(run.id) == ["Pending", "Running", "Completed"]


@task(retries=2, retry_delay_seconds=0)
def flaky(x):
    from headwater.runtime import task_run

    # Module globals are copied to workers (the module is sent by value): report by log.
    get_run_logger().info("attempt %d on a Dask worker: %s", task_run.run_count, on_dask_worker())
    if task_run.run_count < 3:
        raise ConnectionError(f"attempt {task_run.run_count} failed")
    return x


def test_retries_run_on_the_worker(runner, capsys):
    """A task with retries fails twice and succeeds on its third attempt, every attempt
    on a Dask worker; the store holds the whole history and the run count."""

    @flow(task_runner=runner)
    def retrying():
        return flaky.submit(7).result()

    assert retrying() == 7
    err = capsys.readouterr().err
    for n in (1, 2, 3):
        assert err.count(f"attempt {n} on a Dask worker: True") == 1
    (run,) = get_store().read_task_runs()
    assert run.run_count == 3
    assert state_names(run.id) == ["Pending", "Running", "AwaitingRetry", "Retrying",
                                   "AwaitingRetry", "Retrying", "Completed"]


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(hours=1))
def expensive(x):
    return x + 100


def test_cache_hit_never_reaches_the_cluster(runner, submitted):
    """The first run computes and caches on Dask; the second flow run finds the entry in
    the flow process and never submits anything to Dask."""
    @flow(task_runner=runner)
    def cached(x):
        return expensive.submit(x).result()

    assert cached(1) == 101
    assert len(submitted) == 1
    assert cached(1) == 101
    assert len(submitted) == 1, "the cache hit was sent to Dask"
    second = [r for r in get_store().read_task_runs() if r.state.name == "Cached"]
    assert len(second) == 1 and state_names(second[0].id) == ["Pending", "Cached"]


@task
def explode(x):
    raise ValueError(f"bad input {x}")


def test_failing_task_and_not_ready_downstream(runner):
    """A task that raises on the worker ends Failed with its exception, which the future
    raises in the flow process with this file's name and line in its traceback (and in the
    logged one); a task depending on it ends NotReady without running; the flow fails."""
    caught = []

    @flow(task_runner=runner)
    def failing():
        bad = explode.submit(3)
        double.submit(bad)  # never looked at: its NotReady fails the flow
        with pytest.raises(ValueError, match="bad input 3") as raised:
            bad.result()
        caught.append(raised.value)

    state = failing(return_state=True)
    assert state.is_failed()
    last = traceback.extract_tb(caught[0].__traceback__)[-1]
    assert (last.filename, last.name, last.line) == (__file__, "explode", 'raise ValueError(f"bad input {x}")')
    runs = {r.task_name: r for r in get_store().read_task_runs()}
    (logged,) = [line["message"] for line in get_store().read_logs(task_run_id=runs["explode"].id)
                 if "Encountered exception" in line["message"]]
    assert "<dynamic-code>" not in logged
    assert f'File "{__file__}", line' in logged and 'raise ValueError(f"bad input {x}")' in logged
    assert runs["explode"].state.is_failed()
    assert state_names(runs["explode"].id) == ["Pending", "Running", "Failed"]
    assert runs["double"].state.name == "NotReady"
    assert "explode" in runs["double"].state.message


def test_unpicklable_argument_is_a_clear_error_at_submit(runner, submitted):
    """An argument that cannot be pickled raises at submit(), naming the argument and
    the task; the run is recorded Failed and the flow does not hang."""

    @flow(task_runner=runner)
    def bad_argument():
        double.submit(threading.Lock())

    with pytest.raises(NotPicklable, match=r"argument 'x' of task 'double'.*lock"):
        bad_argument()
    (run,) = get_store().read_task_runs()
    assert run.state.is_failed()
    assert submitted == []


@task(timeout_seconds=0.2)
def slow():
    import time

    time.sleep(3)


def test_timeout_is_enforced_on_the_worker(runner):
    """timeout_seconds applies on the worker: the run ends TimedOut."""

    @flow(task_runner=runner)
    def timing_out():
        return slow.submit().wait().name

    assert timing_out() == "TimedOut"


@task
async def async_square(x):
    return x * x


@task(log_prints=True)
def chatty(x):
    get_run_logger().info("working on %s", x)
    print("printed on the worker")
    return x


def test_async_tasks_and_worker_logs(runner, capsys):
    """Async tasks run on the worker too; log lines (and printed lines of log_prints
    tasks) written on the worker are shown once in the flow process, under the run, and
    kept in the run store's log of that task run."""

    @flow(task_runner=runner)
    def mixed():
        return async_square.submit(4).result() + chatty.submit(1).result()

    assert mixed() == 17
    err = capsys.readouterr().err
    assert err.count("working on 1") == 1
    assert "Task run 'chatty-" in err and "printed on the worker" in err
    store = get_store()
    store.flush()
    (run,) = [r for r in store.read_task_runs() if r.task_name == "chatty"]
    lines = [row["message"] for row in store.read_logs(task_run_id=run.id)]
    assert "working on 1" in lines and "printed on the worker" in lines


def test_registered_name_and_environment_setting(cluster, monkeypatch):
    """task_runner="dask" and HEADWATER_TASK_RUNNER=dask select the runner; with
    HEADWATER_DASK_ADDRESS it uses that cluster."""
    from headwater import Session

    monkeypatch.setenv("HEADWATER_DASK_ADDRESS", cluster.scheduler_address)

    @flow(task_runner="dask")
    def by_name():
        return double.submit(5).result()

    assert by_name() == 10

    @flow
    def by_env():
        return double.submit(6).result()

    monkeypatch.setenv("HEADWATER_TASK_RUNNER", "dask")
    with Session():
        assert by_env() == 12


class RecordingCluster(distributed.LocalCluster):
    made: list[distributed.LocalCluster] = []
    adapted: list[dict] = []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        RecordingCluster.made.append(self)

    def adapt(self, **kwargs):
        RecordingCluster.adapted.append(kwargs)
        return super().adapt(**kwargs)


def test_temporary_cluster_is_closed_but_an_existing_one_is_not(cluster):
    """A cluster the runner starts (with adapt_kwargs applied) is closed when the flow
    run ends; a cluster it only connected to keeps running."""

    @flow(task_runner=DaskTaskRunner(cluster_class=RecordingCluster, cluster_kwargs=IN_PROCESS,
                                     adapt_kwargs={"minimum": 1, "maximum": 2}))
    def own_cluster():
        return double.submit(1).result()

    assert own_cluster() == 2
    assert RecordingCluster.made[-1].status.name == "closed"
    assert RecordingCluster.adapted[-1] == {"minimum": 1, "maximum": 2}

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def borrowed():
        return double.submit(2).result()

    assert borrowed() == 4
    assert cluster.status.name == "running"
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        assert client.submit(sum, [1, 2]).result() == 3


def test_bad_options_are_named():
    """Bad constructor arguments raise a clear error naming the value."""
    with pytest.raises(ConfigurationError, match=r"cluster_kwargs=\[1\]"):
        DaskTaskRunner(cluster_kwargs=[1])
    with pytest.raises(ConfigurationError, match="connects to an existing cluster"):
        DaskTaskRunner(address="tcp://127.0.0.1:1", cluster_kwargs={"n_workers": 1})
    with pytest.raises(ConfigurationError, match="address=5"):
        DaskTaskRunner(address=5)


def test_import_headwater_never_imports_dask(tmp_path):
    """Importing headwater, and running a flow with the plugin installed (its entry point
    loaded), imports neither dask nor distributed."""
    code = (
        "import sys, headwater\n"
        "from headwater import flow, task\n"
        "@task\ndef one(): return 1\n"
        "@flow\ndef f(): return one.submit().result()\n"
        "assert f() == 1\n"
        "loaded = [m for m in ('dask', 'distributed') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "HEADWATER_HOME": str(tmp_path), "HEADWATER_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


key_calls: list[bool] = []


def flaky_key(context, parameters):
    # Runs in the flow process (this list is the test's own): fails the first time.
    key_calls.append(on_dask_worker())
    if len(key_calls) == 1:
        raise RuntimeError("key store not ready")
    return f"key-{parameters['x']}"


@task(cache_key_fn=flaky_key, retries=1, retry_delay_seconds=0.05)
def keyed(x):
    return x * 3


def test_cache_keys_are_computed_in_the_flow_process_with_retries(runner):
    """The cache key function runs in the flow process; when it fails and a retry is
    left, the retry is recorded and the run then goes to Dask as a retry."""
    key_calls.clear()

    @flow(task_runner=runner)
    def keyed_flow():
        return keyed.submit(2).result()

    assert keyed_flow() == 6
    assert key_calls == [False, False]
    (run,) = get_store().read_task_runs()
    assert state_names(run.id) == ["Pending", "AwaitingRetry", "Retrying", "Completed"]
    assert run.cache_key == "key-2"


def test_async_flow_and_map(runner):
    """An async flow can use the runner; map() and wait_for order runs on Dask."""
    import asyncio

    @flow(task_runner=runner)
    async def async_flow():
        doubled = double.map([1, 2, 3])
        square = async_square.submit(doubled[2], wait_for=doubled[:2])
        return [f.result() for f in doubled], square.result()

    assert asyncio.run(async_flow()) == ([2, 4, 6], 36)


_GUARD = threading.Lock()


@task
def guarded(x):
    with _GUARD:  # a module-level lock: the function cannot travel with it
        return x


def test_unpicklable_task_is_a_clear_error_at_submit(runner, submitted):
    """A task whose function cannot be pickled raises at submit(), naming the task and
    its function, and nothing reaches Dask."""

    @flow(task_runner=runner)
    def bad_task():
        guarded.submit(1)

    with pytest.raises(NotPicklable, match=r"task 'guarded' \(.*guarded\) cannot be pickled"):
        bad_task()
    (run,) = get_store().read_task_runs()
    assert run.state.is_failed() and "cannot be pickled" in run.state.message
    assert submitted == []


def test_an_unreachable_scheduler_fails_the_flow_run_clearly():
    """A scheduler that cannot be reached fails the flow run before its body, with an
    error naming the address."""
    from headwater_dask.runner import DaskRunnerError

    @flow(task_runner=DaskTaskRunner(address="tcp://127.0.0.1:1", client_kwargs={"timeout": 1}))
    def unreachable():
        raise AssertionError("the body must not run")

    with pytest.raises(DaskRunnerError, match=r"could not connect to the Dask scheduler at 'tcp://127.0.0.1:1'"):
        unreachable()
    (run,) = get_store().read_flow_runs()
    assert run.state.is_failed()


@task
def inner_part(fail: bool) -> int:
    if fail:
        raise ValueError("inner part failed")
    return 1


@task
def outer_part(inner_fails: bool, outer_fails: bool) -> int:
    try:
        value = inner_part(inner_fails)
    except ValueError:
        value = 0
    if outer_fails:
        raise RuntimeError("outer part failed")
    return value


def test_a_task_called_on_the_worker_reports_its_own_final_state(runner, capsys):
    """A task run started by a task on the worker is shown and counted with its own
    final state, not the calling task's; in the run store its "Created" line comes
    before its "Finished" line."""

    @flow(task_runner=runner, flow_run_name="nested-states")
    def nested():
        outcomes = [outer_part.submit(True, False), outer_part.submit(False, True)]
        return [future.wait().type.value for future in outcomes]

    assert nested() == ["COMPLETED", "FAILED"]
    err = capsys.readouterr().err
    store = get_store()
    store.flush()
    runs = {(r.task_name, r.parameters.get("fail", r.parameters.get("inner_fails"))): r
            for r in store.read_task_runs()}
    failed_inner, completed_inner = runs[("inner_part", True)], runs[("inner_part", False)]
    assert f"Task run '{failed_inner.name}' - Finished in state Failed(" in err
    assert f"Task run '{completed_inner.name}' - Finished in state Completed()" in err
    run = store.read_flow_run("nested-states")
    lines = store.read_logs(flow_run_id=run.id)
    for inner in (failed_inner, completed_inner):
        created = next(i for i, line in enumerate(lines)
                       if line["message"] == f"Created task run {inner.name!r} for task 'inner_part'")
        finished = next(i for i, line in enumerate(lines)
                        if line["task_run_id"] == inner.id and line["message"].startswith("Finished in state"))
        assert created < finished
        assert lines[finished]["message"] == f"Finished in state {inner.state}"


# -- retrying a flow run (headwater.retry_run) on Dask ------------------------------------------
#
# The tasks run on workers, where this module arrives by value: its globals there are copies.
# So they count their calls, and learn whether to fail, through files under ``marks``.


def _calls(marks: str, name: str) -> int:
    path = os.path.join(marks, f"calls-{name}")
    return os.path.getsize(path) if os.path.exists(path) else 0


@task
def stage(name: str, value: int, marks: str) -> int:
    with open(os.path.join(marks, f"calls-{name}"), "a") as f:
        f.write("x")
    if os.path.exists(os.path.join(marks, f"break-{name}")):
        raise RuntimeError(f"stage {name} is broken")
    return value + 1


@task
def add_up(parts: list, base: int, marks: str) -> int:
    return stage.fn("add", sum(parts) + base, marks)


# DaskTaskRunner() finds the test's cluster through HEADWATER_DASK_ADDRESS; the flows are
# defined here, at module level, so that retry_run loads them from their entry point.
@flow(task_runner=DaskTaskRunner(), persist_result=True)
def four_stages(marks: str, start: int = 0) -> int:
    a = stage.submit("one", start, marks).result()
    b = stage.submit("two", a, marks).result()
    c = stage.submit("three", b, marks).result()
    return stage.submit("four", c, marks).result()


@flow(task_runner=DaskTaskRunner(), persist_result=True)
def fan_out(marks: str) -> int:
    base = stage.submit("base", 0, marks)
    shifted = stage.submit("shift", base, marks)  # a future as input: resolved before matching
    parts = stage.map(["m1", "m2", "m3"], unmapped(shifted), unmapped(marks))
    return add_up.submit(parts, shifted, marks).result()


@pytest.fixture
def marks(tmp_path, cluster, monkeypatch):
    monkeypatch.setenv("HEADWATER_DASK_ADDRESS", cluster.scheduler_address)
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


def _sent_runs(keys: list[str]) -> set[str]:
    """The task run ids in the keys of the runs sent to Dask (``<task>-<run id>``)."""
    return {key.split("-", 1)[1] for key in keys}


def test_a_retried_flow_run_reuses_on_dask_what_completed(marks, submitted):
    """The third of four tasks fails on a worker; the retry is the same flow run, attempt
    2: the first two are reused in the flow process (never sent to Dask), the third and
    fourth run on workers. A forced third attempt reuses all four, results of runs that
    completed on a worker included."""
    (marks / "break-three").touch()
    failed = four_stages(str(marks), 1, return_state=True)
    assert failed.is_failed()
    run_id = failed.state_details.flow_run_id
    (marks / "break-three").unlink()
    first_keys = list(submitted)
    submitted.clear()

    state = headwater.retry_run(run_id)

    assert state.is_completed() and state.result() == 5
    assert {n: _calls(str(marks), n) for n in ("one", "two", "three", "four")} == \
        {"one": 1, "two": 1, "three": 2, "four": 1}
    store = get_store()
    run = store.read_flow_run(run_id)
    assert run.state.is_completed() and run.run_count == 2
    assert len(store.read_flow_runs()) == 1
    runs = store.read_task_runs(flow_run_id=run_id)
    reused = [r for r in runs if r.state.name == "Cached"]
    assert sorted(r.parameters["name"] for r in reused) == ["one", "two"]
    assert all(r.state.message.startswith("Reused the result of task run") for r in reused)
    assert not _sent_runs(submitted) & {r.id for r in reused}, "a reused run was sent to Dask"
    assert len(submitted) == 2 and len(first_keys) == 3
    # Recorded with the result of every run that completed on a worker: a later retry matches it.
    assert all(r.inputs_hash is not None for r in runs if r.state.is_completed())

    submitted.clear()
    assert headwater.retry_run(run_id, force=True).result() == 5
    assert submitted == []
    assert _calls(str(marks), "three") == 2 and _calls(str(marks), "four") == 1
    assert store.read_flow_run(run_id).run_count == 3


def test_a_retry_reruns_only_the_failed_element_of_a_map(marks, submitted):
    """Futures passed between submitted tasks and a map with one failing element: on
    retry, the upstream runs and the map's other elements are reused (their inputs, the
    upstream results, resolved in the flow process to match them); only the failed
    element and the task that needed it run again."""
    (marks / "break-m2").touch()
    failed = fan_out(str(marks), return_state=True)
    assert failed.is_failed()
    run_id = failed.state_details.flow_run_id
    (marks / "break-m2").unlink()
    submitted.clear()

    state = headwater.retry_run(run_id)

    assert state.is_completed() and state.result() == 3 * 3 + 2 + 1
    counts = {n: _calls(str(marks), n) for n in ("base", "shift", "m1", "m2", "m3", "add")}
    assert counts == {"base": 1, "shift": 1, "m1": 1, "m2": 2, "m3": 1, "add": 1}
    runs = get_store().read_task_runs(flow_run_id=run_id)
    reused = {r.id for r in runs if r.state.name == "Cached"}
    assert len(reused) == 4
    assert len(submitted) == 2 and not _sent_runs(submitted) & reused


# -- allow_failure and quote (mirroring tests/core/test_annotations.py) ---------------------


@task
def received(x):
    """What the task got, and where it ran."""
    return repr(x), on_dask_worker()


@task
def kinds(x):
    """The types the task received, nested one level."""
    if isinstance(x, dict):
        return {k: type(v).__name__ for k, v in x.items()}
    if isinstance(x, list):
        return [type(v).__name__ for v in x]
    return type(x).__name__


@task
def slow_explode(x, delay=0.3):
    import time

    time.sleep(delay)
    raise ValueError(f"bad input {x}")


def _states_by_task(flow_run_id: str) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for run in get_store().read_task_runs(flow_run_id=flow_run_id):
        runs.setdefault(run.task_name, []).append(run.state.name)
    return {name: sorted(names) for name, names in runs.items()}


def test_allow_failure_runs_the_downstream_on_dask_with_the_exception(runner, submitted):
    """The downstream runs on a Dask worker and receives the upstream's exception, whether
    the upstream had already failed when it was submitted or was still running (it then
    waits for it); a called downstream gets it too. The failure it was allowed does not
    fail the flow run."""
    from headwater import allow_failure

    @flow(task_runner=runner)
    def tolerant():
        done = explode.submit(1)
        done.wait()
        after_failure = received.submit(allow_failure(done)).result()
        pending = slow_explode.submit(2)
        while_pending = received.submit(allow_failure(pending)).result()
        called = received(allow_failure(done))
        return after_failure, while_pending, called

    state = tolerant(return_state=True)
    assert state.is_completed()
    after_failure, while_pending, called = state.result()
    assert after_failure == ("ValueError('bad input 1')", True)
    assert while_pending == ("ValueError('bad input 2')", True)
    assert called == ("ValueError('bad input 1')", False)  # a call runs in the flow process
    assert len(submitted) == 4
    assert _states_by_task(state.state_details.flow_run_id) == {
        "explode": ["Failed"], "slow_explode": ["Failed"], "received": ["Completed"] * 3}


def test_allow_failure_around_lists_and_dicts_of_futures_on_dask(runner):
    """Every future inside is waited for; completed ones give their result, failed ones
    their exception; a completed upstream still pending when submitted as well."""
    from headwater import allow_failure

    @task
    def late(x):
        import time

        time.sleep(0.2)
        return x

    @flow(task_runner=runner)
    def nested():
        bad, good = explode.submit(0), late.submit(3)
        return (kinds.submit(allow_failure([bad, good])).result(),
                kinds.submit(allow_failure({"bad": bad, "good": good})).result(),
                kinds.submit([allow_failure(bad), good]).result())

    assert nested() == (["ValueError", "int"], {"bad": "ValueError", "good": "int"},
                        ["ValueError", "int"])


def test_a_future_also_passed_bare_must_complete_on_dask(runner):
    """allow_failure covers only where it is written: the same future passed bare too (or
    another failed one) still makes the downstream NotReady without running."""
    from headwater import allow_failure

    @task
    def both(a, b):
        return "ran"

    @flow(task_runner=runner)
    def mixed():
        failing = explode.submit(5)
        return both.submit(allow_failure(failing), failing).wait()

    state = mixed(return_state=True)
    assert state.is_failed()
    (run,) = [r for r in get_store().read_task_runs() if r.task_name == "both"]
    assert run.state.name == "NotReady" and "explode" in run.state.message
    assert state_names(run.id) == ["Pending", "NotReady"]


def test_allow_failure_in_wait_for_orders_without_stopping_on_dask(runner):
    """wait_for=[allow_failure(f)] (a list, a single one, a generator) waits for f, then
    runs whatever f's outcome; a bare failed future in wait_for still stops the run."""
    from headwater import allow_failure

    @task
    def cleanup():
        return "cleaned", on_dask_worker()

    @flow(task_runner=runner)
    def with_cleanup():
        failing = slow_explode.submit(1)
        cleaned = cleanup.submit(wait_for=[allow_failure(failing)]).result()
        single = cleanup.submit(wait_for=allow_failure(failing)).result()
        generated = cleanup.submit(wait_for=(f for f in [allow_failure(failing)])).result()
        stopped = cleanup.submit(wait_for=[failing]).wait()
        return cleaned, single, generated, stopped.name

    state = with_cleanup(return_state=True)
    assert state.is_completed()  # the NotReady was looked at (wait): handled, as the failure
    assert state.result() == (("cleaned", True),) * 3 + ("NotReady",)
    runs = get_store().read_task_runs(flow_run_id=state.state_details.flow_run_id)
    (upstream,) = [r for r in runs if r.task_name == "slow_explode"]
    cleanups = sorted((r for r in runs if r.task_name == "cleanup"), key=lambda r: r.state.name)
    assert [r.state.name for r in cleanups] == ["Completed", "Completed", "Completed", "NotReady"]
    for run in cleanups[:3]:
        assert run.start_ts >= upstream.end_ts


def test_allow_failure_in_map_applies_to_every_item_on_dask(runner):
    """map over allow_failure([...]) runs one task per item, failed items included;
    unmapped(allow_failure(f)) passes f's exception to every run."""
    from headwater import allow_failure

    @task
    def pair(x, y):
        return f"{type(x).__name__}+{type(y).__name__}"

    @flow(task_runner=runner)
    def mapped():
        bad, good = slow_explode.submit(0, 0.1), double.submit(1)
        per_item = [f.result() for f in received.map(allow_failure([bad, good]))]
        constant = [f.result() for f in pair.map([1, 2], unmapped(allow_failure(bad)))]
        return per_item, constant

    per_item, constant = mapped()
    assert per_item == [("ValueError('bad input 0')", True), ("2", True)]
    assert constant == ["int+ValueError", "int+ValueError"]


def test_quote_is_unwrapped_before_the_call_on_dask(runner, submitted):
    """The task receives the quoted value, never the wrapper: top level, inside a list,
    and per item in map; the runs go to Dask."""
    from headwater.utilities.annotations import quote

    @flow(task_runner=runner)
    def unwrapped():
        return (kinds.submit(quote({"a": 1})).result(), kinds.submit([quote(1), 2]).result(),
                [f.result() for f in kinds.map(quote([1, "x"]))],
                received.submit(quote((1, 2))).result())

    assert unwrapped() == ({"a": "int"}, ["int", "int"], ["int", "str"], ("(1, 2)", True))
    assert len(submitted) == 5


def test_quoted_argument_is_keyed_by_type_in_the_flow_process(runner, submitted):
    """task_input_hash counts a quoted argument by its type only, also for a run sent to
    Dask: a second flow run with different quoted content is a cache hit that never
    reaches the cluster."""
    from headwater.utilities.annotations import quote

    @task(cache_key_fn=task_input_hash)
    def measure(rows, scale):
        return len(rows) * scale

    @flow(task_runner=runner)
    def measuring(rows):
        return measure.submit(quote(rows), 10).result()

    assert measuring([1, 2, 3]) == 30
    assert len(submitted) == 1
    assert measuring([1]) == 30  # the same key: only the type of the quoted rows counts
    assert len(submitted) == 1


def test_quote_around_a_future_is_a_clear_error_on_dask(runner, submitted):
    """A quoted future would reach the task as the future itself, which lives in the flow
    process and cannot go to a worker: submit() says so, the run is recorded Failed."""
    from headwater.utilities.annotations import quote

    @flow(task_runner=runner)
    def quoting():
        upstream = double.submit(1)
        upstream.wait()
        kinds.submit(quote([upstream]))

    with pytest.raises(NotPicklable, match=r"quote\(\.\.\.\) around the future of task run 'double-"):
        quoting()
    (run,) = [r for r in get_store().read_task_runs() if r.task_name == "kinds"]
    assert run.state.is_failed()
    assert len(submitted) == 1


def test_a_retried_cache_key_of_a_run_given_allow_failure(runner):
    """The cache key function fails once: the retry comes back to a run whose arguments
    were already unwrapped (the failed upstream's exception) and sends it as it is."""
    from headwater import allow_failure

    key_calls.clear()

    @task(cache_key_fn=flaky_key, retries=1, retry_delay_seconds=0.05)
    def keyed_tolerant(x):
        return repr(x), on_dask_worker()

    @flow(task_runner=runner)
    def keyed_flow():
        return keyed_tolerant.submit(allow_failure(explode.submit(4))).result()

    assert keyed_flow() == ("ValueError('bad input 4')", True)
    assert key_calls == [False, False]
    (run,) = [r for r in get_store().read_task_runs() if r.task_name == "keyed_tolerant"]
    assert state_names(run.id) == ["Pending", "AwaitingRetry", "Retrying", "Completed"]


UNGUARDED = """\
from headwater import flow, task
from headwater_dask import DaskTaskRunner


@task
def square(x):
    return x * x


@flow(task_runner=RUNNER)
def total(n):
    return sum(f.result() for f in square.map(range(n)))


print("total", total(4))  # no `if __name__ == "__main__":` guard
"""


def _run_script(tmp_path, runner: str) -> subprocess.CompletedProcess:
    script = tmp_path / "etl.py"
    script.write_text(UNGUARDED.replace("RUNNER", runner))
    env = {**os.environ, "HEADWATER_HOME": str(tmp_path / "home")}
    env.pop("HEADWATER_DASK_ADDRESS", None)
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=50, cwd=tmp_path)


def test_a_script_without_a_main_guard_is_one_clear_error_line(tmp_path):
    """The local cluster's worker processes would import the script again and call the
    flow again: the flow run fails before any of them starts, with one line saying what
    to add (not hundreds of lines ending in "Nanny failed to start")."""
    done = _run_script(tmp_path, '"dask"')
    assert done.returncode == 1
    assert "Nanny" not in done.stderr and "total" not in done.stdout
    expected = (f"headwater.main_guard.MainGuardMissing: {tmp_path / 'etl.py'}:15 calls flow 'total' "
                f"at the script's top level, and Dask's local cluster starts worker processes that "
                f"import the script again: put the call under `if __name__ == \"__main__\":`")
    assert done.stderr.splitlines()[-1] == expected
    assert len(done.stderr.splitlines()) < 15, done.stderr


def test_a_script_without_a_main_guard_runs_on_a_cluster_of_threads(tmp_path):
    """No worker process imports the script when the local cluster runs in threads."""
    done = _run_script(tmp_path, 'DaskTaskRunner(cluster_kwargs={"processes": False, "n_workers": 1, '
                                 '"dashboard_address": ":0"})')
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "total 14"
