"""Every text the run store records is written, whatever it holds: lone surrogates (what
``os.listdir`` gives for a file name that is not UTF-8) are stored as backslash escapes,
anything else (NUL included) exactly; and a row that cannot be written never takes other
rows, or another flow's runs, with it."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading

import pytest

import headwater.plugins.sqlite_store as sqlite_store
import headwater.plugins.sqlite_writers as sqlite_writers
from headwater import flow, get_run_logger, task
from headwater.errors import StoreError
from headwater.plugins.sqlite_rows import FLOW, flow_entry
from headwater.plugins.sqlite_writer import BatchWriter
from headwater.plugins.sqlite_writer_process import WriterProcess
from headwater.runs import FlowRun
from headwater.states import Completed, Running
from headwater.stores import CacheEntry

BAD = "report-\udcff.csv"  # os.listdir's name for the bytes b"report-\xff.csv"
STORED = "report-\\udcff.csv"  # how the store writes it: the surrogate as its escape


@task
def count(i: int) -> int:
    return i


@flow
def steady(n: int) -> int:
    return sum(count(i) for i in range(n))


@task(task_run_name="read " + BAD)
def read_report(name: str) -> str:
    get_run_logger().info("reading %s", name)
    raise OSError(f"cannot parse {name}")


@task(cache_key_fn=lambda context, parameters: "key-" + parameters["name"])
def cached(name: str) -> str:
    return name.upper()


@flow(flow_run_name="import " + BAD, description="Imports " + BAD)
def importer(name: str) -> str:
    try:
        read_report(name)
    except OSError:
        pass
    return cached(name)


def ready_writer_process(store: sqlite_store.SQLiteRunStore, monkeypatch: pytest.MonkeyPatch) -> WriterProcess:
    """The store's writer process, started by a flow run and ready to take batches.

    ``PROCESS_AT`` is lowered so that a small flow's batch is enough to start it."""
    monkeypatch.setattr(sqlite_writers, "PROCESS_AT", 5)
    steady(20)  # starts the writer process
    store.flush()
    process = store._writer.process
    assert process is not None
    for _ in range(500):
        if process.is_ready():
            break
        threading.Event().wait(0.02)
    assert process.is_ready()
    return process


def test_surrogates_everywhere_are_written_and_another_flow_loses_nothing(headwater_session):
    """A task raising with a file name that is not UTF-8 in its message, run names and a
    flow description holding it, a cache key made from it: the flow completes, every
    text is recorded with the surrogate escaped; a flow running meanwhile in another
    thread of the process has all of its 300 task runs."""
    store = headwater_session.store
    errors: list[BaseException] = []

    def other() -> None:
        try:
            steady(300)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    assert importer(BAD) == BAD.upper()
    thread.join()
    assert not errors
    store.flush()

    (steady_run,) = store.read_flow_runs(flow_name="steady")
    assert steady_run.state.is_completed()
    assert len(store.read_task_runs(flow_run_id=steady_run.id)) == 300

    (run,) = store.read_flow_runs(flow_name="importer")
    assert run.state.is_completed()
    assert run.name == "import " + STORED
    assert run.parameters == {"name": STORED}  # the same rule in JSON fields
    tasks = {t.task_name: t for t in store.read_task_runs(flow_run_id=run.id)}
    failed = tasks["read_report"]
    assert failed.name == "read " + STORED
    assert failed.state.is_failed() and STORED in failed.state.message
    assert STORED in store.read_states(failed.id)[-1].message
    assert any(f"reading {STORED}" == line["message"] for line in store.read_logs(task_run_id=failed.id))
    # A key with a lone surrogate is kept as its hash: no escaped text can equal it.
    key = "sha256:" + hashlib.sha256(("key-" + BAD).encode("utf-8", "surrogatepass")).hexdigest()
    assert tasks["cached"].cache_key == key
    (summary,) = [f for f in store.read_flows() if f.name == "importer"]
    assert summary.description == "Imports " + STORED

    # The cache entry is written and found again: the second call is a cache hit.
    assert [e.key for e in store.read_cache_entries()] == [key]
    assert importer(BAD) == BAD.upper()
    second = store.read_flow_runs(flow_name="importer")[0]
    hit = [t for t in store.read_task_runs(flow_run_id=second.id) if t.task_name == "cached"][0]
    assert hit.state.name == "Cached"


def test_the_writer_process_writes_bad_text_too(headwater_session, monkeypatch):
    """The same in a busy flow whose batches a writer process writes."""
    store = headwater_session.store
    process = ready_writer_process(store, monkeypatch)
    sent = process._next
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: steady(300))
    thread.start()
    try:
        importer(BAD)
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    thread.join()
    store.flush()
    assert not errors
    assert process._next > sent, "the batches did not go to the writer process"
    runs = {r.flow_name: r for r in store.read_flow_runs(limit=10)}
    assert runs["importer"].name == "import " + STORED and runs["importer"].state.is_completed()
    counts = [len(store.read_task_runs(flow_run_id=r.id)) for r in store.read_flow_runs(flow_name="steady")]
    assert sorted(counts) == [20, 300]


TEXTS = ["", "plain", "with\x00nul", "\x00", "tab\tnewline\n", "é ü 中文 🎉", "\ud7ff\ue000\uffff",
         "\U0010ffff", "quote ' and \"", "back\\slash \\udcff", "a" * 5_000]


def _random_text(rng: random.Random) -> str:
    """Any text without lone surrogates: ASCII, controls, NUL, all planes."""
    pools = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(rng.randrange(0, 40)):
        low, high = rng.choice(pools)
        out.append(chr(rng.randint(low, high)))
    return "".join(out)


def test_text_without_surrogates_round_trips_exactly(headwater_session):
    """Text without lone surrogates comes back exactly as recorded (NUL included), in
    run names, flow names, states' messages and log lines."""
    store = headwater_session.store
    rng = random.Random(13)
    texts = TEXTS + [_random_text(rng) for _ in range(300)]
    runs = []
    for i, text in enumerate(texts):
        run = FlowRun(f"run-{i}", "flow " + text, text, {"p": text}, frozenset([text]))
        store.create_flow_run(run)
        store.record_state(run, Running(message=text))
        run.state = Completed(message=text)
        store.record_state(run, run.state)
        store.record_logs([(run.id, None, 1.0, "INFO", "headwater.flow_runs", text)])
        runs.append(run)
    store.flush()
    for run, text in zip(runs, texts):
        read = store.read_flow_run(run.id)
        assert (read.name, read.flow_name, read.parameters, sorted(read.tags)) == (text, "flow " + text, {"p": text}, [text])
        assert read.state.message == text
        assert [s.message for s in store.read_states(run.id)] == [text, text]
        assert [line["message"] for line in store.read_logs(flow_run_id=run.id)] == [text]


def test_lone_surrogates_are_stored_as_their_escapes(headwater_session):
    """The rule for text with lone surrogates: each becomes its backslash escape, every
    other character is kept."""
    store = headwater_session.store
    run = FlowRun("run-s", "f", "a\ud800b\x00é\udfff")
    store.create_flow_run(run)
    run.state = Completed(message="\udcff")
    store.record_state(run, run.state)
    store.flush()
    read = store.read_flow_run("run-s")
    assert read.name == "a\\ud800b\x00é\\udfff"
    assert read.state.message == "\\udcff"


def test_a_cache_entry_with_surrogates_is_written_and_found(headwater_session):
    store = headwater_session.store
    store.write_cache_entry(CacheEntry("k-\udcff", "t\udcff", "run-1", "loc-\udcff", "pickle", 1.0, None, 3))
    entry = store.read_cache_entry("k-\udcff")
    assert entry is not None and entry.key == "k-\\udcff" and entry.location == "loc-\\udcff"
    assert [e.key for e in store.delete_cache_entries(task_name="t\udcff")] == ["k-\\udcff"]
    assert store.read_cache_entries() == []


def test_a_row_that_cannot_be_written_is_reported_and_the_others_land(tmp_path):
    """A record no form of which SQLite takes (a flow run without a name) fails alone:
    every other row of its batch is written, and the error names the record."""
    path = tmp_path / "runs.db"
    store = sqlite_store.SQLiteRunStore(path)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    writer = BatchWriter("host", 1, None)
    good = [flow_entry(FlowRun(f"ok-{i}", "f", f"ok {i}"), None) for i in range(7)]
    nameless = FlowRun("bad", "f", "x")
    nameless.name = None
    bad = flow_entry(nameless, None)
    assert bad[0] == FLOW
    logs = [("ok-0", None, 1.0, "INFO", "x", "line \udcff")]
    with pytest.raises(StoreError, match=r"1 record\(s\) could not be written \(flow run None \(bad\)\)"):
        writer.write(conn, good[:3] + [bad] + good[3:], logs)
    names = sorted(name for (name,) in conn.execute("SELECT name FROM flow_runs"))
    assert names == sorted(f"ok {i}" for i in range(7))
    assert conn.execute("SELECT message FROM logs").fetchall() == [("line \\udcff",)]


def test_a_state_message_that_is_not_text_is_written_as_text(headwater_session):
    store = headwater_session.store
    run = FlowRun("run-o", "f", "named")
    store.create_flow_run(run)
    run.state = Completed(message=ValueError("not text"))  # type: ignore[arg-type]
    store.record_state(run, run.state)
    store.flush()
    assert store.read_flow_run("run-o").state.message == "not text"


def test_a_value_the_writer_process_cannot_be_sent_is_written_as_text(headwater_session, monkeypatch):
    """A batch for the writer process holding a value that cannot be pickled (a state
    message that is a lock): the batch is sent with the value as text, nothing lost."""
    store = headwater_session.store
    process = ready_writer_process(store, monkeypatch)
    sent = process._next
    runs = [FlowRun(f"lock-{i}", "f", f"run {i}") for i in range(10)]
    for run in runs:
        store.create_flow_run(run)
        run.state = Completed(message=threading.Lock() if run.id == "lock-3" else "fine")  # type: ignore[arg-type]
        store.record_state(run, run.state)
    store.flush()
    assert process._next > sent and store._writer.process is process
    messages = {run.id: store.read_flow_run(run.id).state.message for run in runs}
    assert messages.pop("lock-3").startswith("<unlocked _thread.lock object")
    assert set(messages.values()) == {"fine"}
