"""Prefect 3 code with only its imports changed: cache policies, result storage keys,
exponential backoff and results not kept in memory.

Each script is written as a Prefect user writes it (``from prefect ...`` became
``from headwater ...``), run in its own process over a temporary HEADWATER_HOME, and
judged by what the user sees: its output, its exit status, its stored results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headwater.plugins.local_results import LocalResultStore, builtin_serializers

CLI = "import sys; from headwater.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return folder


def env(home: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    out["HEADWATER_HOME"] = str(home)
    return out


def run(project: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    path = project / "flow.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run([sys.executable, str(path), *args], cwd=project, env=env(project / ".home"),
                          capture_output=True, text=True, timeout=120)


def lines(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


CACHE_POLICIES = """
    import sys

    from headwater import flow, task
    from headwater.cache_policies import (DEFAULT, FLOW_PARAMETERS, INPUTS, NO_CACHE, TASK_SOURCE,
                                          CacheKeyFnPolicy)


    @task(cache_policy=INPUTS)
    def double(x: int) -> int:
        return 2 * x


    @task(cache_policy=DEFAULT)
    def within_run(x: int) -> int:
        return x


    @task(cache_policy=NO_CACHE)
    def never(x: int) -> int:
        return x


    @task(cache_policy=FLOW_PARAMETERS)
    def per_parameters() -> str:
        return "done"


    @task(cache_policy=TASK_SOURCE + INPUTS - "verbose")
    def quiet(x: int, verbose: bool = False) -> int:
        return x


    def parity(context, parameters):
        return f"parity-{parameters['x'] % 2}"


    @task(cache_policy=CacheKeyFnPolicy(cache_key_fn=parity))
    def by_parity(x: int) -> int:
        return x


    @flow
    def pipeline(n: int):
        print("double", double(n, return_state=True).name, double(n, return_state=True).name)
        print("within_run", within_run(n, return_state=True).name, within_run(n, return_state=True).name)
        print("never", never(n, return_state=True).name, never(n, return_state=True).name)
        print("per_parameters", per_parameters(return_state=True).name)
        print("quiet", quiet(n, verbose=True, return_state=True).name, quiet(n, return_state=True).name)
        print("by_parity", by_parity(n, return_state=True).name, by_parity(n + 2, return_state=True).name)


    if __name__ == "__main__":
        pipeline(int(sys.argv[1]))
"""


def test_cache_policies_key_tasks_as_in_prefect_3(project: Path) -> None:
    """INPUTS hits across processes; DEFAULT (with RUN_ID) only within one flow run;
    NO_CACHE never; FLOW_PARAMETERS per flow parameters; ``- "verbose"`` ignores that
    argument; CacheKeyFnPolicy keys by the function."""
    first = lines(run(project, CACHE_POLICIES, "1"))
    assert first == ["double Completed Cached", "within_run Completed Cached", "never Completed Completed",
                     "per_parameters Completed", "quiet Completed Cached", "by_parity Completed Cached"]
    again = lines(run(project, CACHE_POLICIES, "1"))
    assert again == ["double Cached Cached", "within_run Completed Cached", "never Completed Completed",
                     "per_parameters Cached", "quiet Cached Cached", "by_parity Cached Cached"]
    other = lines(run(project, CACHE_POLICIES, "2"))
    assert other[0] == "double Completed Cached"
    assert other[3] == "per_parameters Completed"  # another flow parameter, another key
    assert other[5] == "by_parity Completed Cached"  # 2 is even: a new key


def test_cache_key_fn_and_cache_policy_together_are_refused(project: Path) -> None:
    """Both options on one task: one clear error naming both, before anything runs."""
    result = run(project, """
        from headwater import flow, task
        from headwater.cache_policies import INPUTS
        from headwater.tasks import task_input_hash


        @task(cache_key_fn=task_input_hash, cache_policy=INPUTS)
        def load(x: int) -> int:
            return x
    """)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "cache_key_fn=" in last and "cache_policy=INPUTS" in last and "give one" in last


RESULT_STORAGE_KEY = """
    import sys

    from headwater import flow, task
    from headwater.cache_policies import NO_CACHE


    @task(persist_result=True, result_storage_key="report-{parameters[day]}.pickle")
    def report(day: str) -> str:
        print(f"building the report of {day}")
        return f"report of {day}"


    @task(result_storage_key="{flow_run.name}-{task_run.task_name}.pickle", cache_policy=NO_CACHE)
    def summary(day: str) -> str:
        return f"summary of {day}"


    @flow(flow_run_name="nightly-{day}")
    def nightly(day: str) -> None:
        print(report(day, return_state=True).name, summary(day, return_state=True).name)


    if __name__ == "__main__":
        nightly(sys.argv[1])
"""


def stored(project: Path, key: str):
    store = LocalResultStore(project / ".home" / "storage", builtin_serializers())
    return store.read(store.location_for(key))


def test_result_storage_key_names_where_the_result_is_written(project: Path) -> None:
    """The result is written under the formatted key; as in Prefect 3 the key is also the
    cache key (the same day is Cached), unless the task says NO_CACHE (then each run
    writes it again)."""
    assert lines(run(project, RESULT_STORAGE_KEY, "2024-05-01")) == [
        "building the report of 2024-05-01", "Completed Completed"]
    assert stored(project, "report-2024-05-01.pickle") == "report of 2024-05-01"
    assert stored(project, "nightly-2024-05-01-summary.pickle") == "summary of 2024-05-01"
    assert lines(run(project, RESULT_STORAGE_KEY, "2024-05-01")) == ["Cached Completed"]
    assert lines(run(project, RESULT_STORAGE_KEY, "2024-05-02")) == [
        "building the report of 2024-05-02", "Completed Completed"]
    listed = subprocess.run([sys.executable, "-c", CLI, "cache", "ls", "--json"], cwd=project,
                            env=env(project / ".home"), capture_output=True, text=True, timeout=60)
    keys = sorted(entry["key"] for entry in json.loads(listed.stdout))
    assert keys == ["report-2024-05-01.pickle", "report-2024-05-02.pickle"]


def test_a_result_storage_key_that_cannot_be_formatted_names_the_field(project: Path) -> None:
    """A field the function has no parameter for is refused when decorating; one that a
    run lacks fails that run, naming the template and the field."""
    at_decoration = run(project, """
        from headwater import task


        @task(persist_result=True, result_storage_key="report-{parameters[date]}.pickle")
        def report(day: str) -> str:
            return day
    """)
    assert at_decoration.returncode != 0
    last = at_decoration.stderr.strip().splitlines()[-1]
    assert "report-{parameters[date]}.pickle" in last and "'date'" in last
    at_run = run(project, """
        from headwater import flow, task


        @task(persist_result=True, result_storage_key="report-{parameters[day]}.pickle")
        def report(**options) -> str:
            return "report"


        @flow
        def nightly() -> str:
            return report(kind="daily")


        if __name__ == "__main__":
            nightly()
    """)
    assert at_run.returncode != 0
    last = at_run.stderr.strip().splitlines()[-1]
    assert "report-{parameters[day]}.pickle" in last and "parameters[day]" in last


def test_exponential_backoff_doubles_the_retry_delays(project: Path) -> None:
    """``retry_delay_seconds=exponential_backoff(backoff_factor=...)`` waits factor * 2**n
    before retry n+1, and the task succeeds on its third attempt."""
    result = run(project, """
        from headwater import flow, task
        from headwater.tasks import exponential_backoff

        attempts = []


        @task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=0.1))
        def flaky() -> str:
            attempts.append(1)
            if len(attempts) < 4:
                raise ConnectionError("try again")
            return "ok"


        @flow
        def pipeline() -> str:
            return flaky()


        if __name__ == "__main__":
            print(flaky.retry_delay_seconds)
            print(pipeline(), len(attempts))
    """)
    out = lines(result)
    assert out == ["[0.1, 0.2, 0.4]", "ok 4"]
    waits = [float(w) for w in re.findall(r"Retry \d/3 will start ([\d.]+) second", result.stderr)]
    assert len(waits) == 3
    assert waits[0] <= 0.1 and 0.15 < waits[1] <= 0.2 and 0.35 < waits[2] <= 0.4


def test_cache_result_in_memory_false_reads_the_result_back_from_storage(project: Path) -> None:
    """A persisted result the flow does not keep: ``.result()`` reads it from the result
    storage (so it fails once the file is gone), while a task that keeps it in memory
    still answers."""
    result = run(project, """
        import os

        from headwater import flow, task


        @task(persist_result=True, cache_result_in_memory=False)
        def big(n: int) -> list:
            return list(range(n))


        @task(persist_result=True)
        def kept(n: int) -> list:
            return list(range(n))


        @flow
        def pipeline() -> None:
            out_of_memory, in_memory = big.submit(3), kept.submit(3)
            print(out_of_memory.result(), in_memory.result())
            storage = os.path.join(os.environ["HEADWATER_HOME"], "storage")
            for name in os.listdir(storage):
                os.unlink(os.path.join(storage, name))
            print(in_memory.result())
            try:
                out_of_memory.result()
            except Exception as exc:
                print(type(exc).__name__)


        if __name__ == "__main__":
            pipeline()
    """)
    assert lines(result) == ["[0, 1, 2] [0, 1, 2]", "[0, 1, 2]", "ResultMissing"]
