"""`headwater runs retry RUN`, as a user rescuing a failed long run uses it: a script run
with python, then the command from another directory, in processes of their own."""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from headwater import flow, task

    HERE = Path(__file__).parent

    def note(name):
        with open(HERE / "calls.txt", "a") as handle:
            handle.write(name + "\\n")

    @task
    def extract(n):
        note("extract")
        return list(range(n))

    @task
    def clean(rows):
        note("clean")
        if os.environ.get("HOLD_CLEAN") and not (HERE / "go").exists():
            (HERE / "clean-started").write_text("yes")
            while not (HERE / "go").exists():  # held here until the test kills the process
                time.sleep(0.05)
        return [r * 2 for r in rows]

    @task
    def enrich(rows):
        note("enrich")
        if os.environ.get("HOLD_ENRICH"):
            (HERE / "enrich-started").write_text("yes")
            while not (HERE / "go").exists():  # held here until the test interrupts the retry
                time.sleep(0.05)
        if not (HERE / "marker").exists():
            raise RuntimeError("the marker file is missing")
        return [r + 1 for r in rows]

    @task
    def load(rows):
        note("load")
        return sum(rows)

    @flow(persist_result=True)
    def pipeline(n: int = 3):
        return load(enrich(clean(extract(n))))

    if __name__ == "__main__":
        print(pipeline(int(sys.argv[1]), return_state=True))
''')

CLI = "import sys; from headwater.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def project(tmp_path: Path, headwater_home: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pipeline.py").write_text(SCRIPT)
    return folder


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_") or k == "HEADWATER_HOME"}
    out.update(extra)
    return out


def headwater(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=120)


def calls(project: Path) -> dict[str, int]:
    return dict(collections.Counter((project / "calls.txt").read_text().split()))


def only_run(cwd: Path) -> dict:
    listed = json.loads(headwater("runs", "--json", cwd=cwd).stdout)
    assert len(listed) == 1
    return listed[0]


def state_names(run_id: str, cwd: Path) -> list[str]:
    shown = json.loads(headwater("runs", "show", run_id, "--json", cwd=cwd).stdout)
    return [s["name"] for s in shown["states"]]


def test_a_failed_run_is_retried_from_where_it_failed(project, tmp_path):
    first = subprocess.run([sys.executable, "pipeline.py", "4"], cwd=project, env=env(), capture_output=True,
                           text=True, timeout=120)
    assert "Failed" in first.stdout, first.stderr
    run = only_run(tmp_path)
    (project / "marker").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    retried = headwater("runs", "retry", run["name"], cwd=elsewhere)

    assert retried.returncode == 0, retried.stderr
    assert "result=16" in retried.stdout  # (0+1) + (2+1) + (4+1) + (6+1)
    assert calls(project) == {"extract": 1, "clean": 1, "enrich": 2, "load": 1}
    after = only_run(tmp_path)
    assert (after["id"], after["name"], after["state"], after["run_count"]) == \
        (run["id"], run["name"], "COMPLETED", 2)
    assert state_names(run["id"], tmp_path) == ["Pending", "Running", "Failed", "AwaitingRetry", "Retrying",
                                                 "Completed"]
    assert "Reused the result of task run" in retried.stderr
    shown = headwater("runs", "show", run["id"], cwd=tmp_path).stdout
    assert "attempts:   1: Failed, 3 task runs; 2: Completed, 4 task runs (2 reused)" in shown
    assert f"defined in: {project / 'pipeline.py'}:pipeline" in shown

    again = headwater("runs", "retry", run["id"], cwd=elsewhere)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "--force" in again.stderr


def _completed_in_store(home: Path, task: str) -> bool:
    database = home / "headwater.db"
    if not database.exists():
        return False
    conn = sqlite3.connect(database)
    try:
        return bool(conn.execute("SELECT 1 FROM task_runs WHERE task_name = ? AND state_type = 'COMPLETED'",
                                 (task,)).fetchone())
    except sqlite3.OperationalError:  # not created yet
        return False
    finally:
        conn.close()


def test_a_run_killed_in_its_second_task_is_retried_from_there(project, tmp_path, headwater_home):
    (project / "marker").write_text("")
    process = subprocess.Popen([sys.executable, "pipeline.py", "4"], cwd=project, env=env(HOLD_CLEAN="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ((project / "clean-started").exists() and _completed_in_store(headwater_home, "extract")):
            assert process.poll() is None and time.monotonic() < deadline, "the flow never reached clean"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    crashed = only_run(tmp_path)
    assert crashed["state"] == "CRASHED"
    (project / "go").write_text("")

    retried = headwater("runs", "retry", crashed["id"][:8], cwd=tmp_path)

    assert retried.returncode == 0, retried.stderr
    assert calls(project) == {"extract": 1, "clean": 2, "enrich": 1, "load": 1}
    after = only_run(tmp_path)
    assert (after["id"], after["state"], after["run_count"]) == (crashed["id"], "COMPLETED", 2)
    names = state_names(crashed["id"], tmp_path)
    assert names[-4:] == ["Crashed", "AwaitingRetry", "Retrying", "Completed"]
    # Dated when the process was last seen alive: after the task run it finished, not
    # when the flow run started.
    shown = json.loads(headwater("runs", "show", crashed["id"], "--json", cwd=tmp_path).stdout)
    crashed_at = next(s["timestamp"] for s in shown["states"] if s["name"] == "Crashed")
    first_extract = shown["task_runs"][0]
    assert first_extract["task_name"] == "extract"
    assert crashed_at >= first_extract["states"][-1]["timestamp"]  # ISO times in UTC compare as text


def test_a_flow_that_cannot_be_loaded_any_more_is_a_clear_error(project, tmp_path):
    subprocess.run([sys.executable, "pipeline.py", "2"], cwd=project, env=env(), capture_output=True, timeout=120)
    run = only_run(tmp_path)
    (project / "pipeline.py").rename(project / "moved.py")
    retried = headwater("runs", "retry", run["id"], cwd=tmp_path)
    assert retried.returncode == 1
    assert retried.stderr.count("\n") == 1
    assert "pipeline.py no longer exists" in retried.stderr and "pipeline.py:pipeline" in retried.stderr


def test_a_script_that_runs_its_flow_when_imported_is_refused_not_run_twice(project, tmp_path):
    unguarded = SCRIPT.split('if __name__ == "__main__":')[0] + "\npipeline(2, return_state=True)\n"
    (project / "pipeline.py").write_text(unguarded)
    subprocess.run([sys.executable, "pipeline.py"], cwd=project, env=env(), capture_output=True, timeout=120)
    run = only_run(tmp_path)
    (project / "marker").write_text("")
    retried = headwater("runs", "retry", run["id"], cwd=tmp_path)
    assert retried.returncode == 1 and retried.stderr.count("\n") == 1
    assert "calls flow 'pipeline' when it is imported" in retried.stderr
    assert 'if __name__ == "__main__":' in retried.stderr
    after = only_run(tmp_path)  # no second run, and this one untouched
    assert (after["id"], after["state"], after["run_count"]) == (run["id"], "FAILED", 1)


def test_a_task_edited_before_the_retry_runs_again_with_what_follows(project, tmp_path):
    subprocess.run([sys.executable, "pipeline.py", "4"], cwd=project, env=env(), capture_output=True, timeout=120)
    run = only_run(tmp_path)
    script = project / "pipeline.py"
    script.write_text(script.read_text().replace("return [r * 2 for r in rows]", "return [r * 3 for r in rows]"))
    (project / "marker").write_text("")
    retried = headwater("runs", "retry", run["id"], cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "result=22" in retried.stdout  # (0+1) + (3+1) + (6+1) + (9+1): the edited clean's values
    assert calls(project) == {"extract": 1, "clean": 2, "enrich": 2, "load": 1}


def test_a_flow_of_a_package_started_with_python_m_is_retried_as_a_module(tmp_path, headwater_home):
    package = tmp_path / "work" / "etl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("FACTOR = 10\n")
    (package / "nightly.py").write_text(textwrap.dedent('''
        from pathlib import Path
        from headwater import flow, task
        from .settings import FACTOR

        @task
        def scale(x):
            if not Path("ready").exists():
                raise RuntimeError("not ready")
            return x * FACTOR

        @flow(persist_result=True)
        def nightly(x: int = 2):
            return scale(x)

        if __name__ == "__main__":
            nightly(return_state=True)
    '''))
    work = tmp_path / "work"
    subprocess.run([sys.executable, "-m", "etl.nightly"], cwd=work, env=env(), capture_output=True, timeout=120)
    run = only_run(tmp_path)
    (work / "ready").write_text("")
    retried = headwater("runs", "retry", run["id"], cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "result=20" in retried.stdout


def test_ctrl_c_during_a_retry_is_one_line_and_the_run_can_be_retried_again(project, tmp_path):
    subprocess.run([sys.executable, "pipeline.py", "4"], cwd=project, env=env(), capture_output=True, timeout=120)
    run = only_run(tmp_path)
    (project / "marker").write_text("")
    # The default SIGINT handler first: a process started in the background ignores SIGINT.
    code = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); " + CLI
    process = subprocess.Popen([sys.executable, "-c", code, "runs", "retry", run["id"]], cwd=tmp_path,
                               env=env(HOLD_ENRICH="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (project / "enrich-started").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert err.strip().splitlines()[-1].startswith(f"headwater: interrupted: flow run '{run['name']}' ended Crashed")
    assert "Traceback" not in err
    assert only_run(tmp_path)["state"] == "CRASHED"
    again = headwater("runs", "retry", run["id"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert calls(project) == {"extract": 1, "clean": 1, "enrich": 3, "load": 1}
    assert only_run(tmp_path)["run_count"] == 3
