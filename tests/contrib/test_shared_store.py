"""Many machines, one history and one cache: processes that share nothing but the run
store's URL (``HEADWATER_DATABASE_URL``) and the result storage's URL
(``HEADWATER_RESULT_STORAGE=s3://...``, a real S3 endpoint on loopback: moto's server).

Each process stands for a machine: its own ``HEADWATER_HOME``, no files in common with
the others. The tests run on the PostgreSQL store (a real server, ``pg_server.py``) and on
one SQLite file on a disk they all see, the setup of docs/distributed.md ("Team setup"):

* a cached task computed by one machine is ``Cached`` for another, later;
* four machines writing at once lose nothing: every flow run, task run, state and log line;
* a machine killed with ``-9``: its runs are shown ``Crashed`` once its heartbeats stop
  (PostgreSQL; pids mean nothing across hosts) or its pid is gone (SQLite, one host);
* a third machine lists them all: ``headwater runs --json`` and the dashboard's JSON API
  (``headwater ui``);
* a Dask cluster (scheduler and workers on loopback) whose flow records to the shared
  store and keeps its results in S3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from headwater import Session
from dask_cluster import running_cluster
from s3_server import CREDENTIALS, client_env, s3_server

pytestmark = pytest.mark.timeout(300)

BUCKET = "headwater-team"
HEADWATER = Path(sys.executable).with_name("headwater")
#: Loopback requests must not go through an HTTP proxy set in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: Seconds a child process may take (a loaded 2-core machine, four at once).
CHILD_TIMEOUT = 180


@pytest.fixture(scope="module")
def s3_endpoint():
    import s3fs

    with s3_server() as endpoint:
        s3fs.S3FileSystem(key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                          endpoint_url=endpoint, skip_instance_cache=True).mkdir(BUCKET)
        yield endpoint


class Team:
    """What the machines of one test share, and how to start one: the database URL and
    the storage URL (plus the S3 endpoint and credentials), nothing else."""

    def __init__(self, database_url: str, storage: str, endpoint: str, base: Path) -> None:
        self.database_url = database_url
        self.storage = storage
        self.endpoint = endpoint
        self.base = base
        #: HEADWATER_HEARTBEAT_SECONDS of every machine (None: the default).
        self.heartbeat: str | None = None

    def home(self, machine: str) -> Path:
        return self.base / machine / "headwater-home"

    def env(self, machine: str, **extra: str) -> dict[str, str]:
        """A machine's environment: none of the test's HEADWATER_* settings, its own home;
        ``extra`` adds variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        env.update(client_env(self.endpoint), PYTHONUNBUFFERED="1", HEADWATER_HOME=str(self.home(machine)),
                   HEADWATER_DATABASE_URL=self.database_url, HEADWATER_RESULT_STORAGE=self.storage)
        if self.heartbeat is not None:
            env["HEADWATER_HEARTBEAT_SECONDS"] = self.heartbeat
        env.update(extra)
        return env

    def script(self, name: str, text: str) -> Path:
        path = self.base / "scripts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def start(self, machine: str, script: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
        (self.base / machine).mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([sys.executable, str(script), *args], cwd=self.base / machine,
                                env=self.env(machine, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def run(self, machine: str, script: Path, *args: str, **extra: str) -> str:
        """Run ``script`` on ``machine`` to its end; its output."""
        proc = self.start(machine, script, *args, **extra)
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        assert proc.returncode == 0, f"{machine} failed:\n{err[-4000:]}"
        return out

    def cli(self, machine: str, *args: str) -> Any:
        """``headwater ARGS --json`` on ``machine``; its JSON output."""
        (self.base / machine).mkdir(parents=True, exist_ok=True)
        result = subprocess.run([str(HEADWATER), *args, "--json"], cwd=self.base / machine,
                                env=self.env(machine), capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def session(self, machine: str) -> Session:
        """A reader in this process, as ``machine``."""
        return Session(env=self.env(machine))

    def s3(self):
        import s3fs

        return s3fs.S3FileSystem(key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=self.endpoint, skip_instance_cache=True)


@pytest.fixture(params=["postgresql", "sqlite"])
def team(request, tmp_path, s3_endpoint) -> Team:
    """The shared run store: a database of its own on the test's PostgreSQL server, or one
    SQLite file in a directory every machine of this host sees."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        (tmp_path / "shared-disk").mkdir()
        url = f"sqlite:///{tmp_path / 'shared-disk' / 'history.db'}"
    return Team(url, f"s3://{BUCKET}/{uuid.uuid4().hex}", s3_endpoint, tmp_path)


class Dashboard:
    """``headwater ui --port 0`` on a machine; ``api(path)`` reads its JSON API."""

    def __init__(self, team: Team, machine: str) -> None:
        pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')
        (team.base / machine).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(HEADWATER), "ui", "--port", "0"], cwd=team.base / machine,
                                     env=team.env(machine), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "headwater dashboard on http://" not in line:
            self.close()
            pytest.fail(f"headwater ui did not start: {line}{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = line.split(" on ", 1)[1].split("/ ", 1)[0]

    def api(self, path: str) -> Any:
        with DIRECT.open(self.url + "/api" + path, timeout=60) as response:
            return json.loads(response.read().decode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- one machine computes, another gets Cached -------------------------------------------------

CACHED_SCRIPT = """
    import os
    from headwater import flow, task

    @task(cache_key_fn=lambda context, parameters: f"square-{parameters['x']}", persist_result=True)
    def square(x):
        print("computing", x, "in", os.getpid())
        return x * x

    @flow
    def squares(x):
        state = square(x, return_state=True)
        return state.name, state.result()

    print("result:", squares(7))
"""


def test_a_task_computed_on_one_machine_is_cached_on_another(team):
    script = team.script("squares.py", CACHED_SCRIPT)
    first = team.run("machine-a", script)
    assert "computing 7" in first and "result: ('Completed', 49)" in first

    second = team.run("machine-b", script)
    assert "computing" not in second and "result: ('Cached', 49)" in second

    # A third machine sees the one cache entry, and its result in the bucket, not on a disk.
    (entry,) = team.cli("machine-c", "cache", "ls")
    assert entry["key"] == "square-7"
    prefix = team.storage.removeprefix("s3://")
    assert f"{prefix}/{entry['location']}" in team.s3().ls(prefix, detail=False)
    runs = team.cli("machine-c", "runs")
    assert sorted(tuple(r["task_runs"]["by_name"].items()) for r in runs) == [(("Cached", 1),), (("Completed", 1),)]
    for machine in ("machine-a", "machine-b", "machine-c"):
        home = team.home(machine)
        assert not (home / "storage").exists(), f"{machine} kept a result on its own disk"
        assert not (home / "headwater.db").exists(), f"{machine} recorded its runs on its own disk"


# -- four machines write at once -----------------------------------------------------------------

PROCESSES = 4
FLOWS = 2  # flow runs per machine
TASKS = 200  # task runs submitted per flow run

WRITER_SCRIPT = """
    import json, sys, time
    from pathlib import Path
    from headwater import flow, get_run_logger, task

    machine, gate, flows, tasks = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    @task
    def work(m, f, n):
        get_run_logger().info("work %d-%d-%d", m, f, n)
        return m * 1_000_000 + f * 1_000 + n

    # Every machine asks for the same cache keys at the same moment.
    @task(cache_key_fn=lambda context, parameters: f"tally-{parameters['f']}", persist_result=True)
    def tally(f, values):
        return sum(v % 1_000 for v in values)

    @flow(task_runner="concurrent", flow_run_name="m{m}-f{f}")
    def writer(m, f, tasks):
        futures = [work.submit(m, f, n) for n in range(tasks)]
        return tally(f, [x.result() for x in futures])

    # Everything imported and ready: wait for the others, then all write at once.
    Path(gate, f"ready-{machine}").touch()
    deadline = time.time() + 90
    while not Path(gate, "go").exists() and time.time() < deadline:
        time.sleep(0.005)
    ids = {}
    for f in range(flows):
        state = writer(machine, f, tasks, return_state=True)
        ids[state.state_details.flow_run_id] = [state.name, state.result()]
    print(json.dumps(ids))
"""


def start_together(team: Team, script: Path, gate: Path) -> list[subprocess.Popen[str]]:
    """The writers, released at once: starting Python takes longer than the writing."""
    gate.mkdir()
    procs = [team.start(f"writer-{m}", script, str(m), str(gate), str(FLOWS), str(TASKS))
             for m in range(PROCESSES)]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.02)
    (gate / "go").touch()
    return procs


def test_four_machines_writing_at_once_lose_nothing_and_a_third_lists_it_all(team):
    script = team.script("writer.py", WRITER_SCRIPT)
    procs = start_together(team, script, team.base / "gate")
    reported: dict[str, list[Any]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        assert proc.returncode == 0, err[-4000:]
        reported.update(json.loads(out.strip().splitlines()[-1]))
    expected_tally = sum(range(TASKS))
    assert len(reported) == PROCESSES * FLOWS
    assert all(outcome == ["Completed", expected_tally] for outcome in reported.values()), reported

    # Every row of every machine, read by a machine that wrote none of them.
    with team.session("reader") as session:
        store = session.store
        runs = store.read_flow_runs(limit=100)
        assert {r.id for r in runs} == set(reported)
        assert sorted(r.name for r in runs) == sorted(f"m{m}-f{f}" for m in range(PROCESSES) for f in range(FLOWS))
        for run in runs:
            assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Completed"]
            task_runs = store.read_task_runs(flow_run_id=run.id)
            assert Counter(t.task_name for t in task_runs) == {"work": TASKS, "tally": 1}
            histories = store.read_task_run_states(run.id)
            assert len(histories) == TASKS + 1
            for task_run in task_runs:
                names = [s.name for s in histories[task_run.id]]
                if task_run.task_name == "tally" and names[-1] == "Cached":
                    assert names == ["Pending", "Cached"] or names == ["Pending", "Running", "Cached"], names
                else:
                    assert names == ["Pending", "Running", "Completed"], (task_run.name, names)
            m, f = (int(part[1:]) for part in run.name.split("-"))
            lines = [line["message"] for line in store.read_logs(flow_run_id=run.id, limit=10 * TASKS)
                     if line["message"].startswith("work ")]
            assert sorted(lines) == sorted(f"work {m}-{f}-{n}" for n in range(TASKS))
        # Four machines raced for each tally key: one entry each, not four.
        assert sorted(e.key for e in store.read_cache_entries()) == [f"tally-{f}" for f in range(FLOWS)]

    listed = team.cli("reader", "runs", "--limit", "100")
    assert {r["id"] for r in listed} == set(reported)
    for run in listed:
        assert run["state_name"] == "Completed" and run["task_runs"]["total"] == TASKS + 1

    board = Dashboard(team, "reader")
    try:
        page = board.api("/flow-runs?per_page=100")
        assert page["total"] == PROCESSES * FLOWS
        assert {r["id"] for r in page["flow_runs"]} == set(reported)
        some = sorted(reported)[0]
        counts = board.api(f"/flow-runs/{some}")["task_run_counts"]
        assert counts["total"] == counts["done"] == TASKS + 1
    finally:
        board.close()


# -- a machine killed with -9 -------------------------------------------------------------------

HELD_SCRIPT = """
    import sys, time
    from pathlib import Path
    from headwater import flow, task
    from headwater.runtime import flow_run

    @task
    def quick(n):
        return n

    @task
    def hold(release):
        print("holding", flow_run.id, flush=True)
        deadline = time.time() + 120
        while not Path(release).exists() and time.time() < deadline:
            time.sleep(0.05)
        return "released"

    @flow(flow_run_name="held")
    def held(release):
        [quick.submit(n).result() for n in range(5)]
        return hold(release)

    held(sys.argv[1])
"""

#: Heartbeat of every machine in the kill test: a run without one for six of these (3 s)
#: is shown Crashed by the PostgreSQL store.
HEARTBEAT = 0.5
STALE = 6 * HEARTBEAT


def states_seen(team: Team, machine: str, flow_run_id: str) -> tuple[str, dict[str, str]]:
    """(the flow run's state, task run name -> state) as ``headwater runs show`` gives them."""
    shown = team.cli(machine, "runs", "show", flow_run_id)
    return shown["state_name"], {t["name"]: t["state_name"] for t in shown["task_runs"]}


def test_a_killed_machines_runs_are_shown_crashed_once_its_heartbeats_stop(team):
    team.heartbeat = str(HEARTBEAT)
    script = team.script("held.py", HELD_SCRIPT)
    release = team.base / "never-released"
    proc = team.start("doomed", script, str(release))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("holding "), (line, proc.stderr.read() if proc.poll() is not None else "")
        run_id = line.split()[1]

        # Alive, its runs stay Running on other machines, also past the threshold: its
        # heartbeats (PostgreSQL) or its pid (SQLite, one host) say so.
        deadline = time.monotonic() + 60
        while "Running" not in states_seen(team, "watcher", run_id)[1].values():
            assert time.monotonic() < deadline, "the held task run never showed Running"
            time.sleep(0.1)
        time.sleep(STALE + 1)
        state, tasks = states_seen(team, "watcher", run_id)
        assert state == "Running" and sorted(tasks.values()) == ["Completed"] * 5 + ["Running"], (state, tasks)

        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    deadline = time.monotonic() + STALE + 60
    while (seen := states_seen(team, "watcher", run_id))[0] != "Crashed":
        assert time.monotonic() < deadline, f"still {seen} long after the kill"
        time.sleep(0.2)
    noticed = time.time()  # the read that showed Crashed happened before this
    state, tasks = seen
    assert sorted(tasks.values()) == ["Completed"] * 5 + ["Crashed"]
    if team.database_url.startswith("postgresql"):
        # Not before the threshold: its last heartbeat was at most one interval (and a
        # writer tick) before the kill.
        assert noticed >= killed_at + STALE - HEARTBEAT - 0.5

    # Dated by the last sign of life, before the kill, not by when a reader noticed.
    (listed,) = team.cli("lister", "runs")
    assert listed["id"] == run_id and listed["state_name"] == "Crashed"
    with team.session("lister") as session:
        crashed = session.store.read_flow_run(run_id).state
    assert crashed.name == "Crashed" and crashed.ts <= killed_at + 0.5
    if team.database_url.startswith("postgresql"):
        # Another host's pid means nothing here: the message says what was judged.
        assert "sent no heartbeat since" in crashed.message, crashed.message

    board = Dashboard(team, "lister")
    try:
        (run,) = board.api("/flow-runs")["flow_runs"]
        assert run["id"] == run_id and run["state"]["name"] == "Crashed"
        assert board.api(f"/flow-runs/{run_id}")["task_run_counts"]["by_name"] == {"Completed": 5, "Crashed": 1}
    finally:
        board.close()


# -- a Dask cluster whose flow records to the shared store and keeps results in S3 -------------

@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """(scheduler address, the workers' HEADWATER_HOME): a ``dask scheduler`` and two
    ``dask worker`` processes on 127.0.0.1. The workers are given neither the database
    URL nor the storage URL nor S3 credentials: the flow process records and stores."""
    pytest.importorskip("distributed")
    base = tmp_path_factory.mktemp("team-dask")
    worker_home = base / "worker-home-never-created"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADWATER_", "AWS_", "FSSPEC_"))}
    env.update(HEADWATER_HOME=str(worker_home), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    with running_cluster(base, env) as address:
        yield address, worker_home


# The flow names no runner: the machines' settings send it to the cluster, as in
# docs/distributed.md ("Team setup").
DASK_SCRIPT = """
    import json, os, sys
    from headwater import flow, task

    @task(cache_key_fn=lambda context, parameters: f"cube-{parameters['x']}", persist_result=True)
    def cube(x):
        from distributed import get_worker

        return x ** 3, get_worker().name, os.getpid()

    @flow(flow_run_name="cubes-{tag}")
    def cubes(n, tag):
        futures = [cube.submit(x) for x in range(n)]
        return [[f.wait().name, f.result()] for f in futures]

    if __name__ == "__main__":
        print(json.dumps({"pid": os.getpid(), "cubes": cubes(int(sys.argv[1]), sys.argv[2])}))
"""


def test_a_dask_cluster_records_to_the_shared_store_and_keeps_results_in_s3(team, dask_cluster):
    """The flow's tasks run on the workers; the flow process records them to the shared
    store and writes their results to S3; a flow process on another machine, later, finds
    every one Cached, with the values computed on the workers the first time."""
    address, worker_home = dask_cluster
    script = team.script("cubes.py", DASK_SCRIPT)
    count = 6
    on_dask = {"HEADWATER_TASK_RUNNER": "dask", "HEADWATER_DASK_ADDRESS": address}

    first = json.loads(team.run("laptop", script, str(count), "first", **on_dask).strip().splitlines()[-1])
    assert [[state, value[0]] for state, value in first["cubes"]] == [["Completed", x ** 3] for x in range(count)]
    workers = {value[1] for _state, value in first["cubes"]}
    assert workers and workers <= {"worker-1", "worker-2"}
    assert first["pid"] not in {value[2] for _state, value in first["cubes"]}

    second = json.loads(team.run("ci-runner", script, str(count), "second", **on_dask).strip().splitlines()[-1])
    assert second["cubes"] == [["Cached", value] for _state, value in first["cubes"]]

    listed = {r["name"]: r for r in team.cli("reader", "runs")}
    assert set(listed) == {"cubes-first", "cubes-second"}
    assert listed["cubes-first"]["task_runs"]["by_name"] == {"Completed": count}
    assert listed["cubes-second"]["task_runs"]["by_name"] == {"Cached": count}
    entries = team.cli("reader", "cache", "ls")
    assert sorted(e["key"] for e in entries) == sorted(f"cube-{x}" for x in range(count))
    prefix = team.storage.removeprefix("s3://")
    stored = set(team.s3().ls(prefix, detail=False))
    assert {f"{prefix}/{e['location']}" for e in entries} <= stored
    for machine in ("laptop", "ci-runner"):
        assert not (team.home(machine) / "storage").exists(), f"{machine} kept a result on its own disk"
    assert not worker_home.exists(), "a worker wrote headwater state of its own"
