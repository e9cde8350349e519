"""Tracebacks show the user's frames, not headwater's run loop, and each failure's
traceback is logged once (core/tracebacks.py)."""

from __future__ import annotations

import logging
import os
import traceback

import pytest

import headwater
from headwater import Session, flow, task

CORE = os.path.dirname(os.path.abspath(headwater.__file__)) + os.sep


def _helper(x):
    return 1 / x


@task
def divide(x):
    return _helper(x)


@flow
def pipeline():
    return divide(0)


def _frames(exc: BaseException) -> list[tuple[str, str]]:
    return [(os.path.basename(f.filename), f.name) for f in traceback.extract_tb(exc.__traceback__)]


def _core_files(exc: BaseException) -> list[str]:
    return [os.path.basename(f.filename) for f in traceback.extract_tb(exc.__traceback__)
            if f.filename.startswith(CORE)]


def test_the_exception_raised_to_the_flow_caller_keeps_user_frames_only(capsys):
    """Calling a failing flow raises the task's exception with a traceback that goes from
    the caller through the flow body and the task body to the failing line, without the
    run loop's frames (engine, tasks, states); only the flow's call frames remain."""
    with pytest.raises(ZeroDivisionError) as info:
        pipeline()
    frames = _frames(info.value)
    user = [name for file, name in frames if file == "test_tracebacks.py"]
    assert user == [
        "test_the_exception_raised_to_the_flow_caller_keeps_user_frames_only",
        "pipeline", "divide", "_helper"]
    assert set(_core_files(info.value)) <= {"flows.py", "flow_loop.py"}
    assert len(_core_files(info.value)) <= 2


def test_a_task_called_outside_a_flow_raises_without_run_loop_frames(capsys):
    """A task called directly raises its exception without the run loop's frames
    (execute_sync, call_with_timeout, call) before the task body."""
    with pytest.raises(ZeroDivisionError) as info:
        divide(0)
    frames = _frames(info.value)
    assert [n for f, n in frames if f == "test_tracebacks.py"][-2:] == ["divide", "_helper"]
    names = [n for _, n in frames]
    assert not {"execute_sync", "call_with_timeout", "call"} & set(names)


def test_the_chained_exception_is_kept(capsys):
    """`raise ... from` inside a task keeps its cause (and the cause's user frames)."""

    @task
    def wrap():
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError("no such key") from exc

    @flow
    def uses_wrap():
        wrap()

    with pytest.raises(ValueError) as info:
        uses_wrap()
    cause = info.value.__cause__
    assert isinstance(cause, KeyError)
    assert [n for f, n in _frames(cause)] == ["wrap"]
    assert "wrap" in [n for _, n in _frames(info.value)]


def test_one_task_failure_logs_its_traceback_once_without_internal_frames(capsys):
    """The task's ERROR line carries the traceback (user frames only); the flow's ERROR
    line names the task run in one line instead of repeating the traceback."""
    pipeline(return_state=True)
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 1
    assert 'in _helper' in err and "return 1 / x" in err
    assert CORE not in err  # no frame of headwater's package directory
    flow_errors = [line for line in err.splitlines() if "| ERROR   | Flow run" in line]
    assert len(flow_errors) == 1
    assert "ZeroDivisionError: division by zero (raised in Task run 'divide-" in flow_errors[0]


def test_a_flow_body_exception_is_logged_with_its_traceback(capsys):
    """An exception raised by the flow body itself (no task logged it) is logged by the
    flow with a traceback of the user's frames."""

    @flow
    def broken():
        raise RuntimeError("from the body")

    broken(return_state=True)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert "RuntimeError: from the body" in err
    assert CORE not in err


def test_a_headwater_error_is_logged_without_any_internal_frame(capsys):
    """A timeout (raised by headwater, no user frame involved) is logged as one error
    line, no traceback of headwater's internals."""
    import time

    @task(timeout_seconds=0.05)
    def slow():
        time.sleep(0.5)

    @flow
    def waits():
        slow()

    waits(return_state=True)
    err = capsys.readouterr().err
    assert "TaskTimeout: Task run 'slow-" in err
    assert CORE not in err


def test_debug_logging_keeps_full_tracebacks(tmp_path, capsys):
    """HEADWATER_LOGGING_LEVEL=DEBUG is the escape hatch: logged and raised tracebacks
    include headwater's own frames."""
    logger = logging.getLogger("headwater")
    level = logger.level
    try:
        with Session(env={"HEADWATER_HOME": str(tmp_path), "HEADWATER_LOGGING_LEVEL": "DEBUG"}):
            with pytest.raises(ZeroDivisionError) as info:
                pipeline()
    finally:
        logger.setLevel(level)
    assert "states.py" in _core_files(info.value)
    assert os.path.join(CORE, "engine", "task_loop.py") in capsys.readouterr().err
