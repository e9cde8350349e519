"""The cache under four processes computing and refreshing the same keys at once.

tests/plugins/test_cache_processes.py checks the everyday cases (a fresh process gets a
hit; two processes computing one key both finish). Here four processes, released
together, each run three rounds over the same 40 keys in their own order: a caching task
and its ``refresh_cache`` twin (the same key, always recomputed and written again), so
result files and cache entries are rewritten while other processes read them. Whatever
a process reads, Cached or computed, must be a value the task computed for those
inputs; afterwards there is one entry per key, each naming a task run that computed
that key, and a fresh process gets a hit with a right value for every key.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from headwater import Session

from .procs import child_env, start_together

PROCESSES = 4
ROUNDS = 3
KEYS = 40

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, random, sys, time
    from pathlib import Path
    from headwater import flow, task

    worker, gate, rounds, keys = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


    def by_n(context, parameters):
        return f"square-of-{parameters['n']}"


    @task(cache_key_fn=by_n, persist_result=True)
    def square(n):
        # ~64 KB a result, so writing one file takes a moment another process can hit.
        blob = hashlib.sha256(str(n).encode()).hexdigest().encode() * 1000
        return {"n": n, "square": n * n, "blob": blob, "pid": os.getpid()}


    refresh = square.with_options(refresh_cache=True)


    @flow(task_runner="concurrent")
    def squares(order, refreshing):
        chosen = refresh if refreshing else square
        return [(n, chosen.submit(n)) for n in order]


    Path(gate, f"ready-{worker}").touch()
    deadline = time.time() + 60
    while not Path(gate, "go").exists() and time.time() < deadline:
        time.sleep(0.005)
    rng = random.Random(worker)
    seen = []
    for r in range(rounds):
        order = list(range(keys))
        rng.shuffle(order)
        # Workers 0 and 1 refresh in the middle round, while 2 and 3 read.
        for n, future in squares(order, refreshing=(r == 1 and worker < 2)):
            state = future.wait() or future.state
            value = state.result()
            seen.append([r, n, state.name, value["n"], value["square"],
                         hashlib.sha256(value["blob"]).hexdigest(), value["pid"]])
    print(json.dumps(seen))
    """
)


def right_blob(n: int) -> str:
    return hashlib.sha256(hashlib.sha256(str(n).encode()).hexdigest().encode() * 1000).hexdigest()


def start(script: Path, home: Path, worker: int, gate: Path, rounds: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), str(worker), str(gate), str(rounds), str(KEYS)],
                            env=child_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> list[list]:
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-3000:]
    assert "database is locked" not in err
    return json.loads(out.strip().splitlines()[-1])


def test_four_processes_on_the_same_keys_only_ever_read_what_the_task_computed(
        tmp_path: Path, headwater_home: Path) -> None:
    """Every value read by any process is the task's value for its inputs; one entry per
    key, consistent with the run that wrote it; a fresh process hits every key."""
    script, gate = tmp_path / "squares.py", tmp_path / "gate"
    script.write_text(WORKER)
    procs = start_together(PROCESSES, lambda w: start(script, headwater_home, w, gate, ROUNDS), gate)
    seen = [row for proc in procs for row in finish(proc)]
    assert len(seen) == PROCESSES * ROUNDS * KEYS
    wrong = [row for row in seen if (row[3], row[4], row[5]) != (row[1], row[1] ** 2, right_blob(row[1]))]
    assert not wrong, f"{len(wrong)} reads returned a value computed for other inputs: {wrong[:5]}"
    cached = sum(row[2] == "Cached" for row in seen)
    assert cached > 0  # the processes did read each other's entries

    with Session() as session:
        store = session.store
        entries = store.read_cache_entries()
        assert sorted(e.key for e in entries) == sorted(f"square-of-{n}" for n in range(KEYS))
        for entry in entries:
            writer = store.read_task_run(entry.task_run_id)
            assert writer is not None and writer.cache_key == entry.key, entry
            assert writer.state.is_completed() and writer.state.name == "Completed", writer.state
            assert writer.result_location == entry.location
    storage = headwater_home / "storage"
    assert len([p for p in storage.iterdir() if not p.name.startswith(".")]) == KEYS

    # Once the writers are done, a fresh reader hits every key and reads a right value.
    (gate / "go").touch()
    final = finish(start(script, headwater_home, PROCESSES, gate, 1))
    assert sorted(row[1] for row in final) == list(range(KEYS))
    assert [row for row in final if row[2] != "Cached"] == []
    assert all((row[3], row[4], row[5]) == (row[1], row[1] ** 2, right_blob(row[1])) for row in final)
    print(f"cache under {PROCESSES} processes: {len(seen) + len(final)} values read "
          f"({cached} cache hits while others wrote), {len(entries)} entries checked")
