"""``headwater.logging``: get_run_logger and disable_run_logger."""

from __future__ import annotations

import logging
import threading

from headwater import flow, task
from headwater import get_run_logger as top_level_get_run_logger
from headwater.logging import disable_run_logger, get_run_logger


@task
def add(x: int, y: int) -> int:
    get_run_logger().info("adding %s and %s", x, y)
    return x + y


def test_it_is_the_same_get_run_logger_as_headwater_s():
    """headwater.logging.get_run_logger is headwater.get_run_logger."""
    assert get_run_logger is top_level_get_run_logger


def test_a_task_function_called_directly_logs_nothing_under_disable_run_logger(capsys):
    """task.fn() with get_run_logger() inside works in the block and logs nothing."""
    with disable_run_logger():
        assert add.fn(1, 2) == 3
        logger = get_run_logger()
        assert not logger.isEnabledFor(logging.CRITICAL)
    assert "adding" not in capsys.readouterr().err


def test_outside_the_block_the_logger_is_the_plain_one_again(capsys):
    """Leaving the block restores get_run_logger: outside a run, a working plain logger."""
    with disable_run_logger():
        pass
    logger = get_run_logger()
    assert logger.name.startswith("headwater") and logger.isEnabledFor(logging.INFO)
    assert add.fn(2, 3) == 5


def test_the_block_silences_run_loggers_inside_runs_too(capsys):
    """A flow run inside the block: the user's lines are dropped, the engine's lines stay."""

    @flow(flow_run_name="quiet")
    def quiet() -> int:
        get_run_logger().info("from the flow body")
        return add(1, 1)

    with disable_run_logger():
        assert quiet() == 2
    err = capsys.readouterr().err
    assert "from the flow body" not in err and "adding" not in err
    assert "Finished in state Completed" in err


def test_the_block_is_for_its_own_thread_only(capsys):
    """Another thread's runs keep logging while one thread is inside the block."""
    inside = threading.Event()
    leave = threading.Event()

    def quiet_thread() -> None:
        with disable_run_logger():
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=quiet_thread)
    other.start()
    inside.wait(10)
    try:
        @flow(flow_run_name="loud")
        def loud() -> None:
            get_run_logger().info("still heard")

        loud()
    finally:
        leave.set()
        other.join()
    assert "still heard" in capsys.readouterr().err
