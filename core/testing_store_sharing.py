"""The run-store conformance tests of a store shared by threads, handles and processes:
writers at once lose nothing, what was flushed is there for another handle, a flow with
cached tasks runs against the store, a flow call that returned in a child process has
every state stored, and a child killed with ``kill -9`` reads as Crashed.

A part of ``headwater.testing_stores.RunStoreConformance`` (a mixin: the ``store``
fixture and the second handle and URL it gives come from there).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from .flows import flow
from .plugin_manager import hookimpl
from .runs import FlowRun
from .session import Session
from .states import Completed, Running, StateType
from .stores import CacheEntry, FlowRunFilter, RunStore, RunWriter
from .task_lines import marker_row
from .tasks import task
from .testing_store_records import at, logged_flow_run, move, new_flow_run, new_task_run

__all__ = ["SharedStoreTests"]

#: How long a child process of the suite may take to start and reach a point, in seconds.
CHILD_TIMEOUT = 90.0

#: The flow the subprocess tests run, with the store under test (HEADWATER_DATABASE_URL).
#: argv: the mode ("complete" or "hang") and a directory for the files it leaves.
CHILD_SCRIPT = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path

    from headwater import flow, task
    from headwater.runtime import flow_run

    mode, gate = sys.argv[1], Path(sys.argv[2])


    @task(cache_key_fn=lambda context, parameters: f"conformance-child-{parameters['x']}")
    def square(x):
        return x * x


    @task
    def add(a, b):
        return a + b


    @task
    def hang(total):
        (gate / "running").write_text("yes")
        time.sleep(300)
        return total


    @flow(flow_run_name="conformance-subflow")
    def hanging(total):
        return hang(total)


    @flow(flow_run_name="conformance-child")
    def child(mode):
        (gate / "id").write_text(flow_run.id)
        squares = [future.result() for future in [square.submit(x) for x in range(3)]]
        total = add(squares[0], add(squares[1], squares[2]))
        if mode == "hang":
            hanging(total)
        return total


    state = child(mode, return_state=True)
    (gate / "returned").write_text(json.dumps([state.name, state.result(raise_on_failure=False)]))
    # No exit handlers, no final flush: what is stored now is what the flow call stored.
    os._exit(0)
''')


class SharedStoreTests:
    """The tests of a run store shared by threads, handles and processes (see the module)."""

    #: Settings (environment variables) added for the child processes of the suite: for
    #: example a short heartbeat threshold, so a killed run is shown Crashed sooner.
    crash_env: dict[str, str] = {}
    #: How long after a process is killed with ``kill -9`` its unfinished runs may still
    #: read as running, in seconds; by then every read must show them Crashed.
    crash_seconds: float = 0.0
    #: Threads in the concurrent-writer tests, and task runs each of them records.
    writers = 8
    runs_per_writer = 40

    # Given by RunStoreConformance.
    _store_tmp_path: Path
    _opened_handles: list[Any]
    _closed_handles: list[Any]
    _second_handle: Callable[[RunStore], RunStore]
    _url_for_children: Callable[[RunStore], str]
    open_again: Callable[[RunStore, Path], "RunStore | None"]

    # -- concurrency ---------------------------------------------------------------------------

    @staticmethod
    def _run_threads(target: Callable[[int], None], count: int) -> None:
        errors: list[BaseException] = []
        start = threading.Barrier(count)

        def run(i: int) -> None:
            try:
                start.wait()
                target(i)
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a writer thread hung"
        assert not errors, f"a thread of the test failed: {errors!r}"

    def test_threads_recording_task_runs_at_once_lose_nothing(self, store: RunStore) -> None:
        run = new_flow_run(store, "conformance-busy", "busy", started=time.time())

        def record(i: int) -> None:
            for n in range(self.runs_per_writer):
                task_run = new_task_run(store, run, f"conformance-w{i}-{n:03d}", f"work-{i}-{n}", final=Completed())
                if n % 10 == 0:
                    store.write_cache_entry(CacheEntry(f"w{i}-{n}", "work", task_run.id, "loc", "json", time.time()))
                    store.record_logs([(run.id, task_run.id, time.time(), "INFO", "user", f"from {i}-{n}")])

        self._run_threads(record, self.writers)
        move(store, run, Completed())
        store.flush()
        expected = self.writers * self.runs_per_writer
        task_runs = store.read_task_runs(flow_run_id=run.id)
        assert len(task_runs) == expected, f"{expected - len(task_runs)} of {expected} task runs were lost"
        assert all(t.state is not None and t.state.is_completed() for t in task_runs)
        histories = store.read_task_run_states(run.id)
        assert sum(len(h) for h in histories.values()) == 3 * expected, "states were lost"
        assert len(store.read_cache_entries()) == self.writers * ((self.runs_per_writer + 9) // 10)
        user_lines = [x for x in store.read_logs(flow_run_id=run.id, limit=10**6) if x["logger"] == "user"]
        assert len(user_lines) == self.writers * ((self.runs_per_writer + 9) // 10)
        assert store.count_task_run_states(run.id).by_type == {"COMPLETED": expected}

    def test_reads_while_threads_write_never_fail(self, store: RunStore) -> None:
        # The dashboard and `headwater runs` read while flows record: a read sees some
        # consistent moment, never an error.
        run = new_flow_run(store, "conformance-watched", "watched", started=time.time())
        store.record_logs([marker_row(run.id, time.time())])
        writing = threading.Semaphore(0)  # released once by each writer when it is done
        seen: list[int] = []

        def read() -> None:
            finished = 0
            while finished < 3:
                task_runs = store.read_task_runs(flow_run_id=run.id)
                store.read_flow_runs()
                store.read_cache_entries()
                store.read_logs(flow_run_id=run.id, limit=10**6)
                store.count_task_run_states(run.id)
                store.read_task_run_page(run.id, offset=len(task_runs) // 2, limit=10)
                seen.append(len(task_runs))
                while writing.acquire(blocking=False):
                    finished += 1

        def write(i: int) -> None:
            if i == 0:
                return read()
            try:
                for n in range(self.runs_per_writer):
                    new_task_run(store, run, f"conformance-r{i}-{n:03d}", f"work-{i}-{n}", final=Completed())
                    store.write_cache_entry(CacheEntry(f"r{i}-{n}", "work", None, "loc", "json", time.time()))
                    store.record_logs([(run.id, None, time.time(), "INFO", "user", f"from {i}-{n}")])
                    new_flow_run(store, f"conformance-r{i}-{n:03d}-flow", f"sub-{i}-{n}", started=time.time(),
                                 parent=run, final=Completed())
            finally:
                writing.release()

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # threads take turns often: a race shows up at once
        try:
            self._run_threads(write, 4)
        finally:
            sys.setswitchinterval(switch)
        store.flush()
        assert len(store.read_task_runs(flow_run_id=run.id)) == 3 * self.runs_per_writer

    def test_two_handles_writing_at_once_lose_nothing(self, store: RunStore) -> None:
        handles = [store, self._second_handle(store)]
        if handles[1] is store:
            pytest.skip("open_again gives the same handle: the threads test covers it")

        def record(i: int) -> None:
            writer = handles[i % 2]
            run = new_flow_run(writer, f"conformance-h{i}", f"handle-{i}", started=time.time())
            for n in range(self.runs_per_writer):
                new_task_run(writer, run, f"conformance-h{i}-{n:03d}", f"work-{n}", final=Completed())
                if n % 10 == 0:
                    writer.write_cache_entry(CacheEntry(f"h{i}-{n}", "work", None, "loc", "json", time.time()))
            move(writer, run, Completed())
            writer.flush()

        self._run_threads(record, 4)
        for reader in (*handles, self._second_handle(store)):
            runs = reader.read_flow_runs(limit=100)
            assert sorted(r.name for r in runs) == [f"handle-{i}" for i in range(4)]
            assert all(r.state.is_completed() for r in runs)
            for run in runs:
                task_runs = reader.read_task_runs(flow_run_id=run.id)
                assert len(task_runs) == self.runs_per_writer and all(t.state.is_completed() for t in task_runs)
            assert len(reader.read_cache_entries()) == 4 * ((self.runs_per_writer + 9) // 10)

    # -- durability ----------------------------------------------------------------------------

    def test_after_flush_everything_is_seen_by_another_handle(self, store: RunStore) -> None:
        run, tasks = logged_flow_run(store)  # flushes
        other = self._second_handle(store)
        got = other.read_flow_run(run.id)
        assert got is not None and got.state.name == "Failed" and got.state.message == "save failed"
        assert [s.name for s in other.read_states(run.id)] == ["Pending", "Running", "Failed"]
        assert [t.id for t in other.read_task_runs(flow_run_id=run.id)] == [t.id for t in tasks]
        assert [s.name for s in other.read_states(tasks[3].id)] == ["Pending", "Running", "Failed"]
        assert [x["message"] for x in other.read_logs(flow_run_id=run.id, limit=10**6)] == [
            x["message"] for x in store.read_logs(flow_run_id=run.id, limit=10**6)]

    def test_what_a_closed_store_wrote_is_kept(self, store: RunStore) -> None:
        other = self._second_handle(store)
        if other is store:
            pytest.skip("open_again gives the same handle: nothing to reopen after close")
        self._opened_handles.remove(other)
        other.close()  # the records outlive a handle
        writer = self.open_again(store, self._store_tmp_path)
        run = new_flow_run(writer, "conformance-closed", "closed", started=time.time(), final=Completed())
        new_task_run(writer, run, "conformance-closed-task", "load-0", final=Completed())
        writer.close()  # close() flushes
        got = store.read_flow_run(run.id)
        assert got is not None and got.state.is_completed(), "what a closed handle wrote was lost"
        assert [t.state.name for t in store.read_task_runs(flow_run_id=run.id)] == ["Completed"]

    # -- with the engine -----------------------------------------------------------------------

    def test_a_flow_with_cached_tasks_runs_against_the_store(self, store: RunStore, tmp_path: Path) -> None:
        calls: list[int] = []
        attempts: list[int] = []

        class UseStore:
            @hookimpl(tryfirst=True)
            def headwater_make_run_store(self, session: Any) -> RunStore:
                return store

        @task(cache_key_fn=lambda context, parameters: f"conformance-square-{parameters['x']}")
        def square(x: int) -> int:
            calls.append(x)
            return x * x

        @task(retries=1, retry_delay_seconds=0)
        def flaky(x: int) -> int:
            attempts.append(x)
            if len(attempts) % 2:
                raise ValueError("every first attempt fails")
            return x

        @flow(flow_run_name="inner-run")
        def inner(x: int) -> int:
            return square(x)

        @flow(flow_run_name="outer-run")
        def outer() -> list[Any]:
            total = sum(future.result() for future in [square.submit(x) for x in (2, 3)])
            again = square(2, return_state=True)
            return [total, again.name, inner(4), flaky(5)]

        env = {"HEADWATER_HOME": str(tmp_path / "home"), "HEADWATER_DATABASE_URL": "memory://"}
        self._closed_handles.append(store)  # by the session, as a session closes the store it uses
        with Session(plugins=[UseStore()], env=env):
            assert outer() == [13, "Cached", 16, 5]
            assert sorted(calls) == [2, 3, 4], "a cached task ran again"
            (outer_run,) = store.read_flow_runs(flow_name="outer")
            (child,) = store.read_flow_runs(flow_name="inner")
            assert outer_run.name == "outer-run" and outer_run.state.is_completed()
            assert child.parent_flow_run_id == outer_run.id and child.state.is_completed()
            assert [s.name for s in store.read_states(outer_run.id)] == ["Pending", "Running", "Completed"]
            task_runs = store.read_task_runs(flow_run_id=outer_run.id)
            assert [t.task_name for t in task_runs] == ["square", "square", "square", "flaky"]
            assert [t.state.name for t in task_runs][2:] == ["Cached", "Completed"]
            assert task_runs[3].run_count == 2
            assert [s.type for s in store.read_states(task_runs[3].id)] == [
                StateType.PENDING, StateType.RUNNING, StateType.SCHEDULED, StateType.RUNNING, StateType.COMPLETED]
            entry = store.read_cache_entry("conformance-square-2")
            assert entry is not None and entry.task_name == "square"
            assert entry.task_run_id in {t.id for t in task_runs}
            assert any(line["message"] and "Created task run" in line["message"]
                       for line in store.read_logs(flow_run_id=outer_run.id, limit=10**6))
            assert store.count_task_run_states(outer_run.id).by_name == {"Cached": 1, "Completed": 3}
            assert {"outer", "inner"} <= {s.name for s in store.read_flows()}
            assert outer() == [13, "Cached", 16, 5]
            second = store.read_flow_runs(flow_name="outer")[0]
            assert second.id != outer_run.id
            assert [t.state.name for t in store.read_task_runs(flow_run_id=second.id)][:3] == ["Cached"] * 3
        assert sorted(calls) == [2, 3, 4], "the second flow run's cached tasks ran again"

    # -- child processes -----------------------------------------------------------------------

    def _start_child(self, store: RunStore, mode: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
        url = self._url_for_children(store)
        gate = tmp_path / f"child-{mode}"
        gate.mkdir()
        script = tmp_path / "conformance_child.py"
        script.write_text(CHILD_SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        env.update(HEADWATER_HOME=str(tmp_path / f"home-{mode}"), HEADWATER_DATABASE_URL=url,
                   HEADWATER_LOGGING_LEVEL="WARNING", **self.crash_env)
        child = subprocess.Popen([sys.executable, str(script), mode, str(gate)], env=env, cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return child, gate

    @staticmethod
    def _wait_for(child: subprocess.Popen[str], done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not done():
            if child.poll() is not None and not done():
                output = child.stdout.read() if child.stdout else ""
                raise AssertionError(f"the child process exited ({child.returncode}) before {what}:\n{output}")
            if time.monotonic() > deadline:
                child.kill()
                raise AssertionError(f"the child process did not get to {what} in {CHILD_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def test_a_flow_call_that_returned_has_every_state_stored(self, store: RunStore, tmp_path: Path) -> None:
        child, gate = self._start_child(store, "complete", tmp_path)
        try:
            output, _ = child.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            raise AssertionError("the child process did not finish its flow") from None
        assert child.returncode == 0 and (gate / "returned").exists(), f"the child failed:\n{output}"
        assert json.loads((gate / "returned").read_text()) == ["Completed", 5]
        # The child left with os._exit, right after the call: nothing was written after it.
        run = store.read_flow_run((gate / "id").read_text())
        assert run is not None, "the flow run of a returned flow call is not in the store"
        assert run.name == "conformance-child" and run.state.is_completed(), f"read {run.state}"
        assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Completed"]
        task_runs = store.read_task_runs(flow_run_id=run.id)
        assert sorted(t.task_name for t in task_runs) == ["add", "add", "square", "square", "square"]
        for task_run in task_runs:
            assert [s.name for s in store.read_states(task_run.id)] == ["Pending", "Running", "Completed"], \
                f"task run {task_run.name}: not every state was stored before the flow call returned"
        assert {e.key for e in store.read_cache_entries()} == {f"conformance-child-{x}" for x in range(3)}

    def _killed_child(self, store: RunStore, tmp_path: Path) -> tuple[str, str, str]:
        """Run the child's flow until its subflow's task hangs, kill it with ``kill -9``, and
        wait until reads show it Crashed (at most ``crash_seconds`` and a margin); return
        the ids of the flow run, its subflow run and the hanging task run."""
        child, gate = self._start_child(store, "hang", tmp_path)
        try:
            self._wait_for(child, lambda: (gate / "id").exists() and bool((gate / "id").read_text()),
                           "its flow's body")
            run_id = (gate / "id").read_text()
            started = store.read_flow_run(run_id)
            assert started is not None and started.state.is_running(), \
                f"a flow run's row (Running) must be stored before its body runs; read {started}"
            self._wait_for(child, lambda: (gate / "running").exists(), "its task's body")

            def subflow_runs() -> list[FlowRun]:
                return store.read_flow_runs(parent_flow_run_id=run_id)

            def hanging_is_stored() -> bool:
                return any(t.task_name == "hang" and t.state is not None and t.state.is_running()
                           for sub in subflow_runs() for t in store.read_task_runs(flow_run_id=sub.id))

            self._wait_for(child, hanging_is_stored, "recording its running task run")
            live = store.read_flow_run(run_id)
            assert live is not None and live.state.is_running(), f"a live flow run reads {live and live.state}"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            if child.stdout:
                child.stdout.close()
        killed = time.monotonic()
        allowed = self.crash_seconds + 10.0  # a margin for a loaded machine
        (sub,) = subflow_runs()

        def states() -> list[str]:
            return [f"{run.name}: {run.state}" for run in (store.read_flow_run(run_id), store.read_flow_run(sub.id),
                                                            *store.read_task_runs(flow_run_id=run_id),
                                                            *store.read_task_runs(flow_run_id=sub.id))]

        def crashed() -> bool:
            flows = [store.read_flow_run(run_id), store.read_flow_run(sub.id)]
            tasks = store.read_task_runs(flow_run_id=run_id) + store.read_task_runs(flow_run_id=sub.id)
            return all(f.state.is_crashed() for f in flows) and all(t.state.is_final() for t in tasks)

        while not crashed():
            assert time.monotonic() - killed < allowed, (
                f"{allowed:.0f} s after kill -9 the runs read {states()} (crash_seconds = {self.crash_seconds})")
            time.sleep(0.2)
        (hang,) = store.read_task_runs(flow_run_id=sub.id)
        return run_id, sub.id, hang.id

    def test_a_flow_killed_mid_task_reads_as_crashed(self, store: RunStore, tmp_path: Path) -> None:
        run_id, sub_id, hang_id = self._killed_child(store, tmp_path)
        assert [s.name for s in store.read_states(run_id)][-1] == "Crashed"
        assert [s.name for s in store.read_states(sub_id)][-1] == "Crashed"
        assert sorted(t.state.name for t in store.read_task_runs(flow_run_id=run_id)) == ["Completed"] * 5
        assert store.read_task_run(hang_id).state.is_crashed() and store.read_states(hang_id)[-1].name == "Crashed"
        assert store.read_task_run_states(sub_id)[hang_id][-1].name == "Crashed"
        assert store.count_task_run_states(sub_id).by_type == {"CRASHED": 1}
        other = self.open_again(store, self._store_tmp_path)
        if other is not None and other is not store:
            self._opened_handles.append(other)
            assert other.read_flow_run(run_id).state.is_crashed(), "a handle opened after the kill reads it running"

        if getattr(type(store), "reopen_flow_run", None) in (None, RunWriter.reopen_flow_run):
            return  # a store without retries: nothing more to check
        run = store.read_flow_run(run_id)
        run.run_count += 1
        state = at(Running(message="retried"), time.time())
        run.state = state
        store.reopen_flow_run(run, state)
        assert store.read_flow_run(run_id).state.is_running(), \
            "a Crashed run reopened by this process reads Crashed again (its old process is gone, not this one)"
        move(store, run, Completed())
        store.flush()
        assert store.read_flow_run(run_id).state.is_completed()

    def test_a_killed_flows_runs_are_found_by_the_crashed_filters(self, store: RunStore, tmp_path: Path) -> None:
        # What reads show Crashed, filters by state find: `headwater runs --state crashed`
        # and the dashboard's filters list what `headwater runs` shows.
        run_id, sub_id, hang_id = self._killed_child(store, tmp_path)
        assert {run_id, sub_id} <= {r.id for r in store.read_flow_runs(state="crashed")}, \
            "read_flow_runs(state='crashed') leaves out runs it reads as Crashed"
        assert store.count_flow_runs(state="CRASHED") == 2
        assert {r.id for r in store.search_flow_runs(FlowRunFilter(state="crashed")).items} == {run_id, sub_id}
        assert [t.id for t in store.read_task_run_page(sub_id, state="crashed").items] == [hang_id]
        assert [t.id for t in store.read_task_run_page(sub_id, state="running").items] == []
        assert [r.id for r in store.read_flow_runs(state="running")] == []
