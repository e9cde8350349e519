"""store: state rows per second the SQLite run store sustains, from one process and from
4 processes writing to the same file at once, against plain ``sqlite3`` inserting the
same number of rows (WAL, one transaction per batch of the same size).

Each task run is created and given 3 states (Pending, Running, Completed), then
``flush()`` waits until all of it is on disk. Rows counted are state rows.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from harness import NO_LOGGING, PYTHON, Row, child_env, emit, main, median, size

RUNS = size(5_000)  # task runs per process: 15,000 state rows
PROCS = 4
BATCH = 5_000  # rows per transaction for the bare baseline (the store batches too)


def write_headwater(path: Path, runs: int) -> float:
    from headwater import states as S
    from headwater.runs import TaskRun
    from headwater.plugins.sqlite_store import SQLiteRunStore

    # Made directly, not by a Session: the writer under test is passed on by hand.
    store = SQLiteRunStore(path, writer=os.environ.get("HEADWATER_STORE_WRITER", "auto"))
    start = time.perf_counter()
    for i in range(runs):
        run = TaskRun(f"{i}-{time.time_ns()}", "bench", "abcd1234", f"bench-{i}", {"x": i})
        store.create_task_run(run)
        for state in (S.Pending(), S.Running(), S.Completed(data=i)):
            run.state = state
            store.record_state(run, state)
    store.flush()
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def write_bare(path: Path, runs: int) -> float:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS states (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "run_id TEXT, type TEXT, name TEXT, ts REAL)")
    start = time.perf_counter()
    rows = [(f"{i}-{time.time_ns()}", t, t.title(), time.time())
            for i in range(runs) for t in ("PENDING", "RUNNING", "COMPLETED")]
    for k in range(0, len(rows), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO states (run_id, type, name, ts) VALUES (?,?,?,?)", rows[k:k + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def child(args: list[str]) -> None:
    kind, path, runs, start_at = args[0], Path(args[1]), int(args[2]), float(args[3])
    if kind == "headwater":
        from headwater.plugins.sqlite_store import SQLiteRunStore

        SQLiteRunStore(path).close()  # imports and schema done before the start line
    while time.time() < start_at:  # all writers start together
        time.sleep(0.001)
    begin = time.time()
    elapsed = (write_headwater if kind == "headwater" else write_bare)(path, runs)
    emit({"elapsed": elapsed, "begin": begin, "end": begin + elapsed, "rows": runs * 3})


def _run(kind: str, procs: int) -> float:
    """Rows per second from ``procs`` processes writing one new file at once."""
    home = tempfile.mkdtemp(prefix="hw-bench-")
    path = Path(home) / "store.db"
    try:
        if kind == "bare":  # the table exists before the writers race
            write_bare(path, 0)
        else:
            subprocess.run([PYTHON, __file__, "--child", "headwater", str(path), "0", "0"],
                           env=child_env(home), capture_output=True, text=True, check=True)
        start_at = time.time() + 1.0
        children = [subprocess.Popen([PYTHON, __file__, "--child", kind, str(path), str(RUNS), str(start_at)],
                                     env=child_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for _ in range(procs)]
        outs = []
        for proc in children:
            stdout, stderr = proc.communicate(timeout=300)
            if proc.returncode:
                raise RuntimeError(f"store writer failed: {stderr[-2000:]}")
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
        span = max(o["end"] for o in outs) - min(o["begin"] for o in outs)
        rows = sum(o["rows"] for o in outs)
        found = sqlite3.connect(path).execute("SELECT count(*) FROM states").fetchone()[0]
        if found < rows:
            raise RuntimeError(f"{kind}: {rows} state rows written, {found} found")
        return rows / span
    finally:
        shutil.rmtree(home, ignore_errors=True)


def measure(args):
    rows = []
    reps = max(1, min(args.repeat, 3))  # four figures of several processes each
    for procs in (1, PROCS):
        hw = [_run("headwater", procs) for _ in range(reps)]
        bare = [_run("bare", procs) for _ in range(reps)]
        rows.append(Row(f"state rows/s, {procs} process{'es' if procs > 1 else ''}", median(hw), "rows/s",
                        median(bare), "plain sqlite3", samples=hw,
                        note=f"higher is better; all rows read back; {NO_LOGGING}" if procs == 1 else ""))
    return rows, {"task_runs_per_process": RUNS, "states_per_run": 3, "procs": PROCS, "repeat_used": reps,
                  "log_level": NO_LOGGING}


if __name__ == "__main__":
    main("store", measure, child)
