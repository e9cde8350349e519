"""The cache across processes: fresh processes share entries; concurrent writers agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from headwater import flow, task, get_store
    from headwater.tasks import task_input_hash

    barrier = os.environ.get("BARRIER_DIR")


    @task(cache_key_fn=task_input_hash)
    def expensive(n, tags):
        if barrier:
            # Each process marks that it is computing, then waits (bounded) for the
            # other one: both really compute the same key at the same time.
            Path(barrier, str(os.getpid())).touch()
            deadline = time.time() + 20
            while len(os.listdir(barrier)) < 2 and time.time() < deadline:
                time.sleep(0.02)
        return {"n": n * n, "tags": sorted(tags), "pid": os.getpid()}


    @flow
    def job(n):
        # A set argument: its iteration order differs between processes.
        return [expensive(n, {"alpha", "beta", "gamma", "delta"}, return_state=True)]


    [state] = job(7)
    print(json.dumps({"state": state.name, "result": state.result(),
                      "entries": len(get_store().read_cache_entries())}))
    """
)


def run_script(script: Path, home: Path, seed: str, barrier: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, HEADWATER_HOME=str(home), PYTHONHASHSEED=seed)
    env.pop("HEADWATER_LOCAL_STORAGE_PATH", None)
    env.pop("HEADWATER_DATABASE_URL", None)
    if barrier is not None:
        env["BARRIER_DIR"] = str(barrier)
    return subprocess.Popen([sys.executable, str(script)], env=env, cwd=script.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_the_same_script_in_a_fresh_process_is_cached(tmp_path: Path) -> None:
    """Run the same script twice, each in a fresh process (different hash seeds): the
    first computes, the second is Cached with the first one's result."""
    script = tmp_path / "cached_job.py"
    script.write_text(SCRIPT)
    home = tmp_path / "home"
    first = outcome(run_script(script, home, seed="1"))
    second = outcome(run_script(script, home, seed="2"))
    assert first["state"] == "Completed"
    assert second["state"] == "Cached"
    assert second["result"] == first["result"]  # same pid inside: the stored value
    assert second["entries"] == 1


def test_two_processes_computing_the_same_key_at_once_both_finish(tmp_path: Path) -> None:
    """Two processes compute the same key at the same moment: both complete with the
    right value, one cache entry remains, and a third process gets a readable hit."""
    script = tmp_path / "cached_job.py"
    script.write_text(SCRIPT)
    home = tmp_path / "home"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [run_script(script, home, seed=s, barrier=barrier) for s in ("3", "4")]
    results = [outcome(p) for p in procs]
    assert len(os.listdir(barrier)) == 2  # both bodies ran, concurrently
    assert [r["state"] for r in results] == ["Completed", "Completed"]
    assert {r["result"]["n"] for r in results} == {49}  # type: ignore[index]
    third = outcome(run_script(script, home, seed="5"))
    assert third["state"] == "Cached" and third["entries"] == 1
    assert third["result"] in [r["result"] for r in results]
    storage = home / "storage"
    assert len([p for p in storage.iterdir() if not p.name.startswith(".")]) == 1
