"""HEADWATER_STORE_WRITER: who writes the SQLite run store's batches (plugins/sqlite_writers.py).

``auto`` writes in the store's thread and starts a writer process once one batch holds
``PROCESS_AT`` entries; ``thread`` never starts one; ``process`` starts one with the first
batch. Whichever writes, a flow's whole history is recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import headwater.plugins.sqlite_writers as sqlite_writers
from headwater import Session, flow, get_run_logger, task
from headwater.errors import ConfigurationError
from headwater.plugins.sqlite_store import SQLiteRunStore

N = 300  # task runs per flow: three batches' worth at most, a second or less per flow


@task
def double(x: int) -> int:
    return 2 * x


@task(retries=1, retry_delay_seconds=0)
def flaky(attempts: list[int]) -> str:
    attempts.append(1)
    if len(attempts) == 1:
        raise ValueError("first attempt fails")
    return "ok"


@flow
def inner(n: int) -> int:
    return sum(double(i) for i in range(n))


@flow
def busy(n: int) -> int:
    get_run_logger().info("starting %d", n)
    futures = [double.submit(i) for i in range(n)]
    total = sum(f.result() for f in futures) + sum(double(i) for i in range(n))
    flaky([])
    return total + inner(3)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records each writer process the store starts (the store file it writes)."""
    calls: list[Path] = []
    real = sqlite_writers.start_writer_process

    def start(path, rows):
        calls.append(path)
        return real(path, rows)

    monkeypatch.setattr(sqlite_writers, "start_writer_process", start)
    return calls


def _session(monkeypatch: pytest.MonkeyPatch, choice: str) -> Session:
    monkeypatch.setenv("HEADWATER_STORE_WRITER", choice)
    return Session()


def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _assert_history_whole(store: SQLiteRunStore) -> None:
    (run,) = store.read_flow_runs(flow_name="busy")
    assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Completed"]
    assert run.state.is_completed()
    histories = store.read_task_run_states(run.id)
    task_runs = store.read_task_runs(flow_run_id=run.id)
    doubles = [r for r in task_runs if r.task_name == "double"]
    assert len(doubles) == 2 * N
    assert sorted(r.parameters["x"] for r in doubles) == sorted(list(range(N)) * 2)
    for task_run in doubles:
        assert [s.name for s in histories[task_run.id]] == ["Pending", "Running", "Completed"]
    (retried,) = [r for r in task_runs if r.task_name == "flaky"]
    assert [s.name for s in histories[retried.id]] == [
        "Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    (child,) = store.read_flow_runs(flow_name="inner")
    assert child.parent_flow_run_id == run.id and child.state.is_completed()
    assert len(store.read_task_runs(flow_run_id=child.id)) == 3
    assert any(f"starting {N}" in line["message"] for line in store.read_logs(flow_run_id=run.id))


# -- the setting --------------------------------------------------------------------------------


def test_a_bad_value_is_one_line_naming_it_and_the_choices(monkeypatch):
    """HEADWATER_STORE_WRITER=fast fails when the store is made, in one line that names the
    value and every allowed one."""
    with pytest.raises(ConfigurationError) as info:
        with _session(monkeypatch, "fast") as session:
            session.store
    message = str(info.value)
    assert message == "HEADWATER_STORE_WRITER='fast' is not a store writer; expected one of auto, thread, process"


def test_a_bad_value_in_pyproject_names_the_file(monkeypatch, tmp_path):
    """Written under [tool.headwater], the bad value is reported as written there."""
    (tmp_path / "pyproject.toml").write_text('[tool.headwater]\nstore_writer = "threads"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEADWATER_STORE_WRITER", raising=False)
    with pytest.raises(ConfigurationError) as info:
        with Session() as session:
            session.store
    message = str(info.value)
    assert "store_writer = 'threads' under [tool.headwater]" in message
    assert str(tmp_path / "pyproject.toml") in message and "auto, thread, process" in message


def test_a_store_made_directly_checks_its_writer_too(tmp_path):
    """SQLiteRunStore(writer=...) refuses an unknown writer before it opens anything."""
    with pytest.raises(ConfigurationError, match=r"HEADWATER_STORE_WRITER='fork' .*auto, thread, process"):
        SQLiteRunStore(tmp_path / "runs.db", writer="fork")
    assert not (tmp_path / "runs.db").exists()


def test_the_choice_ignores_case_and_spaces(monkeypatch, started):
    """` Thread ` is the thread writer (as HEADWATER_LOGGING_LEVEL ignores case)."""
    monkeypatch.setattr(sqlite_writers, "PROCESS_AT", 1)
    with _session(monkeypatch, " Thread ") as session:
        busy(20)
        session.store.flush()
    assert started == []


# -- what each choice does ------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["auto", "thread", "process"])
def test_every_choice_records_a_flows_whole_history(monkeypatch, choice):
    """Task runs (called and submitted), a retried run, a subflow and a log line: all of
    it is read back whichever writer wrote it."""
    with _session(monkeypatch, choice) as session:
        busy(N)
        _assert_history_whole(session.store)


def test_process_hands_the_flows_batches_to_a_writer_process(monkeypatch, started):
    """Under ``process`` the first batch starts the writer process, however small; once it
    is ready, a flow's batches go to it, and its history is whole."""
    with _session(monkeypatch, "process") as session:
        store = session.store
        double(1)  # a standalone call: one small batch
        store.flush()
        assert len(started) == 1
        process = store._writer.process
        _until(process.is_ready)
        sent = process._next
        busy(N)
        assert process._next > sent and process.alive  # the batches went to the child
        _assert_history_whole(store)


def test_thread_never_starts_a_writer_process(monkeypatch, started):
    """Under ``thread`` no batch starts a process, even one far above PROCESS_AT."""
    monkeypatch.setattr(sqlite_writers, "PROCESS_AT", 5)
    with _session(monkeypatch, "thread") as session:
        busy(N)
        _assert_history_whole(session.store)
    assert started == []


def test_auto_starts_a_writer_process_only_for_a_large_batch(monkeypatch, started):
    """Under ``auto`` (the default) a flow whose batches stay below PROCESS_AT entries is
    written by the thread; the first batch of PROCESS_AT entries or more starts a process."""
    monkeypatch.delenv("HEADWATER_STORE_WRITER", raising=False)
    with Session() as session:
        inner(3)  # a few entries per batch, far below PROCESS_AT
        session.store.flush()
        assert started == []
        monkeypatch.setattr(sqlite_writers, "PROCESS_AT", 5)
        inner(20)
        session.store.flush()
        assert len(started) == 1 and session.store._writer.process is not None
