"""Eight processes write one store at the same moment: nothing is lost, nothing is doubled.

tests/plugins/test_sqlite_store.py has the everyday version (four processes, small
flows). Here eight processes are released together by a start gate and each runs flows
of many task runs (submitted on the concurrent runner and called in turn, each logging
a line), so the writers of all eight contend for the write lock the whole time. Every
flow run, task run, state and log line of every process must be read back, exactly
once, with no ``database is locked`` reaching anyone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from headwater import Session

from .procs import child_env, start_together

PROCESSES = 8
FLOWS = 4  # flow runs per process
SUBMITTED = 200  # task runs submitted per flow run
CALLED = 50  # task runs called in turn per flow run

WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from headwater import flow, task, get_run_logger

    worker, gate = int(sys.argv[1]), Path(sys.argv[2])

    @task
    def work(w, f, n):
        get_run_logger().info("work %d-%d-%d", w, f, n)
        return w * 1_000_000 + f * 1_000 + n

    @flow(task_runner="concurrent", flow_run_name="p{w}-f{f}")
    def writer(w, f, submitted, called):
        futures = [work.submit(w, f, n) for n in range(submitted)]
        total = sum(work(w, f, submitted + n) for n in range(called))
        return total + sum(x.result() for x in futures)

    # Everything is imported and ready: wait for the others, then all write at once.
    Path(gate, f"ready-{worker}").touch()
    deadline = time.time() + 60
    while not Path(gate, "go").exists() and time.time() < deadline:
        time.sleep(0.005)
    ids = []
    for f in range(int(sys.argv[3])):
        state = writer(worker, f, int(sys.argv[4]), int(sys.argv[5]), return_state=True)
        ids.append([state.state_details.flow_run_id, state.name])
    print(json.dumps(ids))
    """
)


def test_eight_processes_writing_at_once_lose_and_double_nothing(tmp_path: Path, headwater_home: Path) -> None:
    """8 processes x 4 flow runs x 250 task runs at once: every row of every process is
    read back exactly once, histories whole, and no process saw a lock error."""
    script, gate = tmp_path / "writer.py", tmp_path / "gate"
    script.write_text(WRITER)

    def start(w: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(script), str(w), str(gate), str(FLOWS), str(SUBMITTED),
                                 str(CALLED)], env=child_env(headwater_home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = start_together(PROCESSES, start, gate)
    outputs = [p.communicate(timeout=150) for p in procs]
    reported: dict[str, str] = {}
    for proc, (out, err) in zip(procs, outputs):
        assert "database is locked" not in err
        assert proc.returncode == 0, err[-3000:]
        reported.update(json.loads(out.strip().splitlines()[-1]))

    per_flow = SUBMITTED + CALLED
    with Session() as session:
        store = session.store
        flows = store.read_flow_runs(limit=10_000, flow_name="writer")
        assert sorted(f.name for f in flows) == sorted(f"p{w}-f{f}" for w in range(PROCESSES) for f in range(FLOWS))
        assert {f.id: f.state.name for f in flows} == reported == {i: "Completed" for i in reported}
        tasks = store.read_task_runs()
        assert len(tasks) == PROCESSES * FLOWS * per_flow
        assert len({t.id for t in tasks}) == len(tasks)
        # Every (process, flow, n) exactly once, with the parameters it was called with.
        assert Counter((t.parameters["w"], t.parameters["f"], t.parameters["n"]) for t in tasks) == Counter(
            (w, f, n) for w in range(PROCESSES) for f in range(FLOWS) for n in range(per_flow))
        assert all(t.state.name == "Completed" for t in tasks)
        rows = len(flows) + len(tasks)
        states = 0
        for run in flows:
            history = [s.name for s in store.read_states(run.id)]
            assert history == ["Pending", "Running", "Completed"], (run.name, history)
            states += len(history)
            for task_run_id, task_history in store.read_task_run_states(run.id).items():
                assert [s.name for s in task_history] == ["Pending", "Running", "Completed"], task_run_id
                states += len(task_history)
            lines = [r["message"] for r in store.read_logs(flow_run_id=run.id, limit=100_000)
                     if r["message"].startswith("work ")]
            w, f = (int(x[1:]) for x in run.name.split("-"))
            assert sorted(lines) == sorted(f"work {w}-{f}-{n}" for n in range(per_flow)), run.name
        assert states == 3 * rows
    print(f"concurrent writers: {PROCESSES} processes, {rows} runs, {states} states and "
          f"{len(tasks)} log lines read back exactly once")
