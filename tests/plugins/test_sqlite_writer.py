"""The SQLite store's write queue: runs whose rows are written over several batches keep
their place, name and parameters; flush waits for what was queued before it."""

from __future__ import annotations

import threading
import time

from headwater import states as S
from headwater.plugins.sqlite_store import SQLiteRunStore
from headwater.plugins.sqlite_queue import WriteQueue
from headwater.plugins.sqlite_rows import task_header, task_state
from headwater.plugins.sqlite_writer import BatchWriter
from headwater.runs import TaskRun


def _run(name: str, **parameters: object) -> TaskRun:
    return TaskRun(f"id-{name}-{time.time_ns()}", "step", "abcd1234", name, parameters, flow_run_id="flow-1")


def _write(store: SQLiteRunStore, writer: BatchWriter, batch: list) -> None:
    store._write_txn(writer.rows(batch))


def _record(run: TaskRun, state: S.State) -> tuple:
    run.state = state
    return task_state(run, state)


def test_a_run_created_in_one_batch_and_run_in_a_later_one_keeps_its_place(tmp_path):
    """A task run whose creation lands in one batch and whose states land in the next is
    listed where it was created (before runs created after it), keeps its name and
    parameters, and shows its latest state."""
    store = SQLiteRunStore(tmp_path / "runs.db")
    writer = BatchWriter("host", 1, None)
    first, second = _run("first", x=1), _run("second", x=2)
    first_header = task_header(first)
    time.sleep(0.002)
    later = [task_header(second), _record(second, S.Pending()), _record(first, S.Pending()),
             _record(first, S.Running())]
    time.sleep(0.002)
    _write(store, writer, [first_header])  # written after the second run was created
    _write(store, writer, later)
    runs = store.read_task_runs(flow_run_id="flow-1")
    assert [r.name for r in runs] == ["first", "second"]
    assert runs[0].parameters == {"x": 1} and runs[0].state.name == "Running"
    assert [s.name for s in store.read_states(first.id)] == ["Pending", "Running"]
    store.close()


def test_parameters_resolved_from_futures_replace_the_ones_recorded_at_creation(tmp_path):
    """A run created with an upstream future among its parameters is stored with the
    future's result once it starts running, also when that happens in a later batch."""
    store = SQLiteRunStore(tmp_path / "runs.db")
    writer = BatchWriter("host", 1, None)
    run = _run("downstream", x="<Future upstream>")
    run.upstream_ids = ("upstream-id",)
    _write(store, writer, [task_header(run), _record(run, S.Pending())])
    run.parameters = {"x": 2}
    _write(store, writer, [_record(run, S.Running()), _record(run, S.Completed())])
    stored = store.read_task_run(run.id)
    assert stored.parameters == {"x": 2} and stored.upstream_ids == ("upstream-id",)
    assert stored.state.name == "Completed" and stored.name == "downstream"
    store.close()


def test_flush_waits_for_everything_queued_before_it_from_every_thread():
    """Entries appended by several threads before flush() are all written when it
    returns, and the writer sees each thread's entries in the order it appended them."""
    written: list = []

    class ListWriter:
        tick = 0.05

        def write(self, batch, logs, marks):
            written.extend(batch)

        def close(self):
            pass

        def forget(self):
            pass

    queue = WriteQueue("test", ListWriter(), lambda: None)

    def produce(label: str) -> None:
        for i in range(2000):
            queue.put((0, label, i))

    threads = [threading.Thread(target=produce, args=(label,)) for label in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.flush()
    assert len(written) == 6000
    for label in "abc":
        assert [i for _, who, i in written if who == label] == list(range(2000))
    queue.close()


def test_a_parameter_that_contains_itself_is_stored_as_text(headwater_session):
    """A task called with a list that contains itself runs, and its run row keeps the
    other parameters as JSON and that one as its repr (no error from the store)."""
    from headwater import flow, task

    @task
    def size(items: list, n: int) -> int:
        return len(items) + n

    loop: list = [1]
    loop.append(loop)

    @flow
    def uses_loop() -> int:
        return size(loop, 2)

    assert uses_loop() == 4
    headwater_session.store.flush()
    (run,) = headwater_session.store.read_task_runs()
    assert run.parameters == {"items": "[1, [...]]", "n": 2}


def test_a_task_run_created_without_any_state_is_written_by_flush(tmp_path):
    """The store queues a task run's row with its first state; a run created but never
    given a state still gets its row when the store is flushed."""
    store = SQLiteRunStore(tmp_path / "runs.db")
    run = _run("lonely", x=1)
    store.create_task_run(run)
    store.flush()
    (stored,) = store.read_task_runs()
    assert stored.name == "lonely" and stored.parameters == {"x": 1} and stored.state is None
    store.close()


def test_a_flush_racing_a_runs_first_state_keeps_the_runs_row_whole(tmp_path):
    """flush() writing out a run created without a state yet, while another thread
    records that run's first state: the row keeps the run's name, flow run and
    parameters (the state never lands before the run's header)."""
    import inspect

    store = SQLiteRunStore(tmp_path / "runs.db")
    code = SQLiteRunStore.flush.__code__
    lines, first = inspect.getsourcelines(SQLiteRunStore.flush)
    # Pause the flushing thread right after it has read a held header.
    pause_line = first + next(i for i, text in enumerate(lines) if "if header is not None" in text)
    holding = threading.Event()

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None

        def local(frame, event, arg):
            if event == "line" and frame.f_lineno == pause_line:
                holding.set()
                time.sleep(0.3)
            return local

        return local

    run = _run("raced", x=7)
    store.create_task_run(run)
    threading.settrace(tracer)
    try:
        flusher = threading.Thread(target=store.flush)
        flusher.start()
        assert holding.wait(10)
    finally:
        threading.settrace(None)
    store.record_state(run, S.Pending())
    time.sleep(0.12)  # the writer's next tick
    flusher.join()
    store.flush()
    (stored,) = store.read_task_runs()
    assert (stored.name, stored.flow_run_id, stored.parameters) == ("raced", "flow-1", {"x": 7})
    assert stored.state.name == "Pending"
    store.close()


def test_a_batch_written_piece_by_piece_commits_with_its_mark_or_not_at_all(tmp_path):
    """A batch with a value SQLite refuses is written again piece by piece. What comes
    with it (the writer process's record of the batch) is in the same transaction: if
    that fails, nothing of the batch stays, so the batch written again later (its flow
    process takes it back) records no state twice."""
    import pytest

    store = SQLiteRunStore(tmp_path / "runs.db")
    writer = BatchWriter("host", 1, None)
    good, bad = _run("good", x=1), _run("bad", x=2)
    batch = [task_header(good), _record(good, S.Pending()), task_header(bad),
             _record(bad, S.Failed(message="report-\udcff.csv"))]

    def mark(conn):
        raise RuntimeError("the writer process died before its mark")

    with pytest.raises(RuntimeError):
        writer.write(store._conn(), batch, [], also=mark)
    assert store.read_task_runs(flow_run_id="flow-1") == []
    writer.write(store._conn(), batch, [])  # taken back and written again
    assert [s.name for s in store.read_states(good.id)] == ["Pending"]
    assert [s.message for s in store.read_states(bad.id)] == ["report-\\udcff.csv"]
    store.close()
