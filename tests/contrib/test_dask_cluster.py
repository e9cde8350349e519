"""DaskTaskRunner against a real cluster: a ``dask scheduler`` and two ``dask worker``
processes on 127.0.0.1, started by a fixture. The tasks below live in this test file,
which the workers cannot import: they travel by value. The workers get a HEADWATER_HOME
that must never be created: only the flow process writes the run store and results."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading

import pytest

distributed = pytest.importorskip("distributed")

import headwater  # noqa: E402
from headwater import flow, get_run_logger, get_store, task  # noqa: E402
from headwater.remote import NotPicklable, RemoteError  # noqa: E402
from headwater.tasks import task_input_hash  # noqa: E402
from headwater_dask import DaskTaskRunner  # noqa: E402
from dask_cluster import running_cluster  # noqa: E402

pytestmark = pytest.mark.timeout(90)

@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """(scheduler address, the workers' HEADWATER_HOME) for a scheduler and two workers."""
    base = tmp_path_factory.mktemp("dask-cluster")
    worker_home = base / "worker-home-never-created"
    env = {**os.environ, "HEADWATER_HOME": str(worker_home), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    with running_cluster(base, env) as address:
        yield address, worker_home


@pytest.fixture
def runner(dask_cluster):
    return DaskTaskRunner(address=dask_cluster[0])


@pytest.fixture
def submitted(monkeypatch):
    keys: list[str] = []
    original = distributed.Client.submit

    def counting(self, fn, *args, **kwargs):
        keys.append(kwargs.get("key", ""))
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "submit", counting)
    return keys


def state_names(run_id: str) -> list[str]:
    return [s.name for s in get_store().read_states(run_id)]


class Point:
    """A class defined in this test file: instances travel by value too."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


@task
def where(point):
    return (os.getpid(), distributed.get_worker().name, point.x + point.y)


@task
def combine(results):
    return sorted({name for _pid, name, _v in results}), sum(v for _p, _n, v in results)


def test_results_come_back_from_worker_processes(runner, dask_cluster):
    """Tasks and arguments defined in a file the workers cannot import run in the worker
    processes; a downstream task gets the upstream results through Dask; the workers
    never create a run store or result files."""

    @flow(task_runner=runner)
    def spread():
        parts = [where.submit(Point(i, 1)) for i in range(8)]
        return [p.result() for p in parts], combine.submit(parts).result()

    parts, (names, total) = spread()
    assert {pid for pid, _n, _v in parts}.isdisjoint({os.getpid()})
    assert set(names) <= {"worker-1", "worker-2"} and names
    assert total == sum(i + 1 for i in range(8))
    for run in get_store().read_task_runs():
        assert state_names(run.id) == ["Pending", "Running", "Completed"]
    assert not dask_cluster[1].exists(), "a worker wrote headwater state of its own"


@task(retries=2, retry_delay_seconds=0.05, log_prints=True)
def flaky():
    from headwater.runtime import task_run

    get_run_logger().info("attempt %d in process %d", task_run.run_count, os.getpid())
    print(f"printed by attempt {task_run.run_count}")
    if task_run.run_count < 3:
        raise ConnectionError(f"attempt {task_run.run_count} failed")
    return os.getpid()


def test_retries_happen_on_the_worker(runner, capsys):
    """All three attempts run in one worker process; their log lines (and printed lines,
    with log_prints) come back to the flow process; the store has the whole history."""

    @flow(task_runner=runner)
    def retrying():
        return flaky.submit().result()

    pid = retrying()
    assert pid != os.getpid()
    err = capsys.readouterr().err
    for n in (1, 2, 3):
        assert f"attempt {n} in process {pid}" in err
    assert "printed by attempt 3" in err
    (run,) = get_store().read_task_runs()
    assert run.run_count == 3
    assert state_names(run.id) == ["Pending", "Running", "AwaitingRetry", "Retrying",
                                   "AwaitingRetry", "Retrying", "Completed"]


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(minutes=5))
def cached_square(x):
    return x * x, os.getpid()


def test_cache_hit_stays_in_the_flow_process(runner, submitted):
    """The first run computes on a worker and the flow process stores the result and
    the cache entry; the second run is a Cached hit that never reaches the cluster."""

    @flow(task_runner=runner)
    def squares():
        return cached_square.submit(9).result()

    first = squares()
    assert first[0] == 81 and first[1] != os.getpid()
    assert squares() == first
    assert len(submitted) == 1
    names = sorted(r.state.name for r in get_store().read_task_runs())
    assert names == ["Cached", "Completed"]
    assert len(get_store().read_cache_entries()) == 1


class HoldsALock(Exception):
    """Cannot be pickled (it carries a lock): travels back as text."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.lock = threading.Lock()


@task
def fails_plainly():
    raise KeyError("missing-key")


@task
def fails_oddly():
    raise HoldsALock(7, "odd failure")


def test_failing_tasks(runner):
    """A worker's exception is raised by the future in the flow process; one that cannot
    be pickled back arrives as a RemoteError carrying its type and message."""

    @flow(task_runner=runner)
    def failing():
        plain, odd = fails_plainly.submit(), fails_oddly.submit()
        with pytest.raises(KeyError, match="missing-key"):
            plain.result()
        with pytest.raises(RemoteError, match="HoldsALock: 7: odd failure"):
            odd.result()
        return "handled"

    assert failing() == "handled"
    for run in get_store().read_task_runs():
        assert state_names(run.id) == ["Pending", "Running", "Failed"]


def test_unpicklable_argument(runner, submitted):
    """A generator argument cannot be pickled: submit() raises an error naming it."""

    @flow(task_runner=runner)
    def bad():
        where.submit(x for x in range(3))

    with pytest.raises(NotPicklable, match="argument 'point' of task 'where'"):
        bad()
    assert submitted == []


def test_module_the_workers_lack_fails_clearly(runner, tmp_path, monkeypatch):
    """A task from an installed package the workers do not have fails with a message
    that names the missing module and says to install it on the workers."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "only_on_the_flow_side.py").write_text(
        "from headwater import task\n\ndef helper():\n    return 1\n\n"
        "@task\ndef local_only():\n    return helper()\n")
    monkeypatch.syspath_prepend(str(site))
    from only_on_the_flow_side import local_only

    @flow(task_runner=runner)
    def missing():
        return local_only.submit().wait().message

    message = missing()
    assert "could not be loaded on the Dask worker" in message
    assert "only_on_the_flow_side" in message and "Install" in message


@task
def returns_a_lock():
    import threading

    return threading.Lock()


def test_unpicklable_result_fails_the_run(runner):
    """A result that cannot be pickled back from the worker fails the run with a message
    that says so, instead of losing the run."""

    @flow(task_runner=runner)
    def bad_result():
        return returns_a_lock.submit().wait().message

    message = bad_result()
    assert "cannot be pickled to send it back from the worker" in message
    (run,) = get_store().read_task_runs()
    assert run.state.is_failed()


@task(retries=1, retry_delay_seconds=0)
def inner(x):
    return x + 1, os.getpid()


@task
def outer(x):
    # Tasks called (and submitted) inside a task run there, on the worker, as runs of
    # the same flow run.
    first = inner(x)
    second = inner.submit(first[0]).result()
    return second[0], {first[1], second[1]}


def test_tasks_called_inside_a_task_are_recorded_by_the_flow_process(runner, dask_cluster):
    """A task that calls other tasks on the worker: they run there, and their runs and
    states are recorded in the flow process's store, in the same flow run."""

    @flow(task_runner=runner)
    def nesting():
        return outer.submit(1).result()

    value, pids = nesting()
    assert value == 3 and os.getpid() not in pids and len(pids) == 1
    runs = get_store().read_task_runs()
    assert sorted(r.task_name for r in runs) == ["inner", "inner", "outer"]
    flow_run_ids = {r.flow_run_id for r in runs}
    assert len(flow_run_ids) == 1 and None not in flow_run_ids
    for run in runs:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]
    assert len({r.name for r in runs}) == 3
    assert not dask_cluster[1].exists()


@task
def describe_flow_run():
    from headwater.runtime import flow_run

    return flow_run.id, flow_run.name, flow_run.flow_name, flow_run.parameters, flow_run.run_count


def test_runtime_flow_run_reads_on_a_worker(runner):
    """Inside a task on a worker process, headwater.runtime.flow_run describes the flow
    run the task belongs to, parameters included."""
    from headwater.runtime import flow_run

    @flow(task_runner=runner)
    def described(city: str, days: int = 2):
        here = (flow_run.id, flow_run.name, flow_run.flow_name, flow_run.parameters, flow_run.run_count)
        return here, describe_flow_run.submit().result()

    here, there = described("Oslo")
    assert there == here
    assert there[3] == {"city": "Oslo", "days": 2} and there[4] == 1


@dataclasses.dataclass
class Part:
    """A dataclass of this file (which the workers cannot import): a hashable input."""

    name: str
    size: int


@task
def measure(part: Part, marks: str) -> Part:
    with open(os.path.join(marks, f"calls-{part.name}"), "a") as f:
        f.write("x")
    if os.path.exists(os.path.join(marks, f"break-{part.name}")):
        raise RuntimeError(f"part {part.name} is broken")
    return Part(part.name, part.size * 2)


@flow(task_runner=DaskTaskRunner(), persist_result=True)
def measure_parts(marks: str) -> int:
    first = measure.submit(Part("a", 1), marks)
    second = measure.submit(first, marks)  # its input is the first run's result, made on a worker
    third = measure.submit(Part("c", 3), marks)
    return second.result().size + third.result().size


def test_a_retry_reuses_runs_completed_in_worker_processes(dask_cluster, tmp_path, monkeypatch, submitted):
    """Runs that completed in worker processes, with inputs of a class defined in a file
    the workers cannot import, are reused by a retry of their flow run: the inputs hash
    recorded for them is the one the flow process computes for the same call."""
    monkeypatch.setenv("HEADWATER_DASK_ADDRESS", dask_cluster[0])
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "break-c").touch()
    failed = measure_parts(str(marks), return_state=True)
    assert failed.is_failed()
    (marks / "break-c").unlink()
    run_id = failed.state_details.flow_run_id
    submitted.clear()

    assert headwater.retry_run(run_id).result() == 4 + 6
    calls = {p.name: p.stat().st_size for p in marks.iterdir()}
    assert calls == {"calls-a": 2, "calls-c": 2}  # "a" twice: once as Part a, once as its result
    assert len(submitted) == 1
    runs = get_store().read_task_runs(flow_run_id=run_id)
    assert sorted(r.state.name for r in runs) == ["Cached", "Cached", "Completed", "Completed", "Completed", "Failed"]
    assert not dask_cluster[1].exists()
