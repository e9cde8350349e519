"""What readers show for runs whose process is gone, and what they write.

A run that ended ``NotReady`` keeps that outcome; a run left unfinished by a process that
no longer exists is shown ``Crashed`` by every reader (CLI, dashboard pages and API) on
its next read, also while the dashboard stays open; runs of other hosts are judged by
their heartbeat."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from headwater import flow, get_store
from headwater.session import Session

from .procs import child_env

# Loopback requests must not go through an HTTP proxy set in the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
HEADWATER = Path(sys.executable).with_name("headwater")


def _cli(home: Path, *args: str) -> Any:
    """``headwater ARGS --json`` in its own process; its JSON output."""
    result = subprocess.run([str(HEADWATER), *args, "--json"], env=child_env(home), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _digest(path: Path) -> str:
    """The store's content (the database file and its write-ahead log)."""
    data = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return hashlib.sha256(data).hexdigest()


class Dashboard:
    """The dashboard served in this process over the test's session, as ``headwater ui`` does."""

    def __init__(self, session: Session) -> None:
        pytest.importorskip("markdown_it", reason='the dashboard needs its extra: pip install "headwater[ui]"')
        from headwater.plugins.dashboard.server import make_server

        self.server = make_server(session, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def api(self, path: str) -> Any:
        with DIRECT.open(self.url + "/api" + path, timeout=30) as response:
            return json.loads(response.read().decode())

    def page(self, path: str) -> str:
        with DIRECT.open(self.url + path, timeout=30) as response:
            return response.read().decode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dashboard(headwater_session: Session) -> Iterator[Dashboard]:
    board = Dashboard(headwater_session)
    yield board
    board.close()


# -- NotReady is a final outcome --------------------------------------------------------------

GUARDED = textwrap.dedent('''
    from headwater import flow, task
    from headwater.errors import UpstreamFailed


    @task
    def fetch() -> str:
        raise ConnectionError("host unreachable")


    @task
    def parse(text: str) -> int:
        return len(text)


    @flow(flow_run_name="guarded-run")
    def guarded() -> str:
        parsed = parse.submit(fetch.submit())
        try:
            parsed.result()
        except UpstreamFailed as exc:
            return f"skipped: {exc}"
        return "parsed"


    print(guarded())
''')


def _recorded(db: Path, task_name: str) -> tuple[tuple[str, str], list[str]]:
    """A task run's recorded (state type, state name) and its recorded state history."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        run_id, type_, name = conn.execute(
            "SELECT id, state_type, state_name FROM task_runs WHERE task_name = ?", (task_name,)).fetchone()
        history = [n for (n,) in conn.execute("SELECT name FROM states WHERE run_id = ? ORDER BY seq", (run_id,))]
    return (type_, name), history


def test_a_not_ready_run_stays_not_ready_after_exit_and_after_runs_show(tmp_path, headwater_home):
    """The guarded example of docs/task-runners.md: ``parse`` ends NotReady (type PENDING)
    and stays so after its process exits, after ``headwater runs`` / ``runs show``, and
    after another flow process opens the store; the read-only commands write nothing."""
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED)
    done = subprocess.run([sys.executable, str(script)], env=child_env(headwater_home), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "skipped: Upstream task run" in done.stdout, done.stderr
    db = headwater_home / "headwater.db"
    assert _recorded(db, "parse") == (("PENDING", "NotReady"), ["Pending", "NotReady"])

    before = _digest(db)
    listed = _cli(headwater_home, "runs")
    assert [(r["name"], r["state_name"]) for r in listed] == [("guarded-run", "Completed")]
    shown = _cli(headwater_home, "runs", "show", "guarded-run")
    parse = next(t for t in shown["task_runs"] if t["task_name"] == "parse")
    assert (parse["state"], parse["state_name"]) == ("PENDING", "NotReady")
    assert [s["name"] for s in parse["states"]] == ["Pending", "NotReady"]
    assert _digest(db) == before, "a read-only command changed the store"

    # Another flow process opening the same store leaves it NotReady too.
    subprocess.run([sys.executable, str(script)], env=child_env(headwater_home), capture_output=True, timeout=60,
                   check=True)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT state_type, state_name FROM task_runs WHERE task_name = 'parse'").fetchall()
        crashed = conn.execute("SELECT count(*) FROM states WHERE type = 'CRASHED'").fetchone()[0]
    assert rows == [("PENDING", "NotReady")] * 2 and crashed == 0


def test_the_dashboard_does_not_show_a_not_ready_run_as_live(headwater_session, dashboard):
    """A flow run whose task ended NotReady is over: its page stops refreshing, the API says
    no task run is live, and polling the dashboard writes nothing."""
    from headwater import task
    from headwater.errors import UpstreamFailed

    @task
    def fetch() -> str:
        raise ConnectionError("host unreachable")

    @task
    def parse(text: str) -> int:
        return len(text)

    @flow(flow_run_name="guarded-here")
    def guarded() -> str:
        try:
            return str(parse.submit(fetch.submit()).result())
        except UpstreamFailed:
            return "skipped"

    assert guarded() == "skipped"
    get_store().flush()
    db = headwater_session.settings.home / "headwater.db"
    before = _digest(db)
    (listed,) = dashboard.api("/flow-runs")["flow_runs"]
    for _ in range(5):
        run = dashboard.api(f"/flow-runs/{listed['id']}")
    parse_run = next(t for t in run["task_runs"] if t["task_name"] == "parse")
    assert parse_run["state"]["name"] == "NotReady" and parse_run["live"] is False
    assert run["task_runs_live"] == 0
    assert 'http-equiv="refresh"' not in dashboard.page(f"/flow-runs/{listed['id']}")
    assert _digest(db) == before, "polling the dashboard changed the store"


# -- a killed process -------------------------------------------------------------------------

SLEEPER = textwrap.dedent('''
    import time
    from headwater import flow, task

    @task
    def stuck():
        time.sleep(120)

    @flow(flow_run_name="doomed-run")
    def doomed():
        stuck()

    doomed()
''')


def _wait_until(check: Any, what: str, seconds: float = 30) -> Any:
    deadline = time.time() + seconds
    while time.time() < deadline:
        out = check()
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_flow_shows_crashed_in_the_cli_and_in_an_open_dashboard(tmp_path, headwater_session, dashboard):
    """SIGKILL a flow process while the dashboard is open and has shown its run Running:
    the very next read of the API (and of its pages, and ``headwater runs --json``) shows
    the flow run and its task run Crashed, and the pages stop refreshing."""
    home = headwater_session.settings.home
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc = subprocess.Popen([sys.executable, str(script)], env=child_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def running() -> Any:
            runs = dashboard.api("/flow-runs")["flow_runs"]
            if not runs:
                return None
            run = dashboard.api(f"/flow-runs/{runs[0]['id']}")
            return run if any(t["state"]["type"] == "RUNNING" for t in run["task_runs"]) else None

        run = _wait_until(running, "the child's task run to be recorded Running")
        assert run["state"]["type"] == "RUNNING" and run["live"] is True
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    after = dashboard.api(f"/flow-runs/{run['id']}")  # one refresh
    assert after["state"]["type"] == "CRASHED" and after["live"] is False
    assert "ended before the run finished" in after["state"]["message"]
    assert after["states"][-1]["name"] == "Crashed"
    (stuck,) = after["task_runs"]
    assert stuck["state"]["type"] == "CRASHED" and stuck["states"][-1]["name"] == "Crashed"
    assert after["task_runs_live"] == 0
    assert dashboard.api("/flow-runs")["flow_runs"][0]["state"]["type"] == "CRASHED"
    assert dashboard.api(f"/task-runs/{stuck['id']}")["state"]["type"] == "CRASHED"
    assert 'http-equiv="refresh"' not in dashboard.page(f"/flow-runs/{run['id']}")

    (listed,) = _cli(home, "runs")
    assert (listed["name"], listed["state"]) == ("doomed-run", "CRASHED")
    shown = _cli(home, "runs", "show", "doomed-run")
    assert [s["name"] for s in shown["states"]][-1] == "Crashed"
    assert [s["name"] for s in shown["task_runs"][0]["states"]][-1] == "Crashed"
    # Marked once: more reads add no second Crashed state.
    for _ in range(3):
        dashboard.api(f"/flow-runs/{run['id']}")
    assert [s["name"] for s in dashboard.api(f"/flow-runs/{run['id']}")["states"]].count("Crashed") == 1


# -- rows recorded by hand: reused pids, other hosts, a store that cannot be written --------------


def _record_running(db: Path, name: str, host: str, pid: int, pid_start: str | None,
                    heartbeat: float | None = None, started: float | None = None) -> str:
    """A flow run row as a flow process records it while running (plus its task run)."""
    started = time.time() if started is None else started
    run_id = f"{name}-0000-0000"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO flow_runs (id, name, flow_name, parameters, tags, state_type, state_name, start_ts, "
            "run_count, host, pid, pid_start, created) VALUES (?, ?, 'recorded', '{}', '[]', 'RUNNING', "
            "'Running', ?, 1, ?, ?, ?, ?)", (run_id, name, started, host, pid, pid_start, started))
        if heartbeat is not None:
            conn.execute("UPDATE flow_runs SET heartbeat = ? WHERE id = ?", (heartbeat, run_id))
        conn.execute(
            "INSERT INTO task_runs (id, flow_run_id, name, task_name, parameters, tags, state_type, state_name, "
            "start_ts, run_count, host, pid, pid_start, created, seq) VALUES (?, ?, ?, 'step', '{}', '[]', "
            "'RUNNING', 'Running', ?, 1, ?, ?, ?, ?, 1)",
            (f"{run_id}-task", run_id, f"{name}-step", started, host, pid, pid_start, started))
        for kind, rid in (("flow", run_id), ("task", f"{run_id}-task")):
            conn.executemany("INSERT INTO states (run_id, run_kind, type, name, ts) VALUES (?, ?, ?, ?, ?)",
                             [(rid, kind, "PENDING", "Pending", started), (rid, kind, "RUNNING", "Running", started)])
    return run_id


@pytest.fixture
def store_file(headwater_session: Session) -> Path:
    """The session's store, open (as a running dashboard holds it), and its file."""
    @flow
    def opened() -> None:
        pass

    opened()
    get_store().flush()
    return headwater_session.settings.home / "headwater.db"


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that stays alive during the test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait(timeout=10)


def _state_of(store: Any, dashboard: Dashboard, run_id: str) -> tuple[str, str, str]:
    """The run's state type as the open store, the dashboard API and its task run show it."""
    api = dashboard.api(f"/flow-runs/{run_id}")
    return store.read_flow_run(run_id).state.type.value, api["state"]["type"], api["task_runs"][0]["state"]["type"]


def test_a_reused_pid_is_not_taken_for_alive(store_file, live_pid, dashboard, headwater_session):
    """A run recorded by a pid that a different process has now (its start time differs)
    is shown Crashed; the same pid with the right start time is Running. Also when the pid
    reused is the reader's own."""
    from headwater.plugins.sqlite_store import process_start_token

    host = socket.gethostname()
    store = headwater_session.store
    alive = _record_running(store_file, "alive", host, live_pid, process_start_token(live_pid))
    reused = _record_running(store_file, "reused", host, live_pid, "1")  # started at boot: not this one
    mine = _record_running(store_file, "mine-reused", host, os.getpid(), "1")
    assert _state_of(store, dashboard, alive) == ("RUNNING",) * 3
    assert _state_of(store, dashboard, reused) == ("CRASHED",) * 3
    assert _state_of(store, dashboard, mine) == ("CRASHED",) * 3
    listed = {r["name"]: r["state"] for r in _cli(headwater_session.settings.home, "runs")}
    assert listed["alive"] == "RUNNING" and listed["reused"] == listed["mine-reused"] == "CRASHED"


def test_another_hosts_run_is_judged_by_its_heartbeat(store_file, dashboard, headwater_session):
    """Another host's unfinished run with a heartbeat older than the threshold is shown
    Crashed (in the CLI, the store's reads and the dashboard); with a fresh heartbeat, or
    just started, Running. Nothing is written for them: the host may only be slow."""
    from headwater.plugins.sqlite_liveness import STALE_SECONDS

    now = time.time()
    old = now - 10 * STALE_SECONDS
    stale = _record_running(store_file, "stale", "elsewhere.example", 4242, "77", heartbeat=now - 2 * STALE_SECONDS,
                            started=old)
    fresh = _record_running(store_file, "fresh", "elsewhere.example", 4343, "77", heartbeat=now - 1, started=old)
    young = _record_running(store_file, "young", "elsewhere.example", 4444, "77", started=now - 1)
    silent = _record_running(store_file, "silent", "elsewhere.example", 4545, "77", started=old)
    store = headwater_session.store
    assert _state_of(store, dashboard, stale) == ("CRASHED",) * 3
    assert _state_of(store, dashboard, silent) == ("CRASHED",) * 3
    assert _state_of(store, dashboard, fresh) == ("RUNNING",) * 3
    assert _state_of(store, dashboard, young) == ("RUNNING",) * 3
    message = dashboard.api(f"/flow-runs/{stale}")["state"]["message"]
    assert "elsewhere.example" in message and "heartbeat" in message
    listed = {r["name"]: r["state"] for r in _cli(headwater_session.settings.home, "runs")}
    assert (listed["stale"], listed["fresh"]) == ("CRASHED", "RUNNING")
    with sqlite3.connect(f"file:{store_file}?mode=ro", uri=True) as conn:
        recorded = conn.execute("SELECT state_type FROM flow_runs WHERE id = ?", (stale,)).fetchone()[0]
    assert recorded == "RUNNING"


def test_a_reader_that_cannot_write_still_shows_dead_runs_crashed(store_file, live_pid, headwater_session,
                                                                  monkeypatch):
    """When marking fails (a read-only store file), the reads still show the run Crashed,
    with a Crashed state at the end of its history."""
    from headwater.plugins import sqlite_store

    def refuse(self: Any, fn: Any) -> Any:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(sqlite_store.SQLiteRunStore, "_write_txn", refuse)
    run_id = _record_running(store_file, "gone", socket.gethostname(), live_pid, "1")
    store = headwater_session.store
    run = store.read_flow_run(run_id)
    assert run.state.is_crashed() and run.end_ts is not None
    assert [s.name for s in store.read_states(run_id)] == ["Pending", "Running", "Crashed"]
    (task_run,) = store.read_task_runs(flow_run_id=run_id)
    assert task_run.state.is_crashed()
    assert [s.name for s in store.read_task_run_states(run_id)[task_run.id]][-1] == "Crashed"


def test_the_writer_refreshes_the_heartbeat_of_its_running_flow_runs(headwater_session, monkeypatch):
    """While a flow runs, its process's store writer stamps the flow run's heartbeat
    periodically; a finished run's heartbeat is no longer refreshed."""
    from headwater.plugins import sqlite_liveness

    monkeypatch.setattr(sqlite_liveness, "HEARTBEAT_SECONDS", 0.1)
    db = headwater_session.settings.home / "headwater.db"
    beats: list[float] = []

    def heartbeat() -> float | None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT heartbeat FROM flow_runs WHERE name = 'beating'").fetchone()[0]

    @flow(flow_run_name="beating")
    def beating() -> None:
        get_store().flush()
        beats.append(_wait_until(heartbeat, "a first heartbeat", 10))
        first = beats[0]
        beats.append(_wait_until(lambda: (heartbeat() or 0) > first and heartbeat(), "a second heartbeat", 10))

    beating()
    get_store().flush()
    assert beats[1] > beats[0]
    last = heartbeat()
    time.sleep(0.5)
    assert heartbeat() == last


def test_a_store_made_before_heartbeats_gets_the_column_on_open(tmp_path):
    """Opening a store whose flow_runs table has no heartbeat column adds it; until then a
    reader judges another host's runs by their start time."""
    from headwater.plugins import sqlite_liveness
    from headwater.plugins.sqlite_store import SQLiteRunStore

    long_ago = time.time() - 10 * sqlite_liveness.STALE_SECONDS
    db = tmp_path / "old.db"
    SQLiteRunStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE flow_runs DROP COLUMN heartbeat")
    old = _record_running(db, "old-run", "elsewhere.example", 4242, "77", started=long_ago)
    new = _record_running(db, "new-run", "elsewhere.example", 4343, "77")
    with sqlite3.connect(db) as conn:  # a reader of such a file (e.g. one it cannot upgrade)
        assert sqlite_liveness.last_seen(conn, "elsewhere.example", 4242, "77") == pytest.approx(long_ago)
    store = SQLiteRunStore(db)
    try:
        with sqlite3.connect(db) as conn:
            assert "heartbeat" in {row[1] for row in conn.execute("PRAGMA table_info(flow_runs)")}
        assert store.read_flow_run(old).state.is_crashed()
        assert store.read_flow_run(new).state.is_running()
    finally:
        store.close()

