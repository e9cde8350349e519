"""Retrying a flow run from where it failed (``headwater.retry_run``): the same run goes on,
completed task runs with persisted results are reused, the rest runs again."""

from __future__ import annotations

import asyncio
import collections
import os
import sqlite3

import pytest

import headwater
from headwater import flow, task
from headwater.retry import RetryError

CALLS: collections.Counter = collections.Counter()
BROKEN: set[str] = set()  # names of the steps that fail while listed


@pytest.fixture(autouse=True)
def _fresh():
    CALLS.clear()
    BROKEN.clear()
    yield


@task
def step(name: str, value: int) -> int:
    CALLS[name] += 1
    if name in BROKEN:
        raise RuntimeError(f"step {name} is broken")
    return value + 1


@flow(persist_result=True)
def four_steps(start: int = 0) -> int:
    a = step("one", start)
    b = step("two", a)
    c = step("three", b)
    return step("four", c)


@flow
def four_steps_unpersisted(start: int = 0) -> int:
    a = step("one", start)
    b = step("two", a)
    c = step("three", b)
    return step("four", c)


def names(store, run_id):
    return [s.name for s in store.read_states(run_id)]


def test_a_retry_reuses_what_completed_and_runs_the_rest(headwater_session):
    BROKEN.add("three")
    failed = four_steps(1, return_state=True)
    assert failed.is_failed()
    store = headwater_session.store
    run = store.read_flow_runs()[0]
    BROKEN.clear()

    state = headwater.retry_run(run.id)

    assert state.is_completed() and state.result() == 5
    assert CALLS == {"one": 1, "two": 1, "three": 2, "four": 1}
    again = store.read_flow_run(run.id)
    assert again.state.is_completed() and again.run_count == 2 and again.name == run.name
    assert len(store.read_flow_runs()) == 1  # the same run, no new one
    assert names(store, run.id) == ["Pending", "Running", "Failed", "AwaitingRetry", "Retrying", "Completed"]
    reused = [t for t in store.read_task_runs(flow_run_id=run.id) if t.state.name == "Cached"]
    assert len(reused) == 2
    earlier = {t.id: t.name for t in store.read_task_runs(flow_run_id=run.id)}
    for t in reused:  # each names the run it reused
        history = store.read_states(t.id)
        assert earlier[history[-1].state_details.reused_from] in history[-1].message


SOURCE = {"offset": 0}  # what the flow reads besides its parameters (a file, a table)


@flow(persist_result=True)
def reads_a_source() -> int:
    a = step("one", 1)
    b = step("two", a + SOURCE["offset"])
    c = step("three", 7)
    return step("four", b + c)


def test_a_retried_flow_whose_inputs_changed_runs_the_changed_tasks(headwater_session):
    BROKEN.add("four")
    run_id = reads_a_source(return_state=True).state_details.flow_run_id
    BROKEN.clear()
    SOURCE["offset"] = 10
    try:
        state = headwater.retry_run(run_id)
    finally:
        SOURCE["offset"] = 0
    assert state.is_completed() and state.result() == 22
    assert CALLS == {"one": 1, "two": 2, "three": 1, "four": 2}


@task
def double(x: int) -> int:
    CALLS[f"double({x})"] += 1
    if f"double#{CALLS[f'double({x})']}" in BROKEN:
        raise RuntimeError("broken call")
    return 2 * x


@flow(persist_result=True)
def loop(times: int = 3) -> list[int]:
    results = [double(2) for _ in range(times)]
    CALLS["after-loop"] += 1
    if "after" in BROKEN:
        raise RuntimeError("after the loop")
    return results


def test_repeated_calls_with_the_same_inputs_match_one_to_one(headwater_session):
    BROKEN.add("double#3")  # the third call fails, the first two completed
    run_id = loop(3, return_state=True).state_details.flow_run_id
    BROKEN.clear()
    state = headwater.retry_run(run_id)
    assert state.is_completed() and state.result() == [4, 4, 4]
    assert CALLS["double(2)"] == 4  # 3 in the first attempt, only the third again


def test_a_loop_that_completed_is_reused_whole_then_force_reuses_everything(headwater_session):
    BROKEN.add("after")
    run_id = loop(3, return_state=True).state_details.flow_run_id
    BROKEN.clear()
    assert headwater.retry_run(run_id).is_completed()
    assert CALLS["double(2)"] == 3 and CALLS["after-loop"] == 2
    with pytest.raises(RetryError, match="completed"):
        headwater.retry_run(run_id)
    assert headwater.retry_run(run_id, force=True).is_completed()
    assert CALLS["double(2)"] == 3 and CALLS["after-loop"] == 3
    assert headwater_session.store.read_flow_run(run_id).run_count == 3


def test_without_persisted_results_everything_runs_again_and_it_says_so(headwater_session, caplog):
    BROKEN.add("three")
    run_id = four_steps_unpersisted(1, return_state=True).state_details.flow_run_id
    BROKEN.clear()
    state = headwater.retry_run(run_id)
    assert state.is_completed()
    assert CALLS == {"one": 2, "two": 2, "three": 2, "four": 1}
    assert "2 task run(s) that completed in an earlier attempt run again: 'step-" in caplog.text
    assert "kept no result (persist_result=True on the flow or the task" in caplog.text


def test_the_persist_results_setting_persists_every_task(headwater_session, monkeypatch):
    monkeypatch.setenv("HEADWATER_PERSIST_RESULTS", "true")
    with headwater.Session() as session:
        BROKEN.add("three")
        run_id = four_steps_unpersisted(1, return_state=True).state_details.flow_run_id
        BROKEN.clear()
        assert headwater.retry_run(run_id).is_completed()
        assert CALLS == {"one": 1, "two": 1, "three": 2, "four": 1}
        assert session.store.read_flow_run(run_id).state.is_completed()


def test_bad_runs_are_refused_with_one_clear_error(headwater_session):
    with pytest.raises(RetryError, match="no flow run 'no-such-run'"):
        headwater.retry_run("no-such-run")

    @flow(persist_result=True)
    def inner_flow():
        step("x", 1)
        raise RuntimeError("fails")

    run_id = inner_flow(return_state=True).state_details.flow_run_id
    with pytest.raises(RetryError, match="inside a function.*flow=my_flow"):
        headwater.retry_run(run_id)
    with pytest.raises(RetryError, match="is a run of flow 'inner-flow', not of 'four-steps'"):
        headwater.retry_run(run_id, flow=four_steps)
    assert headwater.retry_run(run_id, flow=inner_flow).is_failed()  # given the flow, it runs
    assert CALLS["x"] == 1  # ... and reuses the completed task run


def test_a_running_flow_run_cannot_be_retried(headwater_session):
    seen = []

    @flow
    def retries_itself():
        from headwater.runtime import flow_run

        try:
            headwater.retry_run(flow_run.id)
        except RetryError as exc:
            seen.append(str(exc))

    retries_itself()
    assert seen and "is Running, not failed" in seen[0]


class Opaque:
    """A parameter value the run store keeps only as text."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Opaque({self.n})"


@flow(validate_parameters=False)
def takes_an_object(thing=None):
    raise RuntimeError("always")


@flow(validate_parameters=False, persist_result=True)
def takes_an_object_persisted(thing=None):
    CALLS[f"thing={thing.n}"] += 1
    if "object" in BROKEN:
        raise RuntimeError("broken")
    return thing.n


def test_parameters_come_back_exactly_or_the_retry_says_why_not(headwater_session):
    run_id = takes_an_object(Opaque(3), return_state=True).state_details.flow_run_id
    with pytest.raises(RetryError, match=r"its parameters \('thing'\) were not recorded exactly"):
        headwater.retry_run(run_id)
    BROKEN.add("object")
    run_id = takes_an_object_persisted(Opaque(4), return_state=True).state_details.flow_run_id
    BROKEN.clear()
    state = headwater.retry_run(run_id)
    assert state.is_completed() and state.result() == 4 and CALLS["thing=4"] == 2


@flow  # persists as its parent does
def child(n: int) -> int:
    return step(f"child-{n}", n)


@flow(persist_result=True)
def parent() -> int:
    a = child(1)
    b = child(2)
    return a + b


def test_subflows_completed_are_reused_whole_and_failed_ones_retried(headwater_session):
    BROKEN.add("child-2")
    run_id = parent(return_state=True).state_details.flow_run_id
    store = headwater_session.store
    children = {c.parameters["n"]: c for c in store.read_flow_runs(parent_flow_run_id=run_id)}
    BROKEN.clear()
    state = headwater.retry_run(run_id)
    assert state.is_completed() and state.result() == 5
    assert CALLS == {"child-1": 1, "child-2": 2}
    after = store.read_flow_runs(parent_flow_run_id=run_id)
    assert sorted(c.id for c in after) == sorted(c.id for c in children.values())  # no new subflow run
    retried = store.read_flow_run(children[2].id)
    assert retried.state.is_completed() and retried.run_count == 2
    assert store.read_flow_run(children[1].id).run_count == 1


@flow(persist_result=True)
async def async_steps() -> int:
    a = step("a1", 1)
    return step("a2", a)


def test_an_async_flow_is_retried_too(headwater_session):
    BROKEN.add("a2")
    state = asyncio.run(async_steps(return_state=True))
    BROKEN.clear()
    assert headwater.retry_run(state.state_details.flow_run_id).result() == 3
    assert CALLS == {"a1": 1, "a2": 2}


def test_a_store_of_schema_1_is_migrated_and_its_runs_read_as_before(tmp_path):
    from headwater.plugins.sqlite_store import SCHEMA_VERSION, SQLiteRunStore

    path = tmp_path / "old.db"
    store = SQLiteRunStore(path)
    store.close()
    conn = sqlite3.connect(path)
    for table, column in (("flow_runs", "entry_point"), ("flow_runs", "inputs_hash"),
                          ("flow_runs", "parameters_location"), ("flow_runs", "result_location"),
                          ("task_runs", "inputs_hash")):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("INSERT INTO flow_runs (id, name, flow_name, state_type, state_name, created) "
                 "VALUES ('old1', 'old-run', 'old-flow', 'FAILED', 'Failed', 1.0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteRunStore(path)
    try:
        run = store.read_flow_run("old1")
        assert run.name == "old-run" and run.entry_point is None
    finally:
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert "inputs_hash" in {row[1] for row in conn.execute("PRAGMA table_info(task_runs)")}
    conn.close()


def test_the_cli_runs_in_the_first_attempts_directory(headwater_session, tmp_path, capsys):
    from headwater.cli import main

    BROKEN.add("three")
    run_id = four_steps(0, return_state=True).state_details.flow_run_id
    BROKEN.clear()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    here = os.getcwd()
    os.chdir(elsewhere)
    try:
        code = main(["runs", "retry", run_id[:8]])
        assert os.getcwd() == here  # the first attempt ran here
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    assert code == 0 and "Completed(" in out.out and "where flow run" in out.err
    assert main(["runs", "retry", run_id]) == 1
    assert "completed" in capsys.readouterr().err


def test_of_two_retries_started_at_once_the_second_changes_nothing(headwater_session, tmp_path):
    """The second finds the run claimed by the first's live process: a RetryError, and
    not one row or state of the run is written."""
    import subprocess
    import sys

    from headwater.plugins.sqlite_liveness import process_start_token
    from headwater.retry import prepare, run_again

    BROKEN.add("three")
    run_id = four_steps(1, return_state=True).state_details.flow_run_id
    BROKEN.clear()
    flow_obj, run, parameters = prepare(run_id)  # both retries got this far
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store = headwater_session.store
        conn = sqlite3.connect(store.path)
        conn.execute("UPDATE flow_runs SET state_type = 'RUNNING', state_name = 'Retrying', pid = ?, "
                     "pid_start = ? WHERE id = ?", (other.pid, process_start_token(other.pid), run_id))
        conn.commit()
        before = len(store.read_states(run_id))
        with pytest.raises(RetryError, match=f"being run by process {other.pid}"):
            run_again(flow_obj, run, parameters)
        store.flush()
        assert len(store.read_states(run_id)) == before
        assert conn.execute("SELECT state_name, pid FROM flow_runs WHERE id = ?", (run_id,)).fetchone() == \
            ("Retrying", other.pid)
        conn.close()
    finally:
        other.kill()
        other.wait()
    assert CALLS == {"one": 1, "two": 1, "three": 1}  # nothing ran


@task
def square(x: int) -> int:
    CALLS[f"square({x})"] += 1
    if f"square({x})" in BROKEN:
        raise RuntimeError(f"square({x}) is broken")
    return x * x


@task
def total(values: list[int]) -> int:
    CALLS["total"] += 1
    return sum(values)


@flow(persist_result=True)
def mapped(n: int = 4) -> int:
    squares = square.map(range(n))
    return total.submit(squares).result()


@pytest.mark.parametrize("runner", ["concurrent", "sequential"])
def test_submitted_and_mapped_runs_are_matched_with_either_local_runner(headwater_session, runner):
    BROKEN.add("square(2)")
    run_id = mapped.with_options(task_runner=runner)(4, return_state=True).state_details.flow_run_id
    BROKEN.clear()
    state = headwater.retry_run(run_id, flow=mapped.with_options(task_runner=runner))
    assert state.is_completed() and state.result() == 0 + 1 + 4 + 9
    assert CALLS == {"square(0)": 1, "square(1)": 1, "square(2)": 2, "square(3)": 1, "total": 1}
    # A second retry (forced) reuses every one, the retried ones included.
    assert headwater.retry_run(run_id, force=True, flow=mapped.with_options(task_runner=runner)).result() == 14
    assert CALLS == {"square(0)": 1, "square(1)": 1, "square(2)": 2, "square(3)": 1, "total": 1}


@flow(persist_result=True, name="renamed-parameter")
def before_rename(n: int = 1) -> int:
    raise RuntimeError("fails")


@flow(persist_result=True, name="renamed-parameter")
def after_rename(count: int = 1) -> int:
    return count


def test_a_flow_whose_parameters_changed_is_refused_before_anything_runs(headwater_session):
    run_id = before_rename(3, return_state=True).state_details.flow_run_id
    with pytest.raises(RetryError, match=r"has no parameter 'n' any more \(the run was called with n=3; its "
                                         r"parameters now: count\)"):
        headwater.retry_run(run_id, flow=after_rename)
    assert headwater_session.store.read_flow_run(run_id).run_count == 1


def test_an_async_flow_is_retried_from_a_running_event_loop_with_the_async_api(headwater_session):
    BROKEN.add("a2")
    run_id = asyncio.run(async_steps(return_state=True)).state_details.flow_run_id
    BROKEN.clear()

    async def main():
        with pytest.raises(RetryError, match="await headwater.retry_run_async"):
            headwater.retry_run(run_id)
        return await headwater.retry_run_async(run_id)

    assert asyncio.run(main()).result() == 3
    assert CALLS == {"a1": 1, "a2": 2}


@task(cache_key_fn=lambda context, parameters: f"shared-{parameters['x']}", persist_result=True)
def shared(x: int) -> int:
    CALLS["shared"] += 1
    return x * 10


@flow(persist_result=True)
def uses_the_cache(x: int = 7) -> int:
    value = shared(x)
    return step("after", value)


def test_a_cache_hit_of_an_earlier_attempt_is_reused_too(headwater_session):
    """A task run that was a cache hit kept its result: a retry reuses it even after
    the cache entry is gone (``headwater cache clear`` of the entry alone)."""
    assert uses_the_cache() == 71  # fills the cache
    BROKEN.add("after")
    run_id = uses_the_cache(return_state=True).state_details.flow_run_id  # a cache hit, then fails
    BROKEN.clear()
    headwater_session.store.delete_cache_entries(task_name="shared")  # the entry, not its file
    state = headwater.retry_run(run_id)
    assert state.result() == 71
    assert CALLS["shared"] == 1
