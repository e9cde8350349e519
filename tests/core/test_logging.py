"""Run logging: the console format, the engine's lines, get_run_logger, log_prints."""

from __future__ import annotations

import contextvars
import logging
import re
import threading

from headwater import Session, flow, get_run_logger, task

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| (?P<level>[A-Z]+) *\| (?P<where>.+?) - (?P<msg>.*)$")


def _lines(err: str) -> list[tuple[str, str, str]]:
    out = []
    for line in err.splitlines():
        match = LINE.match(line)
        if match:
            out.append((match["level"], match["where"], match["msg"]))
    return out


def test_lines_have_the_documented_format(capsys):
    """'HH:MM:SS.mmm | INFO    | Flow run 'name' - message', level padded to 7."""

    @flow(flow_run_name="red-orca")
    def formatted():
        get_run_logger().warning("careful")

    formatted()
    err = capsys.readouterr().err
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} \| INFO    \| Flow run 'red-orca' - Finished in state "
                     r"Completed\('All states completed.'\)$", err, re.M)
    assert re.search(r"\| WARNING \| Flow run 'red-orca' - careful$", err, re.M)


def test_the_engine_logs_creation_tasks_and_final_states(capsys):
    """Created flow run / Created task run / Finished in state lines, in order."""

    @task
    def hello_task():
        return None

    @flow(name="hello-flow", flow_run_name="attentive-turaco")
    def hello():
        hello_task()

    hello()
    lines = _lines(capsys.readouterr().err)
    messages = [m for _, _, m in lines]
    assert "Created flow run 'attentive-turaco' for flow 'hello-flow'" in messages
    created = [(w, m) for _, w, m in lines if m.startswith("Created task run")]
    assert created and created[0][0] == "Flow run 'attentive-turaco'"
    assert re.fullmatch(r"Created task run 'hello_task-[0-9a-f]{8}-0' for task 'hello_task'", created[0][1])
    task_done = [(w, m) for _, w, m in lines if w.startswith("Task run 'hello_task")]
    assert task_done[-1][1] == "Finished in state Completed()"
    assert messages[-1] == "Finished in state Completed('All states completed.')"


def test_exceptions_are_logged_with_their_traceback(capsys):
    """A failing task logs an ERROR line followed by the traceback."""

    @task
    def explode():
        raise ZeroDivisionError("kaboom")

    @flow
    def exploding():
        explode()

    exploding(return_state=True)
    err = capsys.readouterr().err
    assert "| ERROR   | Task run 'explode-" in err
    assert "Traceback (most recent call last)" in err
    assert "ZeroDivisionError: kaboom" in err


def test_retry_lines_are_logged(capsys):
    """'Retry 1/2 will start 0.5 second(s) from now' as in the tutorial."""
    calls = []

    @task(retries=2, retry_delay_seconds=0.05)
    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise IOError("flaky")

    @flow
    def retrying():
        flaky()

    retrying()
    assert "Retry 1/2 will start 0.05 second(s) from now" in capsys.readouterr().err


def test_get_run_logger_in_flows_tasks_and_threads(capsys):
    """The run logger labels lines with the flow run, the task run, even in a thread."""

    @task(task_run_name="the-task")
    def logs_in_task():
        get_run_logger().info("from the task")

    @flow(flow_run_name="the-flow")
    def logs_everywhere():
        get_run_logger().info("from the flow")
        logs_in_task()
        worker = threading.Thread(target=lambda: get_run_logger().info("from a thread"))
        worker.start()
        worker.join()

    logs_everywhere()
    lines = {(w, m) for _, w, m in _lines(capsys.readouterr().err)}
    assert ("Flow run 'the-flow'", "from the flow") in lines
    assert ("Task run 'the-task'", "from the task") in lines
    assert ("Flow run 'the-flow'", "from a thread") in lines


def test_get_run_logger_outside_a_run_is_a_plain_logger():
    """Outside any run it returns a logger under 'headwater' that works."""
    logger = get_run_logger()
    assert logger.name.startswith("headwater")
    logger.info("outside")  # must not raise


def test_log_prints_routes_print_to_the_run_logger(capsys):
    """With log_prints=True, print() inside the run becomes an INFO line of the run."""

    @task
    def prints_in_task():
        print("hello from the task")

    @flow(log_prints=True, flow_run_name="printer")
    def printing():
        print("hello", "world")
        prints_in_task()

    printing()
    captured = capsys.readouterr()
    assert "Flow run 'printer' - hello world" in captured.err
    assert "hello from the task" in captured.err
    assert "hello world" not in captured.out


def test_log_prints_off_leaves_print_alone(capsys):
    """Without log_prints, and for a task that sets log_prints=False, print prints."""

    @task(log_prints=False)
    def quiet_task():
        print("plain from task")

    @flow(log_prints=True)
    def mixed():
        quiet_task()

    @flow
    def plain():
        print("plain from flow")

    mixed()
    plain()
    print("outside")
    out = capsys.readouterr().out
    assert "plain from task" in out and "plain from flow" in out and "outside" in out


def test_the_root_logger_is_never_touched():
    """Running flows adds no handler to, and changes no level of, the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    @flow
    def harmless():
        get_run_logger().info("hi")

    harmless()
    assert root.handlers == handlers and root.level == level
    assert logging.getLogger("headwater").propagate is False


def test_closing_a_nested_session_keeps_the_outer_sessions_logging(capsys):
    """The console handler stays while any session that configured it is open."""

    @flow
    def inner_flow():
        pass

    @flow(flow_run_name="after-inner")
    def outer_flow():
        pass

    inner_flow()  # the outer (test) session configures logging
    with Session():
        inner_flow()
    outer_flow()
    assert "Flow run 'after-inner' - Finished in state" in capsys.readouterr().err


def test_logging_level_setting_filters_lines(monkeypatch, capsys):
    """HEADWATER_LOGGING_LEVEL=WARNING hides INFO lines of a session."""
    monkeypatch.setenv("HEADWATER_LOGGING_LEVEL", "WARNING")

    @flow
    def quiet():
        get_run_logger().info("not shown")
        get_run_logger().warning("shown")

    with Session():
        quiet()
    err = capsys.readouterr().err
    assert "shown" in err and "not shown" not in err


def test_a_thread_started_in_a_subflow_logs_under_the_subflow(capsys):
    """With a flow and its subflow active, a thread's run logger is the subflow's."""

    @flow(flow_run_name="inner-run")
    def inner():
        worker = threading.Thread(target=lambda: get_run_logger().info("thread in subflow"))
        worker.start()
        worker.join()

    @flow(flow_run_name="outer-run")
    def outer():
        inner()

    outer()
    lines = {(w, m) for _, w, m in _lines(capsys.readouterr().err)}
    assert ("Flow run 'inner-run'", "thread in subflow") in lines


def test_a_thread_cannot_guess_between_unrelated_flow_runs(capsys):
    """Two unrelated flow runs active at once: a bare thread gets the plain logger, no wrong label."""
    both_running = threading.Barrier(2, timeout=5)
    results = []

    @flow
    def side_by_side(label: str):
        both_running.wait()
        worker = threading.Thread(target=lambda: results.append(get_run_logger().name))
        worker.start()
        worker.join()
        both_running.wait()

    # Each thread runs in a copy of this context, so the flows use the test's session.
    runners = [threading.Thread(target=contextvars.copy_context().run, args=(side_by_side, x))
               for x in "ab"]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    assert results == ["headwater", "headwater"]
