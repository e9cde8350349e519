"""headwater.testing: the pytest plugin users test their flows with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from headwater import flow


def test_the_fixture_gives_a_temporary_home_and_a_fresh_store(headwater_session, headwater_home):
    """HEADWATER_HOME points at a temporary folder; the store starts empty and fills there."""
    assert os.environ["HEADWATER_HOME"] == str(headwater_home)
    assert headwater_session.store.read_flow_runs() == []

    @flow
    def recorded():
        return 1

    recorded()
    headwater_session.store.flush()
    assert len(headwater_session.store.read_flow_runs()) == 1
    assert (Path(headwater_home) / "headwater.db").exists()


def test_the_plugin_is_registered_for_pytest_and_isolates_users_tests(tmp_path):
    """A user's test file using headwater_session runs in isolation, twice, via the entry point."""
    real_home = tmp_path / "real-home"
    test_file = tmp_path / "test_user_flow.py"
    test_file.write_text(textwrap.dedent('''
        from headwater import flow

        @flow
        def double(x: int) -> int:
            return 2 * x

        def test_first(headwater_session):
            assert double(2) == 4
            headwater_session.store.flush()
            assert len(headwater_session.store.read_flow_runs()) == 1

        def test_second_sees_no_earlier_runs(headwater_session):
            assert headwater_session.store.read_flow_runs() == []
            assert double("3") == 6
    '''))
    env = {**os.environ, "HEADWATER_HOME": str(real_home)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert not (real_home / "headwater.db").exists()


def test_importing_the_plugin_is_light():
    """Loading headwater.testing (as pytest does at start) imports no sqlite3, session,
    CLI or runner conformance suite."""
    code = ("import sys, headwater.testing; "
            "print(sorted(m for m in ('sqlite3', 'headwater.cli', 'headwater.session', 'headwater.engine', "
            "'headwater.testing_runners') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_caplog_sees_headwater_records_inside_headwater_session(headwater_session, caplog, capsys):
    """Inside headwater_session, pytest's caplog receives headwater's log records (task
    and flow lines), while the console still shows each line exactly once."""

    @flow
    def logged():
        return 1

    logged()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("headwater")]
    assert "Finished in state Completed('All states completed.')" in messages
    assert any(m.startswith("Created flow run") for m in messages)
    err = capsys.readouterr().err
    assert err.count("Finished in state Completed(") == 1


def test_a_runner_test_class_is_told_what_it_lacks(tmp_path):
    """The runner conformance suite, subclassed by a runner author: without the
    task_runner fixture every case errors saying to override it; a runner that cannot be
    pickled passes the in-process cases and fails the child-process ones saying why."""
    test_file = tmp_path / "test_my_runner.py"
    test_file.write_text(textwrap.dedent('''
        import threading

        import pytest

        from headwater.testing import RunnerConformance
        from headwater.task_runners import TaskRunner


        class LockedRunner(TaskRunner):
            def __init__(self):
                self.lock = threading.Lock()

            def submit(self, work):
                with self.lock:
                    work.run()


        class TestForgotten(RunnerConformance):
            pass


        class TestLocked(RunnerConformance):
            @pytest.fixture
            def task_runner(self):
                return LockedRunner()
    '''))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(test_file),
         "-k", "submit_returns or defined_in_main"],
        cwd=tmp_path, env={**os.environ, "HEADWATER_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=60,
    )
    out = result.stdout
    summary = out.split("short test summary info")[-1]
    assert "1 failed, 1 passed" in summary and "2 errors" in summary, out
    assert "ERROR test_my_runner.py::TestForgotten::test_submit_returns_a_future_of_the_result" in summary
    assert "FAILED test_my_runner.py::TestLocked::test_tasks_and_arguments_defined_in_main" in summary
    assert "TestForgotten must override the 'task_runner' fixture" in out
    assert "sends it the runner LockedRunner() with cloudpickle, which failed" in out
