"""Ctrl-C at awkward moments: every run the flow created reaches a final state, and the
state recorded is what the caller saw (the call raised KeyboardInterrupt: Crashed).

Each case runs a flow in a child process that installs Python's default SIGINT handler
first (under nohup SIGINT is ignored) and sends itself SIGINT at one chosen moment; the
test then reads the history that process left.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from headwater import Session
from headwater.states import StateType

from .procs import child_env

PRELUDE = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from headwater import flow, task

    def ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises KeyboardInterrupt here, in the main thread
    """
)

DEAD_PROCESS = "The process running this run ended before the run finished."

# The flow the submit cases interrupt (indented as the cases are: each body is dedented whole).
SUBMITS_TEN = """
        @task
        def work(i):
            return i

        @flow
        def busy():
            futures = [work.submit(i) for i in range(10)]
            return [f.result() for f in futures]

        busy()
"""

CASES = {
    # The interrupt lands between the store creating a submitted run and recording its
    # first state (Pending): the run was left with no state at all.
    "submit-before-pending": """
        from headwater.plugins.sqlite_store import SQLiteRunStore

        record_state = SQLiteRunStore.record_state
        pendings = []

        def interrupting(self, run, state):
            if run.kind == "task" and state.name == "Pending":
                pendings.append(run)
                if len(pendings) == 3:
                    ctrl_c()
            return record_state(self, run, state)

        SQLiteRunStore.record_state = interrupting
    """ + SUBMITS_TEN,
    # ... between recording Pending and the flow run tracking the run's future.
    "submit-before-tracked": """
        from headwater.context import FlowRunContext

        track = FlowRunContext.track
        calls = []

        def interrupting(self, future):
            calls.append(future)
            if len(calls) == 3:
                ctrl_c()
            return track(self, future)

        FlowRunContext.track = interrupting
    """ + SUBMITS_TEN,
    # A task called directly waits for the future it was given when Ctrl-C comes.
    "direct-call-waiting-for-upstream": """
        started = threading.Event()

        @task
        def slow():
            started.set()
            time.sleep(5)
            return 1

        @task
        def add_one(x):
            return x + 1

        @flow
        def waits():
            threading.Thread(target=lambda: started.wait() and os.kill(os.getpid(), signal.SIGINT)).start()
            return add_one(slow.submit())

        waits()
    """,
    # A submitted task (in a worker thread) is running a task it called when Ctrl-C comes.
    "nested-call-in-a-worker": """
        started = threading.Event()

        @task
        def inner():
            started.set()
            time.sleep(5)

        @task
        def outer():
            return inner()

        @flow
        def nests():
            future = outer.submit()
            started.wait()
            ctrl_c()
            return future.result()

        nests()
    """,
}


def _run_child(tmp_path, body: str) -> tuple[subprocess.CompletedProcess[str], str]:
    home = tmp_path / "home"
    script = tmp_path / "interrupted.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    result = subprocess.run([sys.executable, str(script)], env=child_env(home), capture_output=True, text=True,
                            timeout=60)
    return result, str(home)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_run_an_interrupted_flow_created_has_a_final_state(tmp_path, monkeypatch, case):
    result, home = _run_child(tmp_path, CASES[case])
    assert result.returncode != 0
    assert "KeyboardInterrupt" in result.stderr, result.stderr[-2000:]

    monkeypatch.setenv("HEADWATER_HOME", home)
    with Session() as session:
        (flow_run,) = session.store.read_flow_runs()
        assert flow_run.state.type is StateType.CRASHED
        task_runs = session.store.read_task_runs(flow_run_id=flow_run.id)
        assert task_runs, "the task runs were recorded"
        for run in task_runs:
            assert run.state is not None, f"{run.name} has no state at all"
            assert run.state.is_final(), f"{run.name} was left {run.state}"
            # Ended by the interrupted process itself, not marked Crashed afterwards by a
            # reader that found its process gone.
            assert DEAD_PROCESS not in (run.state.message or ""), f"{run.name} was left unfinished"
            assert [s for s in session.store.read_states(run.id) if s.is_final()], run.name


FINISHING = """
    from headwater.plugins.sqlite_store import SQLiteRunStore

    flush = SQLiteRunStore.flush
    armed = []

    def interrupting(self):
        if armed and MOMENT == "flush":
            armed.clear()
            os.kill(os.getpid(), signal.SIGINT)  # lands in the flush's wait
        return flush(self)

    SQLiteRunStore.flush = interrupting
    MOMENT = sys.argv[1]

    def on_completion(flow, flow_run, state):
        if MOMENT == "callback":
            ctrl_c()

    @task
    def double(x):
        return 2 * x

    @flow(on_completion=[on_completion])
    def finishing():
        value = double(21)
        armed.append(True)
        return value

    try:
        print("returned", finishing())
    except KeyboardInterrupt:
        print("raised KeyboardInterrupt")
"""


@pytest.mark.parametrize("moment", ["flush", "callback"])
def test_ctrl_c_while_a_flow_run_finishes_is_recorded_as_the_caller_saw_it(tmp_path, monkeypatch, moment):
    """Ctrl-C in the final flush (or an on_completion callback) after the body returned:
    a call that raised KeyboardInterrupt is recorded Crashed, one that returned
    Completed, and the history has one final state either way."""
    home = tmp_path / "home"
    script = tmp_path / "finishing.py"
    script.write_text(PRELUDE + textwrap.dedent(FINISHING))
    result = subprocess.run([sys.executable, str(script), moment], env=child_env(home), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]

    monkeypatch.setenv("HEADWATER_HOME", str(home))
    with Session() as session:
        (flow_run,) = session.store.read_flow_runs()
        if "returned 42" in result.stdout:
            assert flow_run.state.type is StateType.COMPLETED
        else:
            assert "raised KeyboardInterrupt" in result.stdout, result.stdout
            assert flow_run.state.type is StateType.CRASHED, flow_run.state
            assert "KeyboardInterrupt" in flow_run.state.message
        # One final state: the history is never rewritten (no Completed, then Crashed).
        finals = [st.name for st in session.store.read_states(flow_run.id) if st.is_final()]
        assert finals == [flow_run.state.name], finals
        (task_run,) = session.store.read_task_runs(flow_run_id=flow_run.id)
        assert task_run.state.type is StateType.COMPLETED  # it did complete


SLOW_FINAL_WRITE = """
    from headwater.engine.flow_loop import FlowExecution
    from headwater.plugins.sqlite_store import SQLiteRunStore

    flush, record_final = SQLiteRunStore.flush, FlowExecution._record_final
    writing_final = []

    def recording(self):
        record_final(self)
        writing_final.append(True)

    def slow(self):
        if writing_final:  # the store is slow now (locked by another process, say)
            ctrl_c()
        return flush(self)

    FlowExecution._record_final, SQLiteRunStore.flush = recording, slow

    @flow
    def finishing():
        return 42

    try:
        print("returned", finishing())
    except KeyboardInterrupt:
        print("raised KeyboardInterrupt")
"""


def test_a_second_ctrl_c_during_a_slow_final_write_is_raised(tmp_path, monkeypatch):
    """The first Ctrl-C in the final write is absorbed with a warning saying to press it
    again; the second is raised: a slow store never keeps the user from getting out."""
    script = tmp_path / "slow.py"
    script.write_text(PRELUDE + textwrap.dedent(SLOW_FINAL_WRITE))
    result = subprocess.run([sys.executable, str(script)], env=child_env(tmp_path / "home"),
                            capture_output=True, text=True, timeout=60)
    assert "raised KeyboardInterrupt" in result.stdout, (result.stdout, result.stderr[-2000:])
    assert result.stderr.count("press Ctrl-C again to stop now") == 1, result.stderr[-2000:]
