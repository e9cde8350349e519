"""Living with a run history from the command line: `headwater runs logs`, `runs tasks`,
`runs delete`, `runs prune`, `cache prune`, the task-count column and subflow rows of
`headwater runs`, and `runs show` on a 20,000-task run."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from headwater import flow, get_run_logger, task
from headwater.cli import main
from headwater.runs import FlowRun, TaskRun
from headwater.states import Completed, Failed, Pending, Running
from headwater.tasks import task_input_hash
from headwater.task_lines import marker_row


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def history(headwater_session):
    """Runs of three flows: etl (a failed task after a retry, a warning, a subflow with
    its own subflow), report, and a failed one."""

    @task(retries=1, retry_delay_seconds=0)
    def load(n):
        if n == 3:
            raise ValueError(f"bad row {n}")
        if n == 2:
            get_run_logger().warning("row 2 is odd")
        return n

    @flow(flow_run_name="leaf-{n}")
    def leaf(n: int):
        return n

    @flow(flow_run_name="child-{n}")
    def child(n: int):
        return leaf(n)

    @flow(flow_run_name="etl-{n}")
    def etl(n: int):
        states = [load(i, return_state=True) for i in range(n)]
        child(n)
        return len(states)

    @flow(flow_run_name="report-{n}")
    def report(n: int):
        return n

    etl(2)
    report(1)
    etl(5)
    headwater_session.store.flush()
    return headwater_session.store


def test_runs_lists_task_counts_and_subflow_runs_under_their_parent(history, capsys):
    """TASKS counts completed ✓ and failed ✗; subflow runs follow their parent, indented."""
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split() == ["NAME", "FLOW", "STATE", "TASKS", "START", "DURATION", "ID"]
    names = [row[:12].strip() for row in rows[1:]]
    assert names == ["etl-5", "↳ child-5", "↳ leaf-5", "report-1", "etl-2", "↳ child-2", "↳ leaf-2"]
    assert rows[3].startswith("  ↳ leaf-5")  # one step further in
    assert "4 ✓ 1 ✗" in rows[1] and "2 ✓" in rows[5] and "✗" not in rows[5]


def test_runs_flow_repeated_means_either(history, capsys):
    """--flow a --flow b lists the runs of both flows, flat, newest first."""
    _, out, _ = run_cli(capsys, "runs", "--flow", "report", "--flow", "leaf", "--json")
    assert [r["name"] for r in json.loads(out)] == ["leaf-5", "report-1", "leaf-2"]
    code, out, _ = run_cli(capsys, "runs", "--flow", "nope", "--flow", "other")
    assert code == 0 and "No flow runs match --flow nope --flow other" in out


def test_runs_json_gives_task_run_counts(history, capsys):
    """Each run of `runs --json` has the counts of its task runs by state."""
    _, out, _ = run_cli(capsys, "runs", "--json", "--flow", "etl")
    etl5 = json.loads(out)[0]
    assert etl5["task_runs"] == {"total": 5, "by_type": {"COMPLETED": 4, "FAILED": 1},
                                 "by_name": {"Completed": 4, "Failed": 1}}


def test_runs_logs_prints_the_run_s_lines_in_order(history, capsys):
    """Flow and task run lines, labelled as the console did, the last one the run's end."""
    code, out, _ = run_cli(capsys, "runs", "logs", "etl-5")
    assert code == 0
    lines = [line for line in out.splitlines() if " | " in line]
    assert "Created flow run 'etl-5'" in lines[0]
    assert "Flow run 'etl-5' - Finished in state Completed" in lines[-1]
    assert any("| WARNING | Task run 'load-" in line and "row 2 is odd" in line for line in lines)
    assert "ValueError: bad row 3" in out  # the traceback, under its line


def test_runs_logs_filters_by_level_and_task(history, capsys):
    """--level keeps that level and above; --task one task run's or one task's lines."""
    _, out, _ = run_cli(capsys, "runs", "logs", "etl-5", "--level", "warning")
    levels = {line.split(" | ")[1].strip() for line in out.splitlines() if " | " in line}
    assert levels == {"WARNING", "ERROR"}
    task_run = next(t for t in history.read_task_runs(history.read_flow_run("etl-5").id)
                    if t.parameters == {"n": 2})
    _, out, _ = run_cli(capsys, "runs", "logs", "etl-5", "--task", task_run.name, "--json")
    data = json.loads(out)
    assert [x["message"] for x in data["logs"]] == ["row 2 is odd", "Finished in state Completed()"]
    assert data["total"] == 2 and {x["task_run_id"] for x in data["logs"]} == {task_run.id}
    _, out, _ = run_cli(capsys, "runs", "logs", "etl-5", "--task", "load", "--level", "error", "--json")
    assert json.loads(out)["total"] == 2  # both attempts of the failing one
    code, out, _ = run_cli(capsys, "runs", "logs", "etl-5", "--task", "load", "--level", "critical")
    assert code == 0 and "No log lines of flow run 'etl-5' match --level critical --task load" in out
    code, out, err = run_cli(capsys, "runs", "logs", "etl-5", "--task", "nothing")  # a typo: said so
    assert code == 1 and "flow run 'etl-5' has no task run or task named 'nothing'" in err


@pytest.mark.parametrize("argv, code, message", [
    (["runs", "logs", "no-such-run"], 1, "no flow run with id or name 'no-such-run'"),
    (["runs", "logs", "etl-5", "--level", "loud"], 2, "--level 'loud' is not a log level; expected one of DEBUG"),
    (["runs", "tasks", "no-such-run"], 1, "no flow run with id or name 'no-such-run'"),
    (["runs", "tasks", "etl-5", "--state", "sideways"], 2, "--state 'sideways' is not a state"),
    (["runs", "tasks", "etl-5", "--offset", "-3"], 2, "--offset -3 is negative"),
    (["runs", "delete", "etl-5", "no-such-run", "--yes"], 1, "no flow run with id or name 'no-such-run'"),
    (["runs", "prune", "--older-than", "0s", "--keep-last", "-1"], 2, "--keep-last -1 is negative"),
    (["runs", "prune", "--older-than", "0s", "--state", "sideways"], 2, "--state 'sideways' is not a state"),
])
def test_bad_input_is_one_line_naming_the_value(history, capsys, argv, code, message):
    """Unknown runs, levels, states and numbers: one line on stderr, and nothing changes."""
    got, out, err = run_cli(capsys, *argv)
    assert (got, out) == (code, "")
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("headwater: error: ")
    assert len(history.read_flow_runs()) == 7


@pytest.mark.parametrize("duration", ["30", "1x", "d", "-2d", "ten days", "1e300d", "1_0d"])
def test_a_bad_duration_is_refused_saying_what_is_expected(history, capsys, duration):
    """--older-than takes a number and a unit (s, m, h, d, w)."""
    with pytest.raises(SystemExit) as exc:
        main(["runs", "prune", f"--older-than={duration}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"expected a duration such as 30d, 12h, 90m or 0s (s, m, h, d or w after a number), got {duration!r}" in err
    assert err.startswith("headwater: error: runs prune: ") and len(err.strip().splitlines()) == 1


def test_a_duration_further_back_than_any_run_is_refused_in_one_line(history, capsys):
    """No traceback for 10,000,000 weeks: one line naming the value and the limit."""
    with pytest.raises(SystemExit) as exc:
        main(["runs", "prune", "--older-than", "10000000w", "--dry-run"])
    assert exc.value.code == 2
    assert "expected a duration of at most 36500d (100 years), got '10000000w'" in capsys.readouterr().err


def test_runs_tasks_lists_state_duration_retries_and_cache_key(history, capsys):
    """One row per task run; --state, --limit and --offset; --json with total and counts."""
    code, out, _ = run_cli(capsys, "runs", "tasks", "etl-5")
    rows = out.splitlines()
    assert code == 0 and rows[0].split() == ["NAME", "TASK", "STATE", "START", "DURATION", "RETRIES", "CACHE", "KEY"]
    assert len(rows) == 6 and [r.split()[2] for r in rows[1:]].count("Failed") == 1
    failed = next(r for r in rows[1:] if "Failed" in r)
    assert failed.split()[-2:] == ["1", "-"]  # one retry, no cache key
    _, out, _ = run_cli(capsys, "runs", "tasks", "etl-5", "--limit", "2", "--offset", "1")
    assert len(out.splitlines()) == 4 and "(showing 2-3 of 5; --offset and --limit for others)" in out
    _, out, _ = run_cli(capsys, "runs", "tasks", "etl-5", "--state", "FAILED", "--json")
    data = json.loads(out)
    assert (data["total"], data["offset"], data["limit"]) == (1, 0, None)
    assert data["task_runs"][0]["parameters"] == {"n": 3} and data["task_runs"][0]["retries"] == 1
    assert data["counts"]["by_type"] == {"COMPLETED": 4, "FAILED": 1}
    code, out, _ = run_cli(capsys, "runs", "tasks", "etl-5", "--state", "cached")
    assert code == 0 and "No task runs of flow run 'etl-5' are in state 'cached'; theirs: 4 Completed, 1 Failed." in out


def test_runs_delete_needs_yes_off_a_terminal(history, capsys):
    """Without a terminal to ask on, --yes is needed; nothing is deleted without it."""
    code, out, err = run_cli(capsys, "runs", "delete", "etl-5")
    assert code == 2 and "add --yes to confirm" in err
    assert history.read_flow_run("etl-5") is not None


def test_runs_delete_takes_subflow_runs_task_runs_and_logs_but_not_the_cache(headwater_session, capsys):
    """The run, its subflow runs at any depth, task runs, states and logs go; its cache
    entries stay; the other runs stay."""

    @task(cache_key_fn=task_input_hash)
    def double(x):
        return 2 * x

    @flow(flow_run_name="inner")
    def inner():
        return double(1)

    @flow(flow_run_name="outer-{n}")
    def outer(n: int):
        return double(n) + inner()

    outer(1)
    outer(2)
    store = headwater_session.store
    store.flush()
    run = store.read_flow_run("outer-1")
    entries = store.read_cache_entries()
    code, out, _ = run_cli(capsys, "runs", "delete", "outer-1", "--yes")
    assert code == 0
    assert out.startswith("Deleted 1 flow run and 1 subflow run: 2 task runs,")
    assert "The run store's files went from" in out
    assert [r.name for r in store.read_flow_runs()] == ["inner", "outer-2"]
    assert store.read_task_runs(run.id) == [] and store.read_states(run.id) == []
    assert store.read_logs(flow_run_id=run.id) == []
    assert [e.key for e in store.read_cache_entries()] == [e.key for e in entries]


def running_flow_run(store, name: str) -> FlowRun:
    """A flow run of this process recorded as Running (so it is not taken for crashed)."""
    run = FlowRun(f"{name}-id", "etl", name)
    run.start_ts = time.time()
    store.create_flow_run(run)
    run.state = Running()
    store.record_state(run, run.state)
    store.flush()
    return run


def test_runs_delete_refuses_a_running_run_unless_forced(history, capsys):
    """A run that has not ended is refused, naming it; --force deletes it."""
    running_flow_run(history, "busy-run")
    code, out, err = run_cli(capsys, "runs", "delete", "etl-2", "busy-run", "--yes")
    assert code == 1 and out == ""
    assert err.strip() == ("headwater: error: flow run 'busy-run' is Running and has not ended; deleting it would "
                           "leave its process writing to a run that is gone (--force deletes it anyway)")
    assert history.read_flow_run("etl-2") is not None  # nothing deleted
    code, out, _ = run_cli(capsys, "runs", "delete", "etl-2", "busy-run", "--yes", "--force", "--json")
    assert code == 0 and len(json.loads(out)["deleted"]["flow_run_ids"]) == 4
    assert history.read_flow_run("busy-run") is None and history.read_flow_run("etl-2") is None


def test_runs_prune_deletes_ended_runs_older_than_the_duration(history, capsys):
    """--dry-run lists and deletes nothing; --older-than 1h keeps fresh runs; 0s prunes
    every ended top-level run (with its subflow runs), never a running one."""
    running_flow_run(history, "busy-run")  # a run of etl: the newest, but not ended
    code, out, _ = run_cli(capsys, "runs", "prune", "--older-than", "1h", "--yes")
    assert code == 0 and "nothing to delete" in out and len(history.read_flow_runs()) == 8
    code, out, _ = run_cli(capsys, "runs", "prune", "--older-than", "0s", "--dry-run")
    assert code == 0 and out.startswith("Would delete 3 flow runs")
    assert {line.split()[0] for line in out.splitlines()[2:]} == {"etl-5", "report-1", "etl-2"}
    assert len(history.read_flow_runs()) == 8
    code, out, _ = run_cli(capsys, "runs", "prune", "--older-than", "0s", "--flow", "etl", "--keep-last", "1", "--yes")
    assert code == 0 and out.startswith("Deleted 1 flow run and 2 subflow runs")
    assert history.read_flow_run("etl-2") is None and history.read_flow_run("leaf-2") is None
    code, out, _ = run_cli(capsys, "runs", "prune", "--older-than", "0s", "--state", "completed", "--yes")
    assert code == 0
    assert [r.name for r in history.read_flow_runs()] == ["busy-run"]


def test_runs_prune_asks_and_needs_yes_off_a_terminal(history, capsys):
    code, _, err = run_cli(capsys, "runs", "prune", "--older-than", "0s")
    assert code == 2 and "`headwater runs prune` deletes recorded runs; add --yes" in err
    assert len(history.read_flow_runs()) == 7


def test_cache_prune_keeps_every_file_a_run_or_entry_refers_to(headwater_session, capsys):
    """Expired entries go; a result file goes only when no entry, task run or flow run
    refers to it and it is an hour old."""

    @task(cache_key_fn=task_input_hash, cache_expiration=dt.timedelta(seconds=0.2))
    def cached(x):
        return x * 2

    @task(persist_result=True)
    def kept(x):
        return x + 1

    @flow(flow_run_name="results")
    def results():
        return cached(1) + kept(1)

    results()
    store = headwater_session.store
    store.flush()
    storage = headwater_session.settings.local_storage_path
    locations = {t.name.split("-")[0]: t.result_location for t in store.read_task_runs()}
    old = time.time() - 2 * 3600
    for name in locations.values():
        os.utime(storage / name, (old, old))
    orphan_old, orphan_new, by_flow_run = "a" * 64, "b" * 64, "c" * 64
    for name in (orphan_old, orphan_new, by_flow_run):
        (storage / name).write_bytes(b"HWR1")
    os.utime(storage / orphan_old, (old, old))
    os.utime(storage / by_flow_run, (old, old))
    run = running_flow_run(store, "with-parameters")
    run.parameters_location = by_flow_run
    store.record_state(run, Completed())
    store.flush()
    time.sleep(0.3)  # the cache entry expires

    code, out, _ = run_cli(capsys, "cache", "prune", "--dry-run", "--json")
    assert json.loads(out)["result_files"] == [orphan_old] and len(store.read_cache_entries()) == 1
    code, out, _ = run_cli(capsys, "cache", "prune")
    assert code == 0
    assert out.startswith("Removed 1 expired cache entry and 1 result file (4 bytes)")
    assert store.read_cache_entries() == []
    left = sorted(p.name for p in storage.iterdir())
    assert left == sorted([locations["cached"], locations["kept"], orphan_new, by_flow_run])

    assert run_cli(capsys, "runs", "delete", "results", "--yes")[0] == 0
    run_cli(capsys, "cache", "prune")
    assert sorted(p.name for p in storage.iterdir()) == sorted([orphan_new, by_flow_run])


def test_runs_show_names_the_parent_of_a_subflow_run(history, capsys):
    _, out, _ = run_cli(capsys, "runs", "show", "leaf-5")
    parent = history.read_flow_run("child-5")
    assert f"  subflow of: flow run 'child-5' (id {parent.id})" in out
    _, out, _ = run_cli(capsys, "runs", "show", "leaf-5", "--json")
    assert json.loads(out)["parent_flow_run_name"] == "child-5"


BIG = 20_000


@pytest.fixture
def big_run(headwater_session):
    """A 20,000-task flow run (4 failed, 1 more retried), recorded through the store's
    writer API as the engine records one (running 20,000 tasks takes longer)."""
    store = headwater_session.store
    run = FlowRun("big-run-id", "etl", "big-run")
    run.start_ts = time.time()
    store.create_flow_run(run)
    for state in (Pending(), Running()):
        run.state = state
        store.record_state(run, state)
    store.record_logs([marker_row(run.id, time.time())])
    for i in range(BIG):
        task_run = TaskRun(f"big-t{i:05d}", "load", "k", f"load-{i}", {"i": i}, frozenset(), run.id)
        store.create_task_run(task_run)
        task_run.start_ts = time.time()
        store.record_state(task_run, Running())
        task_run.run_count = 2 if i % 5000 in (7, 8) else 1
        task_run.end_ts = time.time()
        task_run.state = Failed(message="boom") if i % 5000 == 7 else Completed()
        store.record_state(task_run, task_run.state)
    run.end_ts = time.time()
    run.state = Failed(message="4/20000 states failed.")
    store.record_state(run, run.state)
    store.flush()
    return run


def test_runs_show_on_a_20000_task_run_sums_it_up(big_run, capsys):
    """A state summary, the failed and retried task runs, and how to see the rest; the
    log lines are cut to the first and last 100."""
    code, out, _ = run_cli(capsys, "runs", "show", "big-run")
    assert code == 0
    assert "Task runs (20,000): 19,996 Completed, 4 Failed" in out
    section = out.split("Failed and retried (8):\n")[1].split("\n\n")[0].splitlines()
    assert [line.split("|")[2].split()[0] for line in section[:-1]] == [
        f"load-{i}" for i in (7, 8, 5007, 5008, 10007, 10008, 15007, 15008)]
    assert section[-1] == ("  ... 19,992 more task runs: `headwater runs show big-run --all`, "
                           "or `headwater runs tasks big-run`")
    assert "... 39800 more lines (use --logs 40000 / --logs all)" in out
    assert len(out.splitlines()) < 250


def test_runs_tasks_and_logs_page_through_a_20000_task_run(big_run, capsys):
    """The last task runs and the error lines of a big run, with totals."""
    _, out, _ = run_cli(capsys, "runs", "tasks", "big-run", "--offset", "19998", "--json")
    data = json.loads(out)
    assert data["total"] == BIG and [t["name"] for t in data["task_runs"]] == ["load-19998", "load-19999"]
    _, out, _ = run_cli(capsys, "runs", "tasks", "big-run", "--state", "failed")
    assert [row.split()[0] for row in out.splitlines()[1:]] == ["load-7", "load-5007", "load-10007", "load-15007"]
    _, out, _ = run_cli(capsys, "runs", "logs", "big-run", "--task", "load-5007")
    assert out.strip().endswith("Task run 'load-5007' - Finished in state Failed('boom')")


FOLLOWED = textwrap.dedent("""
    import time
    from headwater import flow, task, get_run_logger

    @task
    def step(i):
        get_run_logger().info("step %d", i)
        time.sleep(0.4)

    @flow(flow_run_name="followed")
    def slow():
        for i in range(4):
            step(i)
        get_run_logger().info("last words")

    slow()
""")


def test_runs_logs_follow_prints_lines_until_the_run_ends(headwater_session, tmp_path, capsys):
    """--follow prints what is there, then new lines as they come, and returns once the
    run has ended with its last lines printed."""
    script = tmp_path / "followed.py"
    script.write_text(FOLLOWED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(headwater_session.settings.home), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")
    child = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while headwater_session.store.read_flow_run("followed") is None:
            assert time.monotonic() < deadline and child.poll() is None, "the flow did not start"
            time.sleep(0.05)
        started = time.monotonic()
        code, out, _ = run_cli(capsys, "runs", "logs", "followed", "--follow")
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
    assert code == 0 and time.monotonic() - started > 0.3  # it waited for lines to come
    lines = [line for line in out.splitlines() if " - " in line]
    messages = [line.split(" - ", 1)[1] for line in lines]
    assert [m for m in messages if m.startswith("step ")] == ["step 0", "step 1", "step 2", "step 3"]
    assert messages[-2:] == ["last words", "Finished in state Completed('All states completed.')"]
    assert len(lines) == len(set(lines))  # no line twice


def test_runs_show_all_lists_every_task_run_after_the_failed_ones(headwater_session, capsys):
    """Past 50 task runs, --all lists every one, after the failed and retried ones."""

    @task
    def step(i):
        if i == 42:
            raise ValueError("no 42")
        return i

    @flow(flow_run_name="sixty")
    def sixty():
        return [step(i, return_state=True) for i in range(60)]

    sixty()
    headwater_session.store.flush()
    _, out, _ = run_cli(capsys, "runs", "show", "sixty")
    assert "Task runs (60): 59 Completed, 1 Failed\nFailed and retried (1):\n" in out
    assert "... 59 more task runs" in out and "All task runs:" not in out
    _, out, _ = run_cli(capsys, "runs", "show", "sixty", "--all")
    every = out.split("All task runs:\n")[1].split("\n\n")[0].splitlines()
    assert len(every) == 60 and "more task runs" not in out
    assert "step-" in out.split("Failed and retried (1):\n")[1].splitlines()[0]


def test_runs_delete_asks_on_a_terminal(history, capsys, monkeypatch):
    """On a terminal it asks: no keeps the runs (exit 1), yes deletes them."""
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    code, out, _ = run_cli(capsys, "runs", "delete", "report-1")
    assert code == 1 and out == "Nothing deleted.\n" and history.read_flow_run("report-1") is not None
    code, out, _ = run_cli(capsys, "runs", "delete", "report-1")
    assert code == 0 and out.startswith("Deleted 1 flow run: 0 task runs")
    assert history.read_flow_run("report-1") is None


def test_runs_delete_by_a_shared_name_says_which_one_and_that_others_stay(headwater_session, capsys):
    """A name means the newest run of that name; the older ones are named as staying."""

    @flow(flow_run_name="nightly")
    def nightly():
        return 1

    for _ in range(3):
        nightly()
    headwater_session.store.flush()
    newest = headwater_session.store.read_flow_run("nightly")
    code, out, err = run_cli(capsys, "runs", "delete", "nightly", "--yes")
    assert code == 0
    assert "Only the newest run of that name: 2 older runs named 'nightly' stay (give their ids" in err
    left = [r for r in headwater_session.store.read_flow_runs() if r.name == "nightly"]
    assert len(left) == 2 and newest.id not in {r.id for r in left}


def test_runs_tasks_past_the_end_says_so(history, capsys):
    code, out, _ = run_cli(capsys, "runs", "tasks", "etl-5", "--offset", "99", "--limit", "2")
    assert code == 0 and out.strip() == "--offset 99 is past the last of the 5 task runs; --offset 3 shows the last ones."
