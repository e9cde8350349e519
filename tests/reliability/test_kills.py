"""A busy flow process killed at random moments leaves a true record.

Each test starts a flow process (tasks submitted on the concurrent runner, sequential task
calls, a subflow, a task that fails once and is retried), in a loop of flow runs, and ends
it with a signal at a random moment: ``kill -9`` (anywhere, and within the first 100 ms
of a flow body), SIGTERM, and SIGINT (Ctrl-C). After each kill a fresh process opens the
store through the public read API, as ``headwater runs`` would, and the record must hold:

* every flow run and task run has a state history, and its state is the last one there;
* every run is final (its process is dead): the unfinished ones show ``Crashed``;
* no history has a state after a final one (so never two final states, never a
  ``Completed`` after ``Crashed``), and the timestamps of a history are in order;
* every task run belongs to a recorded flow run;
* what the design promises to be durable is there: a flow run whose body printed its
  first line (its row, Running, is committed before the body runs), and a flow run whose
  call returned to the caller, with the state the caller saw and all its task runs
  final (every state is committed before the flow call returns);
* a flow call that raised KeyboardInterrupt to its caller is not recorded Completed.

The moments come from a seeded generator; the seed is printed (and named in every
failure): ``HEADWATER_RELIABILITY_SEED=<seed>`` replays a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .procs import child_env

SEED = int(os.environ.get("HEADWATER_RELIABILITY_SEED") or random.randrange(2**32))

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

# Tasks per run of `busy`: 40 submitted, 10 called in turn, 2 that are retried once.
BUSY_TASKS = 52
INNER_TASKS = 5

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    # Under nohup SIGINT is ignored: the test's Ctrl-C must reach the flow as it would
    # from a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from headwater import flow, task
    from headwater.runtime import flow_run, task_run


    def say(*words):
        sys.stdout.write(" ".join(map(str, words)) + "\\n")
        sys.stdout.flush()


    @task
    def square(x):
        time.sleep(0.002)
        return x * x


    @task(retries=1, retry_delay_seconds=0)
    def flaky(x):
        if task_run.run_count < 2:
            raise ValueError(f"the first attempt for {x} fails")
        return x


    @flow
    def inner(n):
        say("BODY", flow_run.id)
        return sum(square(i) for i in range(n))


    flow_run_ids = [None]


    @flow(task_runner="concurrent")
    def busy(round):
        flow_run_ids.append(flow_run.id)
        say("BODY", flow_run.id)
        futures = [square.submit(i) for i in range(40)]
        total = sum(square(i) for i in range(10))
        total += inner(5)
        total += sum(flaky(i) for i in range(2))
        return total + sum(f.result() for f in futures)


    for round in range(10**6):
        flow_run_ids.append(None)  # an interrupt before the body names no run
        try:
            state = busy(round, return_state=True)
        except KeyboardInterrupt:
            say("INTERRUPTED", flow_run_ids[-1])
            raise
        say("DONE", state.state_details.flow_run_id, state.name)
    """
)

# Opens the store as any reader does (the read API of a new session) and dumps it.
CHECKER = textwrap.dedent(
    """
    import json, sys
    from headwater import Session

    def history(states):
        return [[s.type.value, s.name, s.ts] for s in states]

    with Session() as session:
        store = session.store
        flows = store.read_flow_runs(limit=10**9)
        tasks = {}
        for t in store.read_task_runs():
            tasks[t.id] = {"flow_run_id": t.flow_run_id, "name": t.name,
                           "state": [t.state.type.value, t.state.name] if t.state else None,
                           "history": []}
        out = []
        for f in flows:
            for run_id, states in store.read_task_run_states(f.id).items():
                if run_id in tasks:
                    tasks[run_id]["history"] = history(states)
            out.append({"id": f.id, "name": f.name, "flow_name": f.flow_name,
                        "state": [f.state.type.value, f.state.name] if f.state else None,
                        "history": history(store.read_states(f.id))})
    json.dump({"flows": out, "tasks": tasks}, sys.stdout)
    """
)


@dataclass
class Figures:
    """What a test tried and checked, printed at its end."""

    kills: int = 0
    early: int = 0
    flow_runs: int = 0
    task_runs: int = 0
    states: int = 0
    returned: int = 0  # flow calls that returned before the kill, checked complete
    bodies: int = 0  # flow bodies that started before the kill, checked recorded
    interrupted: int = 0  # flow calls that raised KeyboardInterrupt, checked not Completed
    absorbed: int = 0  # Ctrl-Cs that landed in a final write: the call returned, pressed again

    def line(self, what: str) -> str:
        return (f"{what}: {self.kills} kills ({self.early} within 100 ms of a flow body); "
                f"after each, every row checked, at the end {self.flow_runs} flow runs, "
                f"{self.task_runs} task runs, {self.states} states, {self.returned} returned and "
                f"{self.bodies} started flow runs found, {self.interrupted} interrupted calls, "
                f"{self.absorbed} Ctrl-C landed in a final write (pressed again); seed {SEED}")


class Child:
    """A running flow process and the lines it printed (read by a thread)."""

    def __init__(self, script: Path, home: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(script)], env=child_env(home, PYTHONUNBUFFERED="1"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.absorbed = 0  # Ctrl-Cs that landed in a final write (pressed again)
        self.body = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.errors = ""
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("BODY"):
                self.body.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.errors = self.proc.stderr.read()

    def kill(self, signum: int) -> None:
        """Send ``signum`` and wait for the process to end. A Ctrl-C that lands while a
        flow run's final state is being written is not raised (the call returns as the
        run is recorded, docs/reliability.md): as at a terminal, Ctrl-C is pressed again,
        at most twice, and only when the call visibly returned after the first."""
        deadline = time.monotonic() + 30
        presses = 0
        while True:
            seen = len(self.lines)
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass
            presses += 1
            try:
                self.proc.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                pass
            returned = any(line.startswith("DONE") for line in self.lines[seen:])
            if signum == signal.SIGINT and returned and presses < 3:
                self.absorbed += 1
                continue
            try:
                self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"the flow process did not end within 30 s of signal {signum} "
                                     f"(seed {SEED})") from None
        self.reader.join(timeout=10)
        self.err_reader.join(timeout=10)

    def said(self, word: str) -> list[list[str]]:
        return [line.split()[1:] for line in self.lines if line.startswith(word + " ")]


def read_record(home: Path) -> dict:
    """The whole record, as a fresh process reading the store sees it."""
    proc = subprocess.run([sys.executable, "-c", CHECKER], env=child_env(home, PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"reading the store failed (seed {SEED}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def check_record(record: dict, started: set[str], returned: dict[str, str], interrupted: dict[str, str],
                 figures: Figures) -> list[str]:
    """The invariants of the module docstring over the whole record: what breaks them."""
    problems: list[str] = []
    flows = {f["id"]: f for f in record["flows"]}
    tasks = record["tasks"]
    per_flow: dict[str, list[dict]] = {}
    for task_id, t in tasks.items():
        per_flow.setdefault(t["flow_run_id"], []).append(t)
        if t["flow_run_id"] not in flows:
            problems.append(f"task run {t['name']} ({task_id}) belongs to no recorded flow run")
    runs = [("flow run", f["name"], f) for f in flows.values()] + [("task run", t["name"], t) for t in tasks.values()]
    for kind, name, run in runs:
        history = run["history"]
        figures.states += len(history)
        if not history:
            problems.append(f"{kind} {name} has no state history (state {run['state']})")
            continue
        if run["state"] is None or run["state"][0] not in FINAL:
            problems.append(f"{kind} {name} of a dead process is not final: {run['state']}")
        finals = [i for i, s in enumerate(history) if s[0] in FINAL]
        if finals and finals[0] != len(history) - 1:
            problems.append(f"{kind} {name} has states after its final one: "
                            f"{' > '.join(s[1] for s in history)}")
        if [s[:2] for s in history][-1] != run["state"]:
            problems.append(f"{kind} {name} shows {run['state']} but its history ends "
                            f"{history[-1][:2]}")
        stamps = [s[2] for s in history]
        if stamps != sorted(stamps):
            problems.append(f"{kind} {name} has a history out of order: {history}")
    for run_id in started:
        if run_id not in flows:
            problems.append(f"flow run {run_id} started its body before the kill but is not recorded")
    for run_id, seen in returned.items():
        run = flows.get(run_id)
        if run is None:
            problems.append(f"flow run {run_id} returned {seen} to its caller but is not recorded")
            continue
        if run["state"] is None or run["state"][1] != seen:
            problems.append(f"flow run {run['name']} returned {seen} but is recorded {run['state']}")
        mine = per_flow.get(run_id, [])
        if len(mine) != BUSY_TASKS or any(t["state"] != ["COMPLETED", "Completed"] for t in mine):
            problems.append(f"flow run {run['name']} returned, but its task runs are "
                            f"{sorted(str(t['state']) for t in mine)} ({len(mine)} of {BUSY_TASKS})")
    for run_id, errors in interrupted.items():
        run = flows.get(run_id)
        if run is not None and run["state"] is not None and run["state"][0] == "COMPLETED":
            problems.append(f"flow run {run['name']} raised KeyboardInterrupt to its caller but is "
                            f"recorded {run['state']}; the process ended with:\n{errors}")
    figures.interrupted += len(interrupted)
    figures.flow_runs += len(flows)
    figures.task_runs += len(tasks)
    figures.bodies += len(started)
    figures.returned += len(returned)
    return problems


def kill_rounds(tmp_path: Path, moments: list[tuple[int, str, float]], what: str) -> Figures:
    """Start the flow process once per moment ``(signal, since, seconds)`` and send the
    signal ``seconds`` after ``since`` ("start": the process started; "body": the first
    flow body began); check the whole record after each kill, and fail at the end with
    every problem seen (all kills run, so the figures are whole)."""
    script = tmp_path / "busy.py"
    script.write_text(CHILD)
    home = tmp_path / "home"
    figures = Figures()
    started: set[str] = set()
    returned: dict[str, str] = {}
    interrupted: dict[str, str] = {}  # flow run id -> the end of what its process printed
    problems: dict[str, int] = {}  # each problem once, with the kill that showed it first
    for signum, since, seconds in moments:
        child = Child(script, home)
        try:
            if since == "body":
                assert child.body.wait(timeout=60), f"no flow body started (seed {SEED}):\n{child.errors}"
            time.sleep(seconds)
        finally:
            child.kill(signum)
        figures.kills += 1
        figures.absorbed += child.absorbed
        figures.early += since == "body" and seconds <= 0.1
        started.update(words[0] for words in child.said("BODY"))
        returned.update((words[0], words[1]) for words in child.said("DONE"))
        interrupted.update((words[0], child.errors[-1500:]) for words in child.said("INTERRUPTED")
                           if words[0] != "None")
        # Only what a fresh reader sees counts; every earlier kill's runs are checked again.
        figures.flow_runs = figures.task_runs = figures.states = 0
        figures.bodies = figures.returned = figures.interrupted = 0
        for problem in check_record(read_record(home), started, returned, interrupted, figures):
            problems.setdefault(problem, figures.kills)
    print(figures.line(what))
    assert not problems, (f"seed {SEED}: {len(problems)} problems, the first:\n"
                          + "\n".join(f"after kill {k}: {p}" for p, k in list(problems.items())[:15]))
    return figures


def test_kill_9_at_random_moments_leaves_a_true_record(tmp_path: Path) -> None:
    """SIGKILL anywhere: during start-up, between flow runs, in task calls and subflows."""
    rng = random.Random(SEED)
    moments = [(signal.SIGKILL, "start", rng.uniform(0.0, 1.2)) for _ in range(3)]
    moments += [(signal.SIGKILL, "body", rng.uniform(0.1, 0.8)) for _ in range(5)]
    figures = kill_rounds(tmp_path, moments, "kill -9 at random moments")
    assert figures.kills == 8


def test_kill_9_in_the_first_100_ms_of_a_flow_body_leaves_the_run_crashed(tmp_path: Path) -> None:
    """SIGKILL 0-100 ms after the body started: the flow run is recorded, then Crashed."""
    rng = random.Random(SEED + 1)
    moments = [(signal.SIGKILL, "body", rng.uniform(0.0, 0.1)) for _ in range(7)]
    figures = kill_rounds(tmp_path, moments, "kill -9 within 100 ms of the body")
    assert figures.early == 7


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_leave_a_true_record(tmp_path: Path, signum: int) -> None:
    """SIGTERM (the default action: the process ends at once) and Ctrl-C (the flow sees
    KeyboardInterrupt and ends its runs itself) at random moments of a busy flow."""
    rng = random.Random(SEED + signum)
    moments = [(signum, "body", rng.uniform(0.0, 0.6)) for _ in range(4)]
    figures = kill_rounds(tmp_path, moments, f"{signal.Signals(signum).name} at random moments")
    assert figures.kills == 4
