"""The store's writer process (busy flows): what it writes is what the thread would have
written, rows name the flow process, nothing is lost when it cannot start or dies, it
ignores Ctrl-C, and it ends with the flow process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import headwater.plugins.sqlite_store as sqlite_store
import headwater.plugins.sqlite_writers as sqlite_writers
import headwater.plugins.sqlite_writer_process as writer_process
from headwater import Session, flow, task
from headwater.plugins.sqlite_store import SQLiteRunStore


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubles(n: int) -> int:
    return sum(double(i) for i in range(n))


def _until(condition, seconds: float = 20.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _ready_process(store: SQLiteRunStore) -> writer_process.WriterProcess:
    """Run flows until the store has handed batches to a ready writer process."""
    doubles(5)  # a batch above the (lowered) threshold starts the process
    store.flush()
    process = store._writer.process
    assert process is not None, "no writer process was started"
    _until(process.is_ready)
    return process


def _histories_whole(store: SQLiteRunStore, n_flows: int) -> None:
    runs = store.read_flow_runs(flow_name="doubles", limit=100)
    assert len(runs) == n_flows and all(r.state.is_completed() for r in runs)
    for run in runs:
        task_runs = store.read_task_runs(flow_run_id=run.id)
        assert len(task_runs) == run.parameters["n"]
        assert [r.parameters["x"] for r in task_runs] == list(range(run.parameters["n"]))
        for task_run in task_runs:
            assert [s.name for s in store.read_states(task_run.id)] == ["Pending", "Running", "Completed"]


def _script_env(home: Path) -> dict[str, str]:
    """The environment of a script run as its own flow process, with its own home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(home), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


@pytest.fixture
def low_threshold(monkeypatch):
    """Every batch of 5 entries or more goes to the writer process."""
    monkeypatch.setattr(sqlite_writers, "PROCESS_AT", 5)


def test_batches_go_to_a_writer_process_that_names_the_flow_process(headwater_session, low_threshold):
    """Once ready, the writer process writes the batches: every history is whole, rows
    carry the flow process's pid (crash detection keeps working), and closing the store
    ends the child."""
    store = headwater_session.store
    process = _ready_process(store)
    sent_before = process._next
    for n in (50, 300):
        doubles(n)
    store.flush()
    assert process._next > sent_before, "the batches were not sent to the writer process"
    child = process._proc.pid
    assert child != os.getpid()
    _histories_whole(store, 3)
    pids = {row[0] for row in store._conn().execute("SELECT DISTINCT pid FROM task_runs")}
    assert pids == {os.getpid()}
    store.close()
    assert process._proc.poll() == 0  # ended cleanly when its stdin closed


def test_when_the_writer_process_dies_nothing_is_lost(headwater_session, low_threshold):
    """Killing the writer process between flows: the thread writes what it had not
    confirmed and everything after, and no flow call reports an error."""
    store = headwater_session.store
    process = _ready_process(store)
    process._proc.kill()
    process._proc.wait()
    for n in (40, 200):
        doubles(n)
    store.flush()
    assert store._writer.process is None
    _histories_whole(store, 3)


def test_the_writer_process_ignores_ctrl_c(headwater_session, low_threshold):
    """Ctrl-C in a terminal reaches the whole process group; the writer process keeps
    going so the flow process can still record what the interrupt did."""
    store = headwater_session.store
    process = _ready_process(store)
    os.kill(process._proc.pid, signal.SIGINT)
    time.sleep(0.1)
    doubles(100)
    store.flush()
    assert process._proc.poll() is None and store._writer.process is process
    _histories_whole(store, 2)


BUSY = textwrap.dedent('''
    import os, sys, time
    import headwater.plugins.sqlite_writers as sqlite_writers
    sqlite_writers.PROCESS_AT = 5
    from headwater import flow, get_store, task

    @task
    def step(i):
        if i == 50:
            print(get_store()._writer.process._proc.pid, flush=True)
            time.sleep(60)  # killed here
        return i

    @flow
    def busy():
        for i in range(10):
            step(i)
        get_store().flush()
        while not get_store()._writer.process.is_ready():
            time.sleep(0.01)
        for i in range(100):
            step(i)

    busy()
''')


def test_a_killed_flow_process_ends_its_writer_process_and_its_runs_crash(tmp_path, headwater_home):
    """SIGKILL of a flow process whose batches go to a writer process: the child ends
    (its stdin closes), and the next session shows the runs left Running as Crashed and
    the finished ones Completed."""
    script = tmp_path / "busy.py"
    script.write_text(BUSY)
    env = _script_env(headwater_home)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        time.sleep(0.2)  # the writer's next tick sends the runs recorded so far
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    _until(lambda: not Path(f"/proc/{child}").exists() or _is_zombie(child))
    with Session() as session:
        (run,) = session.store.read_flow_runs(flow_name="busy")
        assert run.state.is_crashed()
        states = [r.state.name for r in session.store.read_task_runs(flow_run_id=run.id)]
        assert states[:60] == ["Completed"] * 60 and states[60] == "Crashed"


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_writer_process_writes_every_batch_it_received_when_nobody_reads_its_answers(tmp_path):
    """A flow process that ended without reading the answers (killed, os._exit): the
    child still writes every batch already in its pipe, and exits cleanly."""
    import pickle

    from headwater.plugins.sqlite_rows import task_header

    db = tmp_path / "runs.db"
    SQLiteRunStore(db).close()
    proc = subprocess.Popen([sys.executable, "-m", "headwater.plugins.sqlite_writer_process", str(db), "host",
                             "1", ""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.stdout.close()  # nobody reads the answers any more
    for number in range(5):
        runs = [_plain_run(f"run-{number}-{i}") for i in range(3)]
        data = pickle.dumps((number, 0, [task_header(r) for r in runs], []))
        proc.stdin.write(len(data).to_bytes(8, "little") + data)
    proc.stdin.close()
    assert proc.wait(20) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()
    store = SQLiteRunStore(db)
    assert len(store.read_task_runs()) == 15
    store.close()


def _plain_run(name: str) -> object:
    from headwater.runs import TaskRun

    return TaskRun(f"id-{name}", "step", "abcd1234", name, {"x": 1}, flow_run_id="flow-1")


SIGPIPE_DEFAULT = textwrap.dedent('''
    import signal, sys, time
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as command line tools often do
    import headwater.plugins.sqlite_writers as sqlite_writers
    sqlite_writers.PROCESS_AT = 5
    from headwater import flow, get_store, task

    @task
    def step(i):
        return i

    @flow
    def many(n):
        return sum(step(i) for i in range(n))

    many(10)
    store = get_store()
    store.flush()
    while not store._writer.process.is_ready():
        time.sleep(0.01)
    store._writer.process._proc.kill()
    store._writer.process._proc.wait()
    many(50)
    store.flush()
    print("survived", len(store.read_task_runs()), flush=True)
''')


def test_a_dead_writer_process_does_not_kill_a_flow_process_that_restored_sigpipe(tmp_path, headwater_home):
    """Tools that restore the default SIGPIPE handler (to end quietly under `| head`)
    survive their writer process dying: the thread writes instead, nothing is lost."""
    script = tmp_path / "sigpipe.py"
    script.write_text(SIGPIPE_DEFAULT)
    env = _script_env(headwater_home)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["survived", "60"]


def test_many_open_files_do_not_break_the_writer_process(headwater_session, low_threshold, tmp_path):
    """A flow process with more than 1024 open descriptors (the limit of select())
    still gets its batches confirmed: flows return without store errors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip("cannot open more than 1024 files here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300) if hard == resource.RLIM_INFINITY
                                                else min(hard, max(soft, 1300)), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        store = headwater_session.store
        _ready_process(store)
        assert store._writer.process._stdout_fd > 1023
        doubles(100)
        store.flush()
        _histories_whole(store, 2)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("executable", ["/nonexistent/python", None, ""])
def test_without_a_usable_interpreter_the_thread_writes(headwater_session, low_threshold, monkeypatch, executable):
    """A writer process that cannot be started (no such interpreter), or an embedded
    interpreter with no sys.executable (no writer process is tried), changes nothing the
    user sees: every batch is written by the thread."""
    monkeypatch.setattr(writer_process.sys, "executable", executable)
    store = headwater_session.store
    doubles(5)
    doubles(200)
    store.flush()
    assert store._writer.process is None
    _histories_whole(store, 2)


def test_the_writer_process_is_out_of_reach_of_the_terminals_ctrl_c(headwater_session, low_threshold):
    """The child runs in a session of its own, so Ctrl-C in the terminal (sent to the
    flow's process group) reaches only the flow process, even while the child starts."""
    store = headwater_session.store
    process = _ready_process(store)
    assert os.getsid(process._proc.pid) != os.getsid(0)
    assert os.getpgid(process._proc.pid) != os.getpgid(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_lets_go_of_the_parents_writer_process(headwater_session, low_threshold):
    """A process forked from a flow process whose writer process runs closes its copies
    of the pipes: the parent's close() then ends the writer process at once."""
    store = headwater_session.store
    process = _ready_process(store)
    pid = os.fork()
    if pid == 0:
        code = 1
        signal.alarm(20)
        try:
            doubles(20)  # the child's own writer (thread: a fresh queue)
            store.close()
            code = 0
        finally:
            os._exit(code)
    try:
        doubles(20)
        start = time.monotonic()
        store.close()
        assert process._proc.poll() == 0 and time.monotonic() - start < 5
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_batch_the_dead_writer_process_committed_is_not_written_twice(headwater_session, low_threshold):
    """The writer process dies after committing a batch but before saying so: taking its
    work back, the thread skips that batch (no state recorded twice)."""
    from headwater.plugins.sqlite_rows import task_header

    store = headwater_session.store
    process = _ready_process(store)
    doubles(30)
    store.flush()
    committed = process._next - 1  # confirmed; now pretend its answer was lost
    process._unconfirmed[committed] = ([task_header(_plain_run("written-twice"))], [])
    process._proc.kill()
    process._proc.wait()
    doubles(10)
    store.flush()
    assert store._writer.process is None
    assert "written-twice" not in {r.name for r in store.read_task_runs()}
    _histories_whole(store, 3)


def test_batches_the_writer_process_confirmed_are_let_go_during_a_flow(headwater_session, low_threshold):
    """While a busy flow runs, the flow process keeps only the few batches the writer
    process has not confirmed yet (memory stays bounded by the queue, not the flow)."""
    from headwater import get_store

    store = headwater_session.store
    _ready_process(store)
    held: list[int] = []

    @task
    def watch(i: int) -> int:
        if i % 200 == 199:
            time.sleep(0.03)  # a few writer ticks
            held.append(len(get_store()._writer.process._unconfirmed))
        return i

    @flow
    def busy() -> int:
        return sum(watch(i) for i in range(3000))

    assert busy() == sum(range(3000))
    assert held and max(held) <= 4, held


def test_a_relative_store_path_survives_a_change_of_directory(tmp_path, monkeypatch, low_threshold):
    """HEADWATER_DATABASE_URL with a relative path, then os.chdir before a busy flow:
    the writer process (started after the chdir) writes to the store that was opened,
    not to a new file in the new directory."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    monkeypatch.setenv("HEADWATER_DATABASE_URL", "sqlite:///runs.db")
    monkeypatch.setenv("HEADWATER_HOME", str(tmp_path / "home"))
    with Session() as session:
        store = session.store  # opened here, in the first directory
        monkeypatch.chdir(second)
        process = _ready_process(store)
        doubles(300)
        store.flush()
        assert process._next > 0
        _histories_whole(store, 2)
    assert (first / "runs.db").exists() and not (second / "runs.db").exists()


@pytest.fixture
def start_child():
    """Start writer processes by hand (host "host", flow pid 1); each is ended after the
    test, also when an assertion failed first."""
    started: list[subprocess.Popen[bytes]] = []

    def start(db: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "headwater.plugins.sqlite_writer_process", str(db),
                                 "host", "1", "", "token"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout.readline() == b"ready\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def _framed(number: int, entries: list) -> bytes:
    import pickle

    data = pickle.dumps((number, 0, entries, []))
    return len(data).to_bytes(8, "little") + data


def test_batches_waiting_together_are_written_together_and_a_bad_one_fails_alone(tmp_path, start_child):
    """Batches that piled up in the pipe are written in one transaction (one answer
    each, all with the same order number), and if one of them cannot be written, the
    others still are: only that one is answered with an error, and of that one only the
    entry that cannot be written is missing."""
    from headwater.plugins.sqlite_rows import TASK_STATE, task_header

    db = tmp_path / "runs.db"
    SQLiteRunStore(db).close()
    proc = start_child(db)
    good = [[task_header(_plain_run(f"good-{n}-{i}")) for i in range(3)] for n in range(3)]
    proc.stdin.write(b"".join(_framed(n, entries) for n, entries in enumerate(good)))
    proc.stdin.flush()
    together = [proc.stdout.readline().split() for _ in range(3)]
    assert [(n, status) for n, status, _ in together] == [(b"0", b"ok"), (b"1", b"ok"), (b"2", b"ok")]
    assert len({seq for _, _, seq in together}) == 1  # one transaction
    # Every batch of the group is on record as written (a flow process taking its work
    # back after the child died would otherwise write some of them twice).
    conn = sqlite3.connect(db)
    recorded = {n for (n,) in conn.execute("SELECT number FROM writer_batches WHERE writer = ?",
                                           (writer_process.writer_id("host", 1, proc.pid, "token"),))}
    conn.close()
    assert recorded == {0, 1, 2}
    # A state without a type breaks the states table's NOT NULL: that entry fails alone.
    broken = (TASK_STATE, "id-broken", "task", None, "Broken", None, time.time(), None, None, None, None,
              None, 0, None, None)
    batches = [[task_header(_plain_run("before"))], [task_header(_plain_run("broken")), broken],
               [task_header(_plain_run("after"))]]
    proc.stdin.write(b"".join(_framed(n, entries) for n, entries in enumerate(batches, start=3)))
    proc.stdin.close()
    answers = proc.stdout.read().decode().splitlines()
    assert proc.wait(20) == 0
    assert [a.split()[:2] for a in answers] == [["3", "ok"], ["4", "error"], ["5", "ok"]]
    assert "NOT NULL" in answers[1] and "task run id-broken" in answers[1]
    store = SQLiteRunStore(db)
    names = {r.name for r in store.read_task_runs()}
    broken_states = store.read_states("id-broken")
    store.close()
    assert {"before", "broken", "after"} <= names  # the broken batch's good header is written
    assert len(names) == 12 and broken_states == []


def test_the_writer_process_checkpoints_once_the_flow_is_idle(tmp_path, start_child):
    """After a batch, once no other batch comes, the child copies the write-ahead log into
    the database file itself: a copy of the database file alone (no -wal) holds the rows."""
    import shutil

    from headwater.plugins.sqlite_rows import task_header

    db = tmp_path / "runs.db"
    SQLiteRunStore(db).close()
    proc = start_child(db)
    proc.stdin.write(_framed(0, [task_header(_plain_run(f"run-{i}")) for i in range(20)]))
    proc.stdin.flush()
    assert proc.stdout.readline().split()[:2] == [b"0", b"ok"]
    copy = tmp_path / "copy" / "runs.db"
    copy.parent.mkdir()

    def checkpointed() -> bool:
        shutil.copyfile(db, copy)  # the database file alone, as if the log were lost
        conn = sqlite3.connect(copy)
        try:
            return conn.execute("SELECT count(*) FROM task_runs").fetchone()[0] == 20
        except sqlite3.DatabaseError:  # copied while the checkpoint wrote it: look again
            return False
        finally:
            conn.close()

    _until(checkpointed, seconds=10)


def test_a_writer_process_that_fell_behind_does_not_deadlock_its_flow_process(tmp_path):
    """Another process holds the store's write lock while a flow sends thousands of
    small batches, then a large one: the child's stdin fills up and it owes more answers
    than its stdout holds. Once the lock is gone, every batch is written and confirmed:
    the flow process reads answers while it waits to send, so neither side waits for
    the other forever."""
    import threading

    from headwater.plugins.sqlite_rows import task_header
    from headwater.plugins.sqlite_writer import BatchWriter

    db = tmp_path / "runs.db"
    SQLiteRunStore(db).close()
    process = writer_process.start_writer_process(db, BatchWriter("host", os.getpid(), None))
    assert process is not None
    _until(process.is_ready)
    small = [[task_header(_plain_run(f"small-{i}"))] for i in range(7000)]
    large = [task_header(_plain_run(f"large-{i}-{'x' * 100}")) for i in range(20000)]  # > 1 MB
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    sent: list[bool] = []

    def flow_writer() -> None:  # as the store's writer thread would
        for batch in small:
            sent.append(process.send(batch, [], []))
        sent.append(process.send(large, [], []))
        sent.append(process.send([], [], [threading.Event()]))  # a flush: waits for every answer

    thread = threading.Thread(target=flow_writer, daemon=True)
    thread.start()
    time.sleep(2)  # the child waits for the lock; the pipes fill up
    lock.execute("ROLLBACK")
    lock.close()
    thread.join(30)
    try:
        assert not thread.is_alive(), "the flow process and its writer process wait for each other"
        assert sent == [True] * (len(small) + 2) and not process._unconfirmed
    finally:
        process.close()
    store = SQLiteRunStore(db)
    assert len(store.read_task_runs()) == len(small) + len(large)
    store.close()


def test_a_dead_writer_process_leaves_no_batch_records_behind(headwater_session, low_threshold):
    """A writer process killed after every batch of it was confirmed: taking its work
    back also deletes its records of written batches (a later child is never taken for
    it: its name carries a token of its own)."""
    store = headwater_session.store
    process = _ready_process(store)
    doubles(50)
    store.flush()
    name = writer_process.writer_id(store._rows.process[0], os.getpid(), process._proc.pid, process._token)
    count = "SELECT count(*) FROM writer_batches WHERE writer = ?"
    assert store._conn().execute(count, (name,)).fetchone()[0] > 0
    process._proc.kill()
    process._proc.wait()
    doubles(10)
    store.flush()
    assert store._writer.process is None
    assert store._conn().execute(count, (name,)).fetchone()[0] == 0
    _histories_whole(store, 3)


def test_the_write_ahead_log_stays_bounded_while_a_flow_never_pauses(tmp_path, start_child):
    """Small batches, one after another, never leaving the child idle: SQLite's own
    checkpoint still runs in the child, so the log file stays at a bounded size instead
    of growing with everything written."""
    from headwater.plugins.sqlite_rows import task_header

    db = tmp_path / "runs.db"
    SQLiteRunStore(db).close()
    proc = start_child(db)
    wal = Path(f"{db}-wal")
    largest = 0
    for number in range(1500):
        runs = [_plain_run(f"run-{number}-{i}-{'x' * 200}") for i in range(10)]
        proc.stdin.write(_framed(number, [task_header(r) for r in runs]))
        proc.stdin.flush()
        assert proc.stdout.readline().split()[:2] == [str(number).encode(), b"ok"]
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    # About 16 MB here (58 MB when only the idle checkpoint ran, and growing).
    limit = writer_process.AUTOCHECKPOINT_PAGES * 4096 + writer_process.JOURNAL_LIMIT
    assert largest < limit, f"write-ahead log reached {largest / 1e6:.0f} MB"
