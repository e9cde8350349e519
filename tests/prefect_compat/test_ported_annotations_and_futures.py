"""Prefect 3 code ported by changing the import: allow_failure and quote, wait and
as_completed, ThreadPoolTaskRunner.

Each script below is written as a Prefect user writes it; only ``prefect`` became
``headwater`` in its imports. It runs in a fresh interpreter with its own
HEADWATER_HOME, and the test checks what the user sees: the output, the exit status and
the runs ``headwater runs`` recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def run_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as ``flow_script.py`` in ``tmp_path`` with its own HEADWATER_HOME."""
    script = tmp_path / "flow_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=50)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(tmp_path / "home"), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def headwater_json(tmp_path: Path, *args: str) -> object:
    """``headwater ARGS --json``, parsed."""
    code = "import sys; from headwater.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, *args, "--json"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_allow_failure_lets_a_report_and_a_cleanup_run_after_a_failed_extract(tmp_path):
    """The downstream tasks run with the failed upstream's exception; the flow returns
    normally, and the store records the extract Failed and the others Completed."""
    done = run_script(tmp_path, """
        from headwater import allow_failure, flow, task


        @task
        def extract():
            raise ConnectionError("source unreachable")


        @task
        def report(data):
            if isinstance(data, Exception):
                return f"no data ({type(data).__name__}: {data})"
            return f"{len(data)} rows"


        @task
        def cleanup():
            print("temporary files removed")


        @flow
        def nightly():
            data = extract.submit()
            summary = report.submit(allow_failure(data))
            cleanup.submit(wait_for=[allow_failure(data)]).wait()
            return summary.result()


        if __name__ == "__main__":
            print(nightly())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["temporary files removed",
                                        "no data (ConnectionError: source unreachable)"]
    (run,) = headwater_json(tmp_path, "runs")
    assert run["flow_name"] == "nightly" and run["state"] == "COMPLETED"
    shown = headwater_json(tmp_path, "runs", "show", run["id"])
    states = {t["task_name"]: t["state_name"] for t in shown["task_runs"]}
    assert states == {"extract": "Failed", "report": "Completed", "cleanup": "Completed"}


def test_quote_passes_a_connection_through_unhashed_and_keeps_the_cache(tmp_path):
    """A quoted connection reaches the task as itself, is never hashed (no warning),
    and the second call with the same table is a cache hit."""
    done = run_script(tmp_path, """
        import sqlite3

        from headwater import flow, task
        from headwater.tasks import task_input_hash
        from headwater.utilities.annotations import quote


        @task(cache_key_fn=task_input_hash)
        def count_rows(connection, table):
            print(f"querying {table}")
            return connection.execute(f"select count(*) from {table}").fetchone()[0]


        @flow
        def inventory():
            connection = sqlite3.connect(":memory:")
            connection.execute("create table items (n)")
            connection.executemany("insert into items values (?)", [(1,), (2,), (3,)])
            first = count_rows(quote(connection), "items")
            second = count_rows(quote(connection), "items")
            return first, second


        if __name__ == "__main__":
            print(inventory())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["querying items", "(3, 3)"]
    assert "cannot hash" not in done.stderr
    (run,) = headwater_json(tmp_path, "runs")
    shown = headwater_json(tmp_path, "runs", "show", run["id"])
    assert sorted(t["state_name"] for t in shown["task_runs"]) == ["Cached", "Completed"]


def test_wait_and_as_completed_from_headwater_futures(tmp_path):
    """as_completed yields in finishing order; wait with a timeout returns the
    unfinished future in not_done; as_completed's timeout raises TimeoutError."""
    done = run_script(tmp_path, """
        import time

        from headwater import flow, task
        from headwater.futures import as_completed, wait


        @task
        def sleepy(seconds):
            time.sleep(seconds)
            return seconds


        @flow
        def race():
            futures = [sleepy.submit(s) for s in (1.2, 0.1, 0.6)]
            print("finished:", [f.result() for f in as_completed(futures)])
            done, not_done = wait(futures)
            print("all done:", len(done), len(not_done))
            slow = sleepy.submit(1.5)
            done, not_done = wait([slow], timeout=0.1)
            print("after 0.1 s:", len(done), len(not_done))
            try:
                for future in as_completed([slow], timeout=0.1):
                    pass
            except TimeoutError as exc:
                print("timeout:", exc)
            slow.wait()


        if __name__ == "__main__":
            race()
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "finished: [0.1, 0.6, 1.2]",
        "all done: 3 0",
        "after 0.1 s: 0 1",
        "timeout: 1 (of 1) futures unfinished after 0.1 s",
    ]


def test_thread_pool_task_runner_runs_a_mapped_flow_and_rejects_zero_workers(tmp_path):
    """ThreadPoolTaskRunner(max_workers=4) runs the flow and is named in the log; with
    max_workers=0 the script stops at the decorator with a one-line error."""
    done = run_script(tmp_path, """
        from headwater import flow, task
        from headwater.task_runners import ThreadPoolTaskRunner


        @task
        def square(x):
            return x * x


        @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
        def squares():
            return [f.result() for f in square.map(range(5))]


        if __name__ == "__main__":
            print(squares())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["[0, 1, 4, 9, 16]"]
    assert "Using task runner 'ThreadPoolTaskRunner'" in done.stderr

    bad = run_script(tmp_path, """
        from headwater import flow
        from headwater.task_runners import ThreadPoolTaskRunner


        @flow(task_runner=ThreadPoolTaskRunner(max_workers=0))
        def misconfigured():
            pass
    """)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "headwater.errors.ConfigurationError: ThreadPoolTaskRunner(max_workers=0): expected a whole "
        "number of at least 1, or None for the default")
