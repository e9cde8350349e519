"""Values a user's code may well produce that must not cost the record: a parameter whose
repr() raises (a detached ORM object), an exception whose str() raises, cache keys from
file names that are not UTF-8, and run-name callables that answer blank."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from headwater import Session, flow, get_store, task
from headwater.errors import RunNameError
from headwater.states import StateType

from .procs import child_env


class Detached:
    """Like an ORM object whose session is gone: its repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("instance is not bound to a session")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot render")


@task
def takes(row):
    return 1


def test_a_parameter_whose_repr_raises_is_recorded(headwater_session):
    @flow
    def loads(row=Detached()):
        return takes(row)

    assert loads() == 1
    store = get_store()
    store.flush()
    (run,) = store.read_flow_runs(flow_name="loads")
    assert run.state.is_completed()
    assert run.parameters == {"row": "<Detached object: repr() raised RuntimeError>"}
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert task_run.state.is_completed()
    assert task_run.parameters == {"row": "<Detached object: repr() raised RuntimeError>"}


def test_an_exception_whose_str_raises_fails_the_run_like_any_other(headwater_session):
    @task
    def breaks():
        raise Unprintable()

    seen = []

    @flow
    def failing():
        seen.append(breaks(return_state=True))
        return "handled"

    assert failing() == "handled"  # the flow looked at the failure and carried on
    (task_state,) = seen
    assert task_state.type is StateType.FAILED
    assert "Unprintable (its message could not be made: str() raised RuntimeError)" in task_state.message
    with pytest.raises(Unprintable):
        task_state.result()
    store = get_store()
    store.flush()
    (run,) = store.read_flow_runs(flow_name="failing")
    (task_run,) = store.read_task_runs(flow_run_id=run.id)
    assert run.state.is_completed() and task_run.state.is_failed()


def test_cache_keys_of_a_lone_surrogate_and_of_its_escape_written_out_are_apart(headwater_session):
    calls = []

    @task(cache_key_fn=lambda context, parameters: parameters["name"])
    def size_of(name):
        calls.append(name)
        return len(name)

    @flow
    def sizes(names):
        return [size_of(n) for n in names]

    # The listdir name of a file whose name is not UTF-8, then a name with a backslash.
    lone, written_out = "report-\udcff.csv", "report-\\udcff.csv"
    assert sizes([lone, written_out]) == [len(lone), len(written_out)]
    assert calls == [lone, written_out]  # the second was not a hit on the first's entry
    assert sizes([lone, written_out]) == [len(lone), len(written_out)]
    assert calls == [lone, written_out]  # both hit their own entries now


def test_a_blank_run_name_from_a_callable_is_one_clear_error(headwater_session):
    @flow(flow_run_name=lambda: "  ")
    def unnamed():
        return 1

    state = unnamed(return_state=True)
    assert state.is_failed()
    assert "must not be blank" in state.message and "'  '" in state.message
    with pytest.raises(RunNameError):
        state.result()

    @task(task_run_name=lambda: "")
    def nameless():
        return 1

    @flow
    def calls_nameless():
        return nameless()

    with pytest.raises(RunNameError, match="must not be blank"):
        calls_nameless()


def test_a_log_call_whose_arguments_do_not_fit_keeps_the_line_and_the_run(tmp_path, monkeypatch):
    """Run as a user's script (pytest's own log capture raises on such a call)."""
    script = tmp_path / "logs_badly.py"
    script.write_text(textwrap.dedent("""
        from headwater import flow, get_run_logger, task

        @task
        def logs_badly():
            get_run_logger().info("%s of %s rows", 3)  # one argument short
            return 2

        @flow
        def logging_flow():
            return logs_badly()

        print("returned", logging_flow())
    """))
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, str(script)], env=child_env(home), capture_output=True,
                          text=True, timeout=60)
    # Standard logging reports such a call and goes on; it must fail no task.
    assert "returned 2" in done.stdout, done.stderr[-2000:]
    shown = "'%s of %s rows' % (3,) (could not be formatted: TypeError: not enough arguments for format string)"
    assert shown in done.stderr
    monkeypatch.setenv("HEADWATER_HOME", str(home))
    with Session() as session:
        (run,) = session.store.read_flow_runs(flow_name="logging-flow")
        (task_run,) = session.store.read_task_runs(flow_run_id=run.id)
        assert task_run.state.is_completed()
        assert shown in [line["message"] for line in session.store.read_logs(task_run_id=task_run.id)]
