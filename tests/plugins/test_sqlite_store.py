"""The SQLite run store: what it records, several processes at once, crashes, bad files."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from headwater import Session, flow, get_store, task
from headwater.errors import StoreError
from headwater.plugins.sqlite_store import SQLiteRunStore


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(home), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1", **extra)
    return env


# -- what is recorded ------------------------------------------------------------------------


def test_the_default_database_lives_under_headwater_home(headwater_home):
    """Without HEADWATER_DATABASE_URL the store is $HEADWATER_HOME/headwater.db."""

    @flow
    def noted():
        return 1

    noted()
    get_store().flush()
    assert isinstance(get_store(), SQLiteRunStore)
    assert (headwater_home / "headwater.db").is_file()


def test_headwater_database_url_chooses_the_file(tmp_path, monkeypatch):
    """HEADWATER_DATABASE_URL=sqlite:////abs/path.db puts the runs there."""
    target = tmp_path / "elsewhere" / "runs.db"
    monkeypatch.setenv("HEADWATER_DATABASE_URL", f"sqlite:///{target}")

    @flow
    def placed():
        return 1

    with Session() as session:
        placed()
        session.store.flush()
        assert len(session.store.read_flow_runs(flow_name="placed")) == 1
    assert target.is_file()


def test_runs_states_and_parameters_are_read_back(headwater_session):
    """The read API gives flow runs, task runs and full state histories with timestamps."""

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque thing>"

    @task
    def step(value, thing=None):
        return value

    @flow(flow_run_name="recorded-{n}")
    def recorded(n: int, when: dt.date, thing: object = None):
        step(n)
        step(n + 1, thing)
        return n

    recorded(1, dt.date(2026, 1, 2), Opaque())
    store = get_store()
    store.flush()
    (run,) = store.read_flow_runs(flow_name="recorded")
    assert run.name == "recorded-1" and run.flow_name == "recorded"
    assert run.parameters["n"] == 1
    assert run.parameters["when"] == "2026-01-02"  # JSON where possible
    assert run.parameters["thing"] == "<Opaque thing>"  # not JSON: a readable repr
    assert run.state.is_completed() and run.run_count == 1
    assert run.start_time <= run.end_time
    assert store.read_flow_run("recorded-1").id == run.id
    assert store.read_flow_run(run.id[:8]).id == run.id
    tasks = store.read_task_runs(flow_run_id=run.id)
    assert [t.name.rsplit("-", 1)[1] for t in tasks] == ["0", "1"]
    assert [t.parameters["value"] for t in tasks] == [1, 2]
    states = store.read_states(run.id)
    assert [s.name for s in states] == ["Pending", "Running", "Completed"]
    assert states[-1].message == "All states completed."
    assert all(isinstance(s.timestamp, dt.datetime) for s in states)
    assert [s.ts for s in states] == sorted(s.ts for s in states)


def test_read_flow_runs_filters_and_limits(headwater_session):
    """read_flow_runs: newest first, limit, flow name and state filters."""

    @flow
    def often(fail: bool = False):
        if fail:
            raise ValueError("x")

    @flow
    def rarely():
        pass

    for _ in range(3):
        often()
    often(True, return_state=True)
    rarely()
    store = get_store()
    store.flush()
    assert len(store.read_flow_runs(flow_name="often")) == 4
    assert len(store.read_flow_runs(limit=2)) == 2
    assert store.read_flow_runs(limit=1)[0].flow_name == "rarely"
    assert len(store.read_flow_runs(state="FAILED")) == 1


def test_runs_survive_the_session_and_are_read_by_a_new_one(headwater_home):
    """Everything written is on disk after the session closes; a new session reads it."""

    @flow(flow_run_name="durable")
    def durable():
        return 1

    with Session():
        durable()
    with Session() as again:
        (run,) = again.store.read_flow_runs(flow_name="durable")
        assert run.name == "durable" and run.state.is_completed()


# -- several processes ------------------------------------------------------------------------

WRITER = textwrap.dedent('''
    import sys
    from headwater import flow, task

    @task
    def step(i):
        return i

    @flow(flow_run_name="p{worker}-{n}")
    def busy(worker: int, n: int):
        return sum(step(i) for i in range(4))

    worker = int(sys.argv[1])
    for n in range(25):
        assert busy(worker, n) == 6
''')


def test_four_processes_write_one_database_without_losing_anything(tmp_path, headwater_home):
    """Four processes at once: every flow run, task run and state is recorded; no lock error."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(w)], env=_env(headwater_home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    with Session() as session:
        store = session.store
        runs = store.read_flow_runs(limit=1000, flow_name="busy")
        assert sorted(r.name for r in runs) == sorted(f"p{w}-{n}" for w in range(4) for n in range(25))
        assert all(r.state.is_completed() for r in runs)
        for run in runs:
            assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Completed"]
        tasks = store.read_task_runs()
        assert len(tasks) == 4 * 25 * 4
        assert all(t.state.is_completed() for t in tasks)


# -- a killed process ---------------------------------------------------------------------------

SLEEPER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from headwater import flow, task

    @task
    def stuck():
        Path(sys.argv[1]).write_text("in task")
        time.sleep(60)

    @flow(flow_run_name="doomed-run")
    def doomed():
        stuck()

    doomed()
''')


def _wait_for_running(db: Path, deadline: float) -> None:
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                    row = conn.execute("SELECT count(*) FROM task_runs WHERE state_type='RUNNING'").fetchone()
                if row and row[0]:
                    return
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    raise AssertionError("the child never recorded a running task run")


def test_a_killed_process_leaves_its_run_crashed(tmp_path, headwater_home):
    """SIGKILL mid-flow: the next session shows the flow run and its task run as Crashed."""
    script, marker = tmp_path / "sleeper.py", tmp_path / "marker"
    script.write_text(SLEEPER)
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], env=_env(headwater_home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_running(headwater_home / "headwater.db", time.time() + 30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with Session() as session:
        store = session.store
        (run,) = store.read_flow_runs(flow_name="doomed")
        assert run.name == "doomed-run"
        assert run.state.is_crashed()
        assert "ended before the run finished" in run.state.message
        assert [s.name for s in store.read_states(run.id)][-1] == "Crashed"
        (task_run,) = store.read_task_runs(flow_run_id=run.id)
        assert task_run.state.is_crashed()


def test_runs_of_live_processes_are_not_marked_crashed(headwater_session):
    """Opening the store again while a run is in progress leaves it alone."""
    seen = []

    @flow
    def in_progress():
        get_store().flush()
        other = SQLiteRunStore(headwater_session.settings.home / "headwater.db")
        seen.append(other.read_flow_runs(flow_name="in-progress")[0].state.name)

    in_progress()
    assert seen == ["Running"]


# -- bad files and folders ----------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"this is not a database\n" * 10,
                                     b"SQLite format 3\x00" + bytes(range(256)) * 20])
def test_a_corrupt_database_is_reported_by_name_and_left_untouched(headwater_home, content):
    """A file that is not a usable SQLite database: StoreError naming it; bytes unchanged."""
    headwater_home.mkdir(parents=True, exist_ok=True)
    db = headwater_home / "headwater.db"
    db.write_bytes(content)

    @flow
    def never_recorded():
        return 1

    with Session():
        with pytest.raises(StoreError) as info:
            never_recorded()
    assert str(db) in str(info.value)
    assert "untouched" in str(info.value)
    assert db.read_bytes() == content


def test_an_unusable_headwater_home_is_reported_with_path_and_setting(tmp_path, monkeypatch):
    """HEADWATER_HOME under a regular file: StoreError naming the path and HEADWATER_HOME."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "home"
    monkeypatch.setenv("HEADWATER_HOME", str(home))

    @flow
    def homeless():
        return 1

    with Session():
        with pytest.raises(StoreError) as info:
            homeless()
    assert str(home) in str(info.value) and "HEADWATER_HOME" in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_headwater_home_is_reported(tmp_path, monkeypatch):
    """A HEADWATER_HOME without write permission: StoreError naming it and the setting."""
    home = tmp_path / "locked"
    home.mkdir()
    home.chmod(0o555)
    monkeypatch.setenv("HEADWATER_HOME", str(home))

    @flow
    def homeless():
        return 1

    try:
        with Session():
            with pytest.raises(StoreError) as info:
                homeless()
    finally:
        home.chmod(0o755)
    assert str(home) in str(info.value) and "HEADWATER_HOME" in str(info.value)


def test_a_bad_database_url_is_reported(monkeypatch):
    """A DATABASE_URL without a known scheme is an error naming the setting."""
    monkeypatch.setenv("HEADWATER_DATABASE_URL", "not-a-url")

    @flow
    def nowhere():
        return 1

    with Session():
        with pytest.raises(StoreError, match="HEADWATER_DATABASE_URL"):
            nowhere()


def test_a_directory_where_the_database_should_be_is_reported(headwater_home):
    """HEADWATER_HOME/headwater.db being a folder: StoreError naming it, folder untouched."""
    db = headwater_home / "headwater.db"
    db.mkdir(parents=True)
    (db / "keep.txt").write_text("mine")

    @flow
    def blocked():
        return 1

    with Session():
        with pytest.raises(StoreError, match="is not a file") as info:
            blocked()
    assert str(db) in str(info.value)
    assert (db / "keep.txt").read_text() == "mine"


# -- closing ----------------------------------------------------------------------------------


def _task_run(i: int):
    from headwater import states as S
    from headwater.runs import TaskRun

    run = TaskRun(f"run-{i}-{time.time_ns()}", "step", "abcd1234", f"step-{i}", {"i": i})
    run.state = S.Pending()
    return run


def test_a_write_after_close_is_refused_not_lost(tmp_path):
    """Closing the store writes what was queued and ends its writer thread; a state or
    log line recorded afterwards raises StoreError naming the file, instead of being
    accepted and silently never written."""
    import threading

    store = SQLiteRunStore(tmp_path / "runs.db")
    before = _task_run(1)
    store.record_state(before, before.state)
    writer = store._queue._writer
    store.close()
    assert writer is not None and writer not in threading.enumerate()
    after = _task_run(2)
    with pytest.raises(StoreError, match="runs.db is closed"):
        store.record_state(after, after.state)
    with pytest.raises(StoreError, match="runs.db is closed"):
        store.record_logs([(None, None, time.time(), "INFO", "headwater", "late")])
    again = SQLiteRunStore(tmp_path / "runs.db")
    assert [r.name for r in again.read_task_runs()] == ["step-1"]
    again.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_its_runs_with_its_own_writer_and_pid(tmp_path):
    """A process forked while the store's writer runs starts its own writer: the child's
    run reaches the file, recorded with the child's pid, and the parent's queued run is
    written once, by the parent."""
    store = SQLiteRunStore(tmp_path / "runs.db")
    parent_run = _task_run(1)
    store.record_state(parent_run, parent_run.state)  # the parent's writer is running
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        signal.alarm(20)  # a child that hangs must not outlive the test run
        try:
            child_run = _task_run(2)
            store.record_state(child_run, child_run.state)
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.close()
    conn = sqlite3.connect(tmp_path / "runs.db")
    rows = dict(conn.execute("SELECT name, pid FROM task_runs").fetchall())
    conn.close()
    assert rows == {"step-1": os.getpid(), "step-2": pid}


def test_a_store_made_before_cache_digests_gets_the_column_and_keeps_its_entries(tmp_path):
    """Opening a store whose cache_entries has no digest column adds it; old entries
    read back with no digest (not checked), new ones keep theirs."""
    from headwater.stores import CacheEntry

    path = tmp_path / "old.db"
    SQLiteRunStore(path).close()
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE cache_entries;"
        "CREATE TABLE cache_entries (key TEXT PRIMARY KEY, task_name TEXT, task_run_id TEXT, "
        "location TEXT NOT NULL, serializer TEXT, created REAL NOT NULL, expiration REAL, size INTEGER);"
        "INSERT INTO cache_entries VALUES ('old', 't', NULL, 'loc', 'cloudpickle', 1.0, NULL, 5);")
    conn.close()
    store = SQLiteRunStore(path)
    try:
        assert store.read_cache_entry("old").digest is None
        store.write_cache_entry(CacheEntry("new", "t", None, "loc2", "cloudpickle", 2.0, digest="sha256:ab"))
        assert [(e.key, e.digest) for e in store.read_cache_entries()] == [("old", None), ("new", "sha256:ab")]
    finally:
        store.close()
    again = SQLiteRunStore(path)  # a second open finds the column and changes nothing
    try:
        assert again.read_cache_entry("new").digest == "sha256:ab"
    finally:
        again.close()
