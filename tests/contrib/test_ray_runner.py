"""RayTaskRunner against a real local Ray (``ray.init(num_cpus=2)``, started once for
this module): results, futures resolved on the workers, retries and timeouts on the
worker, caching in the flow process, state histories, logs, errors and pickling errors.
Two subprocesses cover a Ray started (and stopped) for a flow run and a cluster reached
by address."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import pytest

ray = pytest.importorskip("ray")

from headwater import allow_failure, flow, get_run_logger, get_store, task  # noqa: E402
from headwater.errors import ConfigurationError  # noqa: E402
from headwater.remote import NotPicklable  # noqa: E402
from headwater.tasks import task_input_hash  # noqa: E402
from headwater_ray import RayRunnerError, RayTaskRunner  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module; RayTaskRunner() uses it (and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def runner():
    return RayTaskRunner()


@pytest.fixture
def marks(tmp_path):
    """A folder the tasks leave marks in: on a worker, this module's globals are copies."""
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


def on_ray_worker() -> bool:
    return ray.get_runtime_context().get_task_id() is not None


def state_names(run_id: str) -> list[str]:
    return [s.name for s in get_store().read_states(run_id)]


def mark(marks: str, name: str) -> None:
    with open(os.path.join(marks, name), "a") as f:
        f.write("x")


def count(marks, name: str) -> int:
    path = os.path.join(marks, name)
    return os.path.getsize(path) if os.path.exists(path) else 0


@task
def double(x):
    assert on_ray_worker(), "expected to run on a Ray worker"
    return x * 2


@task
def total(values, extra):
    return sum(values) + sum(extra.values())


@task
def slow_value(x, marks):
    time.sleep(0.5)
    mark(marks, f"done-{x}")
    return x


@task
def after(x, marks):
    return x, count(marks, f"done-{x}")


def test_results_and_futures_resolved_on_the_workers(runner, marks):
    """Submitted tasks run on Ray workers; futures nested in lists and dicts reach the
    downstream task as their results; a downstream submitted while its upstream still
    runs starts only after it. Every run is recorded Pending → Running → Completed."""

    @flow(task_runner=runner)
    def pipeline():
        a = double.submit(1)
        b = double.submit(2)
        summed = total.submit([a, b], {"c": double.submit(a)})
        ordered = after.submit(slow_value.submit(7, str(marks)), str(marks))
        return summed.result(), ordered.result()

    assert pipeline() == (1 * 2 + 2 * 2 + 4, (7, 1))
    runs = get_store().read_task_runs()
    assert len(runs) == 6
    for run in runs:
        assert state_names(run.id) == ["Pending", "Running", "Completed"]


def test_a_task_that_closes_over_much_data_reaches_every_run(runner):
    """A task pickled larger than it is sent with each run (here 300 kB: it closes over
    a table) goes to Ray's object store once, and each worker fetches it: every run
    still sees the data."""
    from headwater_ray.runner import INLINE_TASK_BYTES

    table = bytes(range(256)) * 1200
    assert len(table) > INLINE_TASK_BYTES

    @task
    def lookup(i):
        assert on_ray_worker()
        return table[i]

    @flow(task_runner=runner)
    def lookups():
        return [f.result() for f in lookup.map(range(250, 262))]

    assert lookups() == [table[i] for i in range(250, 262)]


@task(retries=2, retry_delay_seconds=0)
def flaky(x):
    from headwater.runtime import task_run

    get_run_logger().info("attempt %d on a Ray worker: %s", task_run.run_count, on_ray_worker())
    if task_run.run_count < 3:
        raise ConnectionError(f"attempt {task_run.run_count} failed")
    return x


def test_retries_and_logs_on_the_worker(runner, capsys):
    """Three attempts on a worker; each attempt's log line is shown once in the flow
    process, and the store holds the whole history and the run count."""

    @flow(task_runner=runner)
    def retrying():
        return flaky.submit(7).result()

    assert retrying() == 7
    err = capsys.readouterr().err
    for n in (1, 2, 3):
        assert err.count(f"attempt {n} on a Ray worker: True") == 1
    (run,) = get_store().read_task_runs()
    assert run.run_count == 3
    assert state_names(run.id) == ["Pending", "Running", "AwaitingRetry", "Retrying",
                                   "AwaitingRetry", "Retrying", "Completed"]
    store = get_store()
    store.flush()
    lines = [row["message"] for row in store.read_logs(task_run_id=run.id)]
    assert "attempt 3 on a Ray worker: True" in lines


@task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(hours=1))
def expensive(x, marks):
    mark(marks, "expensive")
    return x + 100


def test_cache_hit_never_reaches_the_cluster(runner, marks):
    """The first flow run computes and caches on Ray; the second finds the entry in the
    flow process: the task body runs once."""

    @flow(task_runner=runner)
    def cached(x):
        return expensive.submit(x, str(marks)).result()

    assert cached(1) == 101
    assert cached(1) == 101
    assert count(marks, "expensive") == 1
    second = [r for r in get_store().read_task_runs() if r.state.name == "Cached"]
    assert len(second) == 1 and state_names(second[0].id) == ["Pending", "Cached"]


@task
def explode(x):
    raise ValueError(f"bad input {x}")


def test_a_worker_exception_reraises_as_itself_with_the_users_traceback(runner):
    """The task's ValueError is raised by future.result() in the flow process, its
    traceback ending in the task's own line of this file; a task depending on it ends
    NotReady without running; the flow fails."""
    caught = []

    @flow(task_runner=runner)
    def failing():
        bad = explode.submit(3)
        double.submit(bad)
        try:
            bad.result()
        except ValueError as exc:
            caught.append(exc)

    assert failing(return_state=True).is_failed()
    (exc,) = caught
    assert str(exc) == "bad input 3"
    last = traceback.extract_tb(exc.__traceback__)[-1]
    assert (last.filename, last.name) == (__file__, "explode")
    assert last.line == 'raise ValueError(f"bad input {x}")'
    runs = {r.task_name: r for r in get_store().read_task_runs()}
    assert state_names(runs["explode"].id) == ["Pending", "Running", "Failed"]
    assert runs["double"].state.name == "NotReady" and "explode" in runs["double"].state.message
    # The logged traceback (formatted on the worker) names this file and shows the line too.
    (logged,) = [line["message"] for line in get_store().read_logs(task_run_id=runs["explode"].id)
                 if "Encountered exception" in line["message"]]
    assert "<dynamic-code>" not in logged
    assert f'File "{__file__}", line' in logged and 'raise ValueError(f"bad input {x}")' in logged


def test_unpicklable_argument_is_a_clear_error_at_submit(runner):
    """An argument that cannot be pickled raises at submit(), naming the argument and the
    task; the run is recorded Failed."""

    @flow(task_runner=runner)
    def bad_argument():
        double.submit(threading.Lock())

    with pytest.raises(NotPicklable, match=r"argument 'x' of task 'double'.*Ray workers.*lock"):
        bad_argument()
    (run,) = get_store().read_task_runs()
    assert run.state.is_failed()


@task(timeout_seconds=0.2)
def slow():
    time.sleep(3)


@task
async def async_square(x):
    return x * x


@task(log_prints=True)
def chatty(x):
    print("printed on the worker")
    return x


def test_timeouts_async_tasks_and_printed_lines(runner, capsys):
    """timeout_seconds applies on the worker (TimedOut); async tasks run there too;
    printed lines of a log_prints task are shown under its run."""

    @flow(task_runner=runner)
    def mixed():
        return slow.submit().wait().name, async_square.submit(4).result() + chatty.submit(1).result()

    assert mixed() == ("TimedOut", 17)
    err = capsys.readouterr().err
    assert "Task run 'chatty-" in err and "printed on the worker" in err


def test_registered_name_and_environment_setting(monkeypatch):
    """task_runner="ray" and HEADWATER_TASK_RUNNER=ray select the runner."""
    from headwater import Session

    @flow(task_runner="ray")
    def by_name():
        return double.submit(5).result()

    assert by_name() == 10

    @flow
    def by_env():
        return double.submit(6).result()

    monkeypatch.setenv("HEADWATER_TASK_RUNNER", "ray")
    with Session():
        assert by_env() == 12


@task
def received(x):
    return repr(x), on_ray_worker()


def test_allow_failure_and_quote(runner):
    """allow_failure: the downstream runs on a worker with the upstream's exception;
    quote: the task receives the value, never the wrapper."""
    from headwater.utilities.annotations import quote

    @flow(task_runner=runner)
    def tolerant():
        failed = explode.submit(1)
        return (received.submit(allow_failure(failed)).result(),
                received.submit(quote([1, 2])).result())

    state = tolerant(return_state=True)
    assert state.is_completed()
    assert state.result() == (("ValueError('bad input 1')", True), ("[1, 2]", True))


@task
def dies():
    os._exit(1)


def test_a_lost_worker_crashes_the_run_naming_the_cluster(runner, local_ray):
    """A worker process that dies ends the run Crashed (Ray does not run it again), with
    a message naming the cluster's address."""

    @flow(task_runner=runner)
    def losing():
        dies.submit()  # never looked at: its crash fails the flow run

    assert losing(return_state=True).is_failed()
    (run,) = get_store().read_task_runs()
    assert state_names(run.id) == ["Pending", "Crashed"]
    assert "lost by Ray" in run.state.message and local_ray in run.state.message


@task
def waits_for(path):
    deadline = time.monotonic() + 40
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


def test_a_run_that_finishes_before_older_ones_is_recorded_at_once(runner, marks, monkeypatch):
    """The recorder asks Ray about the oldest runs and, in turn, the others: a run that
    finishes while older ones still run is recorded then, not after them."""
    import headwater_ray.runner

    monkeypatch.setattr(headwater_ray.runner, "WINDOW", 1)  # one long run fills the oldest window
    release = str(marks / "release")

    @flow(task_runner=runner)
    def out_of_order():
        long = waits_for.submit(release)
        quick = double.submit(21)
        try:
            return quick.result(timeout=20), long.state.is_final()
        finally:
            mark(marks, "release")

    assert out_of_order() == (42, False)


def test_bad_options_and_unreachable_addresses_are_named(local_ray):
    """Bad constructor arguments raise a clear error naming the value; a cluster that
    cannot be reached fails the flow run within seconds, naming the address."""
    with pytest.raises(ConfigurationError, match=r"init_kwargs=\[1\]"):
        RayTaskRunner(init_kwargs=[1])
    with pytest.raises(ConfigurationError, match="connects to an existing cluster; num_cpus"):
        RayTaskRunner(address="auto", init_kwargs={"num_cpus": 2})
    with pytest.raises(ConfigurationError, match="address=5"):
        RayTaskRunner(address=5)
    with pytest.raises(ConfigurationError, match=r"address='head'\): expected 'ray://host:port'"):
        RayTaskRunner(address="head")

    @flow(task_runner=RayTaskRunner(address="ray://127.0.0.1:1"))
    def unreachable():
        raise AssertionError("the body must not run")

    started = time.monotonic()
    with pytest.raises(RayRunnerError, match=r"could not connect to the Ray cluster at 'ray://127.0.0.1:1'"):
        unreachable()
    assert time.monotonic() - started < 15
    (run,) = get_store().read_flow_runs()
    assert run.state.is_failed()


@pytest.mark.parametrize("setting", ["HEADWATER_RAY_ADDRESS", "RAY_ADDRESS"])
def test_an_address_from_the_environment_is_named_with_its_variable(local_ray, monkeypatch, setting):
    """An address the runner read from the environment is reported with the variable it
    came from: the user never wrote it in their code."""
    monkeypatch.delenv("HEADWATER_RAY_ADDRESS", raising=False)
    monkeypatch.setenv(setting, "head")

    @flow(task_runner=RayTaskRunner())
    def from_environment():
        raise AssertionError("the body must not run")

    with pytest.raises(ConfigurationError, match=rf"^{setting}='head': expected 'ray://host:port'"):
        from_environment()
    monkeypatch.setenv(setting, "ray://127.0.0.1:1")
    with pytest.raises(RayRunnerError, match=rf"at 'ray://127.0.0.1:1' \(from {setting}\): nothing answers"):
        from_environment()


def test_import_headwater_never_imports_ray(tmp_path):
    """Importing headwater, and running a flow with the plugin installed (its entry point
    loaded), does not import ray."""
    code = (
        "import sys, headwater\n"
        "from headwater import flow, task\n"
        "@task\ndef one(): return 1\n"
        "@flow\ndef f(): return one.submit().result()\n"
        "assert f() == 1\n"
        "assert 'ray' not in sys.modules\n"
    )
    env = {**os.environ, "HEADWATER_HOME": str(tmp_path), "HEADWATER_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


SCRIPT = """\
import multiprocessing
import sys
import ray
from headwater import flow, task
from headwater_ray import RayTaskRunner


@task
def square(x):
    return x * x


@flow(task_runner=RayTaskRunner(init_kwargs={"num_cpus": 1}))
def started_here(n):
    return sum(f.result() for f in square.map(range(n)))


@flow(task_runner=RayTaskRunner(address=sys.argv[1]))
def on_the_cluster(n):
    return sum(f.result() for f in square.map(range(n)))


# No `if __name__ == "__main__":` guard: Ray's workers never import this script.
print("local", started_here(4), "left running:", ray.is_initialized())
print("cluster", on_the_cluster(3), "left connected:", ray.is_initialized())
# A process started by spawn imports this script again: its flow call starts no Ray there.
child = multiprocessing.get_context("spawn").Process(target=print, args=("child ran",))
child.start()
child.join()
print("child exit code", child.exitcode)
"""


def test_a_script_without_a_main_guard_starts_and_reaches_ray(tmp_path, local_ray):
    """A script as a user writes it, without an `if __name__ == "__main__":` guard: its
    first flow starts a local Ray and stops it after; its second connects to this
    module's Ray by address, disconnects, and leaves that cluster running. A process it
    starts by spawn (which imports the script again) is refused in one line, so it never
    starts a Ray of its own."""
    script = tmp_path / "my_flow.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HEADWATER_HOME": str(tmp_path / "home")}
    for name in ("RAY_ADDRESS", "HEADWATER_RAY_ADDRESS", "HEADWATER_TASK_RUNNER"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(script), local_ray], env=env, capture_output=True,
                          text=True, timeout=50, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "local 14 left running: False" in done.stdout
    assert "cluster 5 left connected: False" in done.stdout
    assert "local Ray started for this flow run at" in done.stderr
    assert f"Ray cluster at {local_ray}" in done.stderr
    assert ray.get(ray.remote(lambda: "still up").remote(), timeout=20) == "still up"
    assert "child exit code 1" in done.stdout and "child ran" not in done.stdout
    assert ("headwater.main_guard.MainGuardMissing: flow 'started-here' was called while a worker "
            "process imported the script again: put the script's flow calls under "
            "`if __name__ == \"__main__\":`") in done.stderr.splitlines()
    assert done.stderr.count("local Ray started for this flow run") == 1


INTERRUPTED = """\
import signal
import time
from headwater import flow, task
from headwater_ray import RayTaskRunner

signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell may start us ignoring it


@task
def sleeps(i):
    time.sleep(60)


@flow(task_runner=RayTaskRunner(init_kwargs={"num_cpus": 1}))
def waiting():
    futures = sleeps.map(range(3))
    print("submitted", flush=True)
    return [f.result() for f in futures]


if __name__ == "__main__":
    waiting()
"""


def test_ctrl_c_stops_the_flow_run(tmp_path):
    """Ctrl-C while tasks run on Ray: the script stops within seconds with
    KeyboardInterrupt and the flow run is recorded Crashed."""
    import signal

    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "HEADWATER_HOME": str(tmp_path / "home")}
    for name in ("RAY_ADDRESS", "HEADWATER_RAY_ADDRESS", "HEADWATER_TASK_RUNNER"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "submitted"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 15
    assert proc.returncode != 0 and err.rstrip().endswith("KeyboardInterrupt")
    cli = os.path.join(os.path.dirname(sys.executable), "headwater")
    done = subprocess.run([cli, "runs", "--json"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert '"state_name": "Crashed"' in done.stdout, done.stdout + done.stderr


def test_log_prints_still_works_after_ray_shows_worker_output(runner, capsys):
    """Ray patches print() the first time it shows a worker's output in the flow process
    (its tqdm support); the runner turns that off, so log_prints=True still routes the
    flow's own print() to its log afterwards."""
    from ray.experimental import tqdm_ray

    @flow(log_prints=True, flow_run_name="printer")
    def printing():
        print("hello from the flow")

    @flow(task_runner=runner)
    def on_ray():
        return double.submit(1).result()

    printing()  # headwater routes print() from now on
    assert on_ray() == 2
    tqdm_ray.instance()  # what Ray calls before it shows a worker's output here
    capsys.readouterr()
    printing()
    captured = capsys.readouterr()
    assert "Flow run 'printer' - hello from the flow" in captured.err
    assert "hello from the flow" not in captured.out
