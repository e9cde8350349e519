"""Prefect scripts that run on headwater with only their imports changed: tags blocks,
get_run_context, a flow's own Completed message, disable_run_logger, on_cancellation.

Each script is written as for Prefect (``from prefect ...``); :func:`ported` changes its
import lines alone, and the script runs in a fresh interpreter over a temporary
HEADWATER_HOME. The tests assert what the user sees: the output, the exit status and
the recorded runs (``headwater runs --json``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest


def ported(prefect_script: str) -> str:
    """The script with ``prefect`` replaced by ``headwater`` in its import lines only."""
    script = textwrap.dedent(prefect_script)
    assert "prefect" in script
    return re.sub(r"^(\s*(?:from|import) )prefect\b", r"\1headwater", script, flags=re.MULTILINE)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run_script(prefect_script: str, home: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "flow_script.py"
    path.write_text(ported(prefect_script))
    env = {**os.environ, "HEADWATER_HOME": str(home), "HEADWATER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("HEADWATER_DATABASE_URL", None)
    env.pop("HEADWATER_LOCAL_STORAGE_PATH", None)
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def headwater_json(home: Path, *args: str) -> Any:
    """``headwater ARGS --json`` over ``home``, parsed."""
    env = {**os.environ, "HEADWATER_HOME": str(home), "HEADWATER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("HEADWATER_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", "import sys; from headwater.cli import main; sys.exit(main())",
                           *args, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_script_changes_its_imports_only():
    """The porting helper touches import lines, nothing else."""
    script = "from prefect import flow\nimport prefect.context\nx = 'prefect'\n"
    assert ported(script) == "from headwater import flow\nimport headwater.context\nx = 'prefect'\n"


def test_tags_block_tags_the_flow_run_and_its_task_runs(home, tmp_path):
    """with tags(...) around a flow call and inside its body: the runs carry the tags,
    the task reads them on runtime, and `headwater runs` shows them recorded."""
    done = run_script('''
        from prefect import flow, task, tags
        from prefect.runtime import task_run

        @task(tags=["db"])
        def load(n):
            print("task tags:", ",".join(sorted(task_run.tags)))
            return n

        @flow
        def nightly():
            load(1)
            with tags("slow"):
                load(2)

        with tags("nightly", "eu") as current:
            print("in effect:", ",".join(sorted(current)))
            nightly()
    ''', home, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "in effect: eu,nightly" in done.stdout
    assert "task tags: db,eu,nightly\n" in done.stdout
    assert "task tags: db,eu,nightly,slow\n" in done.stdout
    [flow_run] = headwater_json(home, "runs")
    assert flow_run["tags"] == ["eu", "nightly"]
    shown = headwater_json(home, "runs", "show", flow_run["name"])
    assert sorted(tuple(t["tags"]) for t in shown["task_runs"]) == [
        ("db", "eu", "nightly"), ("db", "eu", "nightly", "slow")]


def test_get_run_context_in_a_task_in_a_flow_and_outside(home, tmp_path):
    """get_run_context() gives the task run's facts in a task, the flow run's in a flow,
    and MissingContextError (a RuntimeError) outside any run."""
    done = run_script('''
        from prefect import flow, task
        from prefect.context import get_run_context, MissingContextError

        @task(retries=1, tags=["t"])
        def double(x):
            ctx = get_run_context()
            run = ctx.task_run
            print(f"task {run.name} tags={sorted(run.tags)} run_count={run.run_count} "
                  f"parameters={run.parameters} flow_run={ctx.flow_run.name}")
            return 2 * x

        @flow(flow_run_name="ctx-demo")
        def pipeline():
            ctx = get_run_context()
            print(f"flow {ctx.flow_run.name} of {ctx.flow.name} on {type(ctx.task_runner).__name__}")
            return double(21)

        assert pipeline() == 42
        try:
            get_run_context()
        except RuntimeError as exc:
            print("outside:", type(exc).__name__, isinstance(exc, MissingContextError))
    ''', home, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "flow ctx-demo of pipeline on " in done.stdout
    assert re.search(r"task double-\w+-0 tags=\['t'\] run_count=1 parameters=\{'x': 21\} flow_run=ctx-demo",
                     done.stdout), done.stdout
    assert "outside: MissingContextError True" in done.stdout


def test_a_flow_returning_completed_with_a_message_ends_with_it(home, tmp_path):
    """return Completed(message=...) ends the run with that message and its data; a bare
    Completed() keeps the usual wording."""
    done = run_script('''
        from prefect import flow
        from prefect.states import Completed

        @flow(flow_run_name="with-message")
        def report():
            return Completed(message="3 files uploaded", data=3)

        @flow(flow_run_name="without-message")
        def plain():
            return Completed()

        state = report(return_state=True)
        print("message:", state.message, "result:", state.result())
        print("plain:", plain(return_state=True).message)
    ''', home, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "message: 3 files uploaded result: 3" in done.stdout
    assert "plain: All states completed." in done.stdout
    messages = {run["name"]: run["message"] for run in headwater_json(home, "runs")}
    assert messages == {"with-message": "3 files uploaded", "without-message": "All states completed."}


def test_disable_run_logger_lets_a_task_function_run_outside_a_flow(home, tmp_path):
    """task.fn() with get_run_logger() inside runs under disable_run_logger() (as a
    unit test of the function does) and logs nothing."""
    done = run_script('''
        from prefect import flow, task
        from prefect.logging import disable_run_logger, get_run_logger

        @task
        def add(x, y):
            get_run_logger().info("adding %s and %s", x, y)
            return x + y

        @flow
        def totals():
            get_run_logger().info("summing")
            return add(1, 2)

        with disable_run_logger():
            assert add.fn(1, 2) == 3
            assert totals.fn() == 3
        print("fn results ok")
    ''', home, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fn results ok" in done.stdout
    assert "adding" not in done.stderr and "summing" not in done.stderr


def test_on_cancellation_hooks_run_for_cancelled_flow_and_task_runs(home, tmp_path):
    """A task and a flow that end Cancelled (they return Cancelled()) call their
    on_cancellation hooks with (task|flow, run, state); the run is recorded Cancelled."""
    done = run_script('''
        from prefect import flow, task
        from prefect.states import Cancelled

        def task_hook(tsk, task_run, state):
            print(f"task hook: {tsk.name} {state.name}")

        def flow_hook(flw, flow_run, state):
            print(f"flow hook: {flw.name} {flow_run.name} {state.message}")

        @task(on_cancellation=[task_hook])
        def fetch():
            return Cancelled(message="source offline")

        @flow(flow_run_name="cancelled-run", on_cancellation=[flow_hook])
        def sync():
            fetch(return_state=True)
            return Cancelled(message="nothing to sync")

        state = sync(return_state=True)
        print("final:", state.type.value)
    ''', home, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task hook: fetch Cancelled" in done.stdout
    assert "flow hook: sync cancelled-run nothing to sync" in done.stdout
    assert "final: CANCELLED" in done.stdout
    [run] = headwater_json(home, "runs")
    assert (run["state"], run["message"]) == ("CANCELLED", "nothing to sync")
