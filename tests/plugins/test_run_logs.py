"""The run_logs plugin: run log lines recorded in the run store, in batches."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from headwater import flow, get_run_logger, task
from headwater.cli import main
from headwater.session import Session
from headwater.stores import MemoryRunStore


@task(retries=1, retry_delay_seconds=0)
def shaky(attempts: list[int]) -> str:
    attempts.append(1)
    get_run_logger().info("attempt %d", len(attempts))
    if len(attempts) == 1:
        raise ConnectionError("reset by peer")
    return "ok"


@flow(flow_run_name="logged")
def logged_flow() -> str:
    get_run_logger().warning("starting up")
    return shaky([])


def test_flow_and_task_lines_are_recorded_under_their_runs(headwater_session: Session) -> None:
    """After a flow run, its lines (level, time, logger, message) are in the store: flow
    lines carry only the flow run id, task lines the task run id too."""
    state = logged_flow(return_state=True)
    store = headwater_session.store
    store.flush()
    run = store.read_flow_runs()[0]
    task_run = store.read_task_runs(flow_run_id=run.id)[0]
    lines = store.read_logs(flow_run_id=run.id)
    by_message = {line["message"]: line for line in lines}
    assert by_message["starting up"]["level"] == "WARNING"
    assert by_message["starting up"]["task_run_id"] is None
    assert by_message["attempt 2"]["task_run_id"] == task_run.id
    assert by_message["attempt 2"]["logger"] == "headwater.task_runs"
    assert f"Finished in state {state}" in by_message
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
    assert {line["message"] for line in store.read_logs(task_run_id=task_run.id)} >= {"attempt 1", "attempt 2"}


def test_a_failed_attempt_keeps_its_traceback(headwater_session: Session) -> None:
    """The error line of a failed attempt includes the traceback, as on the console."""
    logged_flow()
    store = headwater_session.store
    store.flush()
    errors = [line for line in store.read_logs() if line["level"] == "ERROR"]
    assert errors and "ConnectionError: reset by peer" in errors[0]["message"]
    assert "Traceback (most recent call last)" in errors[0]["message"]


def test_the_message_is_the_one_at_logging_time(headwater_session: Session) -> None:
    """Arguments changed after the log call do not change the recorded line."""

    @flow
    def mutating() -> None:
        items = [1]
        get_run_logger().info("items %s", items)
        items.append(2)

    mutating()
    headwater_session.store.flush()
    messages = [line["message"] for line in headwater_session.store.read_logs()]
    assert "items [1]" in messages and "items [1, 2]" not in messages


def test_lines_outside_any_run_are_not_recorded(headwater_session: Session) -> None:
    """headwater's own lines that belong to no run stay on the console only."""
    logged_flow()
    logging.getLogger("headwater.engine").warning("not about a run")
    store = headwater_session.store
    store.flush()
    assert all(line["message"] != "not about a run" for line in store.read_logs())
    assert all(line["flow_run_id"] or line["task_run_id"] for line in store.read_logs())


class CountingStore(MemoryRunStore):
    """A memory store that counts hand-overs of log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.handovers = 0

    def record_logs(self, rows: Any) -> None:
        self.handovers += 1
        super().record_logs(rows)


def test_task_lines_are_handed_to_the_store_in_batches(headwater_home: Any) -> None:
    """Sixty task runs logging two lines each reach the store in a handful of
    batches, not one store call per line."""
    store = CountingStore()

    class UseCountingStore:
        @staticmethod
        def headwater_make_run_store(session: Any) -> Any:
            return store

    @task
    def quiet(n: int) -> int:
        get_run_logger().info("working on %d", n)
        return n

    @flow
    def many() -> None:
        for n in range(60):
            quiet(n)

    with Session(plugins=[UseCountingStore()]):
        many()
    task_lines = [line for line in store.read_logs(limit=10**6) if line["task_run_id"]]
    assert len(task_lines) >= 120  # each task run's own line and its "Finished" line
    assert store.handovers <= 5
    # The routine lines ("Created", "Finished") are read back, but were not written as rows.
    assert len(store.logs) < 70


def test_disabling_the_plugin_records_nothing(headwater_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """HEADWATER_DISABLE_PLUGINS=run_logs: runs are recorded, their log lines are not."""
    monkeypatch.setenv("HEADWATER_DISABLE_PLUGINS", "run_logs")
    with Session() as session:
        logged_flow()
        session.store.flush()
        assert session.store.read_flow_runs()
        assert session.store.read_logs() == []


def test_lines_are_on_disk_when_the_process_ends(tmp_path: Any) -> None:
    """A script that runs a flow and exits leaves every line in the store, the last
    'Finished in state' line included."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        from headwater import flow, task, get_run_logger

        @task
        def step(n):
            get_run_logger().info("step %d", n)

        @flow(flow_run_name="job")
        def job():
            for n in range(3):
                step(n)

        job()
    """))
    env = {**os.environ, "HEADWATER_HOME": str(tmp_path / "home")}
    env.pop("HEADWATER_DATABASE_URL", None)
    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True, timeout=60)
    with Session(env=env) as session:
        messages = [line["message"] for line in session.store.read_logs()]
    assert ["step 0", "step 1", "step 2"] == [m for m in messages if m.startswith("step")]
    assert messages[-1].startswith("Finished in state Completed")


def test_runs_show_prints_the_logs(headwater_session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    """`headwater runs show` ends with the run's log lines, each naming its task run;
    with --json they are under "logs"."""
    logged_flow()
    headwater_session.store.flush()
    capsys.readouterr()
    assert main(["runs", "show", "logged"]) == 0
    out = capsys.readouterr().out
    logs = out.split("\nLogs:\n", 1)[1]
    assert "| WARNING | Flow run 'logged' - starting up" in logs
    assert "| INFO    | Task run 'shaky-" in logs and "- attempt 2" in logs
    assert main(["runs", "show", "logged", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(line["message"] == "attempt 1" and line["level"] == "INFO" for line in data["logs"])


@flow(flow_run_name="chatty")
def chatty_flow(n: int) -> None:
    logger = get_run_logger()
    for i in range(n):
        logger.info("line %d", i)


def test_runs_show_keeps_the_last_lines_of_a_long_log_and_says_what_it_left_out(
        headwater_session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    """A run with more log lines than shown: the first and last lines are printed (the
    'Finished in state' line included) with a note naming how many were left out and
    how to see them; --logs all prints every line."""
    chatty_flow(1200)
    headwater_session.store.flush()
    capsys.readouterr()
    assert main(["runs", "show", "chatty"]) == 0
    total = len(headwater_session.store.read_logs(limit=10**6))
    assert total > 1200
    logs = capsys.readouterr().out.split("\nLogs:\n", 1)[1].splitlines()
    assert len(logs) == 201
    assert any("- line 0" in line for line in logs[:5]) and "Finished in state Completed" in logs[-1]
    assert logs[100] == f"  ... {total - 200} more lines (use --logs {total} / --logs all)"
    assert main(["runs", "show", "chatty", "--logs", "all"]) == 0
    logs = capsys.readouterr().out.split("\nLogs:\n", 1)[1].splitlines()
    assert len(logs) == total and "- line 1199" in logs[-2]
    assert main(["runs", "show", "chatty", "--logs", "10"]) == 0
    logs = capsys.readouterr().out.split("\nLogs:\n", 1)[1].splitlines()
    assert len(logs) == 11 and "Finished in state" in logs[-1]


def test_stored_lines_carry_the_label_the_console_showed(
        headwater_session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    """`runs show` labels each line as the console did: 'Created task run' is a line of the
    flow run, 'Created flow run' is the engine's line (stored too), and a traceback is
    indented under its error line."""
    logged_flow()
    headwater_session.store.flush()
    console = capsys.readouterr().err
    created_task = next(line for line in console.splitlines() if "Created task run" in line)
    created_flow = next(line for line in console.splitlines() if "Created flow run" in line)
    assert main(["runs", "show", "logged"]) == 0
    logs = capsys.readouterr().out.split("\nLogs:\n", 1)[1].splitlines()
    # The console line and the stored one agree after the timestamp.
    for console_line in (created_task, created_flow):
        assert any(line.strip().split(" | ", 1)[1] == console_line.split(" | ", 1)[1] for line in logs), \
            (console_line, logs)
    assert any("| INFO    | headwater.engine - Created flow run 'logged'" in line for line in logs)
    error_at = next(i for i, line in enumerate(logs) if "Encountered exception" in line)
    following = logs[error_at + 1:]
    traceback = following[:next(i for i, line in enumerate(following) if " | " in line)]
    assert traceback and all(line.startswith("      ") for line in traceback)
    assert "      ConnectionError: reset by peer" in traceback


# -- a task run's routine lines: kept as facts, worded when read ---------------------------


@task
def double(n: int) -> int:
    get_run_logger().info("doubling %d", n)
    if n < 0:
        raise ValueError("negative")
    return 2 * n


@flow(flow_run_name="routine")
def routine_flow() -> int:
    total = double(1) + double(2)
    double.submit(-1).wait()
    get_run_logger().info("total %d", total)
    return total


def _routine(store: Any, run_id: str, **where: Any) -> list[tuple[Any, ...]]:
    return [(line["task_run_id"], line["logger"], line["message"])
            for line in store.read_logs(flow_run_id=run_id, **where)]


@pytest.mark.parametrize("url", ["sqlite", "memory://"])
def test_routine_lines_are_read_back_in_order_though_not_written(
        headwater_home: Any, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Every task run's "Created task run" and "Finished in state" lines are read back,
    in the order they were logged among the other lines, on SQLite and in memory; the
    store keeps one marker row for them, not a row per line."""
    if url != "sqlite":
        monkeypatch.setenv("HEADWATER_DATABASE_URL", url)
    with Session() as session:
        routine_flow(return_state=True)
        store = session.store
        store.flush()
        run = store.read_flow_run("routine")
        tasks = {t.name: t for t in store.read_task_runs(flow_run_id=run.id)}
        names = sorted(tasks)
        lines = _routine(store, run.id)
        expected = [(None, "headwater.engine", "Created flow run 'routine' for flow 'routine-flow'"),
                    (None, "headwater.flow_runs", "Using task runner 'ConcurrentTaskRunner'")]
        for name in sorted(tasks):  # double-<key>-0, -1, -2: in the order they were made
            task_run = tasks[name]
            expected += [(None, "headwater.task_runs", f"Created task run {name!r} for task 'double'"),
                         (task_run.id, "headwater.task_runs", f"doubling {task_run.parameters['n']}")]
            if task_run.parameters["n"] < 0:
                expected.append((task_run.id, "headwater.task_runs", "Encountered exception during execution:"))
            expected.append((task_run.id, "headwater.task_runs", f"Finished in state {task_run.state}"))
        expected += [(None, "headwater.flow_runs", "total 6"),
                     (None, "headwater.flow_runs", f"Finished in state {run.state}")]
        # An error line carries its traceback: compare first lines.
        assert [(tid, logger, message.split("\n")[0]) for tid, logger, message in lines] == expected
        # Filtering by task run gives that run's own lines, its "Finished" line last.
        failed = next(t for t in tasks.values() if t.parameters["n"] < 0)
        mine = store.read_logs(task_run_id=failed.id)
        assert mine[-1]["message"] == f"Finished in state {failed.state}"
        assert all(line["task_run_id"] == failed.id for line in mine)
        # A limit cuts the merged lines, not the recorded ones alone.
        assert [line["message"] for line in store.read_logs(flow_run_id=run.id, limit=2)] == \
            [line[2] for line in lines[:2]]
    if url == "sqlite":
        import sqlite3

        conn = sqlite3.connect(str(headwater_home / "headwater.db"))
        stored = [m for (m,) in conn.execute("SELECT message FROM logs WHERE flow_run_id = ?", (run.id,))]
        conn.close()
        assert not any(m and m.startswith("Created task run") for m in stored)
        assert stored.count(None) == 1  # the marker


def test_routine_lines_are_not_read_back_when_they_were_not_logged(
        headwater_home: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the per-task lines' logger above INFO, a run's log holds no "Created" or
    "Finished" task lines: the store words only the lines that were logged."""
    logger = logging.getLogger("headwater.task_runs")
    monkeypatch.setattr(logger, "level", logging.WARNING)
    with Session() as session:
        routine_flow(return_state=True)
        session.store.flush()
        run = session.store.read_flow_run("routine")
        messages = [line["message"] for line in session.store.read_logs(flow_run_id=run.id)]
    assert not [m for m in messages if m.startswith("Created task run")]
    assert [m for m in messages if m.startswith("Finished in state")] == [messages[-1]]  # the flow's
    assert "total 6" in messages


def test_a_task_line_reaches_the_store_within_seconds_while_the_task_still_runs(headwater_session):
    """A task that logs once and then works for long: its line is in the store (where other
    processes read it) before the task ends, not only at the next flow-level line."""
    import threading as _threading
    import time as _time

    from headwater import flow, get_run_logger, task

    seen = _threading.Event()
    release = _threading.Event()

    @task
    def long_job():
        get_run_logger().info("halfway there")
        release.wait(30)

    @flow
    def patient():
        long_job()

    def watch():
        deadline = _time.monotonic() + 20
        while _time.monotonic() < deadline and not seen.is_set():
            headwater_session.store.flush()
            runs = headwater_session.store.read_flow_runs(limit=1)
            if runs and any(line["message"] == "halfway there"
                            for line in headwater_session.store.read_logs(runs[0].id, limit=1000)):
                seen.set()
            _time.sleep(0.1)
        release.set()

    watcher = _threading.Thread(target=watch)
    watcher.start()
    patient()
    watcher.join()
    assert seen.is_set(), "the task's line reached the store only after the task ended"
