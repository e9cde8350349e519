"""Crash detection at its edges: a process in another pid namespace (a container sharing
the host name), a forked child that exits, the time a crash is dated, a killed process
not yet reaped (a zombie)."""

from __future__ import annotations

import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from headwater import flow, get_store

from .procs import child_env
from .test_liveness import _cli, _record_running, _wait_until, store_file  # noqa: F401 - a fixture

NAPPER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from headwater import flow, task

    @task
    def nap():
        Path(sys.argv[1]).touch()
        time.sleep(float(sys.argv[2]))

    @flow(flow_run_name="napping-run")
    def napping():
        nap()

    napping()
''')


def _histories(db: Path) -> dict[str, list[str]]:
    """Recorded state histories by run name (flow and task runs)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = dict(conn.execute("SELECT id, name FROM flow_runs UNION ALL SELECT id, name FROM task_runs"))
        out: dict[str, list[str]] = {}
        for run_id, name in conn.execute("SELECT run_id, name FROM states ORDER BY seq"):
            out.setdefault(names[run_id], []).append(name)
    return out


def _unshare_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30)
    return done.returncode == 0


# -- another pid namespace ----------------------------------------------------------------------


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare --pid (root or user namespaces)")
def test_a_run_in_another_pid_namespace_is_not_taken_for_crashed(tmp_path, headwater_home):
    """A flow in its own pid namespace (as in a container with the host's name) is
    Running to a reader outside it, and its history ends Completed, with no Crashed."""
    script, started = tmp_path / "napper.py", tmp_path / "started"
    script.write_text(NAPPER)
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(script),
                             str(started), "4"], env=child_env(headwater_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(started.exists, "the task to start")
        time.sleep(0.3)  # its Running state committed (a batch every 50 ms)
        (listed,) = _cli(headwater_home, "runs")
        assert listed["state"] == "RUNNING"
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    histories = _histories(headwater_home / "headwater.db")
    assert histories["napping-run"] == ["Pending", "Running", "Completed"]
    assert "Crashed" not in sum(histories.values(), [])


def test_a_run_of_another_pid_namespace_is_judged_by_its_heartbeat(store_file, headwater_session):
    """A run recorded on this host by a process of another pid namespace (its pid means
    nothing here) is Running while its heartbeat is fresh, Crashed once it is stale, and
    is never marked in the store; an old token (no namespace) keeps its meaning."""
    from headwater.plugins.sqlite_liveness import STALE_SECONDS

    host, now = socket.gethostname(), time.time()
    fresh = _record_running(store_file, "contained", host, 999_999, "123@4026530000", heartbeat=now - 1,
                            started=now - 10 * STALE_SECONDS)
    stale = _record_running(store_file, "contained-gone", host, 999_998, "123@4026530000",
                            heartbeat=now - 2 * STALE_SECONDS, started=now - 10 * STALE_SECONDS)
    old = _record_running(store_file, "old-token", host, 999_997, "123")
    store = headwater_session.store
    assert store.read_flow_run(fresh).state.is_running()
    assert store.read_flow_run(stale).state.is_crashed()
    assert store.read_flow_run(old).state.is_crashed()
    listed = {r["name"]: r["state"] for r in _cli(headwater_session.settings.home, "runs")}
    assert (listed["contained"], listed["contained-gone"], listed["old-token"]) == ("RUNNING", "CRASHED", "CRASHED")
    with sqlite3.connect(f"file:{store_file}?mode=ro", uri=True) as conn:
        recorded = dict(conn.execute("SELECT name, state_type FROM flow_runs"))
    assert recorded["contained"] == recorded["contained-gone"] == "RUNNING"
    assert recorded["old-token"] == "CRASHED"


def test_no_state_is_written_after_another_process_marked_the_run_crashed(headwater_session):
    """A flow run marked Crashed by another process while it still ran (it was taken for
    dead) stays Crashed: its later states are not written, its history ends Crashed."""
    db = headwater_session.settings.home / "headwater.db"

    @flow(flow_run_name="misjudged")
    def misjudged() -> int:
        get_store().flush()
        with sqlite3.connect(db) as conn:  # what a reader that took this process for dead writes
            (run_id,) = conn.execute("SELECT id FROM flow_runs WHERE name = 'misjudged'").fetchone()
            conn.execute("UPDATE flow_runs SET state_type = 'CRASHED', state_name = 'Crashed' WHERE id = ?",
                         (run_id,))
            conn.execute("INSERT INTO states (run_id, run_kind, type, name, ts) VALUES (?, 'flow', 'CRASHED', "
                         "'Crashed', ?)", (run_id, time.time()))
        return 1

    assert misjudged() == 1
    get_store().flush()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT state_type FROM flow_runs WHERE name = 'misjudged'").fetchone() == ("CRASHED",)
    assert _histories(db)["misjudged"] == ["Pending", "Running", "Crashed"]


# -- a forked child ---------------------------------------------------------------------------------

FORKER = textwrap.dedent('''
    import os, sys
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    from headwater import flow, task

    def square(x):
        return x * x

    @task
    def split():
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # the child: its engine copy must record nothing for the parent's runs
        os.waitpid(pid, 0)
        return "parent"

    @task
    def pooled():
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            return sum(pool.map(square, range(10)))

    @flow(flow_run_name="forking-run")
    def forking():
        return split(), pooled()

    print(forking())
''')


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_that_exits_records_nothing_for_its_parents_runs(tmp_path, headwater_home):
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    done = subprocess.run([sys.executable, str(script)], env=child_env(headwater_home), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "('parent', 285)" in done.stdout, done.stderr
    histories = _histories(headwater_home / "headwater.db")
    assert histories["forking-run"] == ["Pending", "Running", "Completed"]
    assert [h for name, h in histories.items() if name != "forking-run"] == [["Pending", "Running", "Completed"]] * 2


# -- when a crash happened ----------------------------------------------------------------------


def test_a_crash_is_dated_by_the_last_sign_of_life_not_by_the_reader(tmp_path, headwater_home):
    """kill -9 a flow shortly after its body started, read it seconds later: its Crashed
    state and end time are those of its last recorded state, not of the read."""
    script, started = tmp_path / "napper.py", tmp_path / "started"
    script.write_text(NAPPER)
    proc = subprocess.Popen([sys.executable, str(script), str(started), "120"], env=child_env(headwater_home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until(started.exists, "the task to start")
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    killed = time.time()
    time.sleep(3)
    shown = _cli(headwater_home, "runs", "show", "napping-run")  # computed; also marks the store
    assert shown["state"] == "CRASHED"
    states = shown["states"]
    assert states[-1]["name"] == "Crashed"

    def ts(state: dict[str, Any]) -> float:
        from datetime import datetime
        return datetime.fromisoformat(state["timestamp"]).timestamp()

    assert ts(states[-1]) <= killed + 0.5, states
    assert ts(states[-1]) >= ts(states[-2])
    with sqlite3.connect(f"file:{headwater_home / 'headwater.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT state_type, start_ts, end_ts FROM flow_runs UNION ALL "
                            "SELECT state_type, start_ts, end_ts FROM task_runs").fetchall()
        crash_ts = [t for (t,) in conn.execute("SELECT ts FROM states WHERE type = 'CRASHED'")]
    assert [r[0] for r in rows] == ["CRASHED", "CRASHED"]
    for _, start, end in rows:
        assert start <= end <= killed + 0.5, rows
    assert len(crash_ts) == 2 and max(crash_ts) <= killed + 0.5


# -- a zombie ---------------------------------------------------------------------------------------


def test_a_killed_but_unreaped_process_is_dead(store_file, headwater_session):
    """A process killed but not yet waited for (a zombie: its pid still answers signals)
    is gone: its runs are Crashed."""
    from headwater.plugins.sqlite_store import process_start_token

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run_id = _record_running(store_file, "zombie", socket.gethostname(), proc.pid,
                                 process_start_token(proc.pid))
        store = headwater_session.store
        assert store.read_flow_run(run_id).state.is_running()
        proc.send_signal(signal.SIGKILL)
        _wait_until(lambda: _proc_state(proc.pid) == "Z", "the child to be a zombie", 10)
        assert store.read_flow_run(run_id).state.is_crashed()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
