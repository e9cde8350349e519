"""`headwater runs` and `headwater runs show ID|NAME`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headwater import flow, task
from headwater.cli import main


@pytest.fixture
def history(headwater_session):
    """Three flow runs of two flows, one failed, one with retried tasks and a subflow."""
    attempts = []

    @task(retries=1, retry_delay_seconds=0)
    def flaky(n):
        attempts.append(n)
        if len(attempts) == 1:
            raise ConnectionError("reset")
        return n

    @flow(flow_run_name="child-of-{n}")
    def child(n: int):
        return n

    @flow(flow_run_name="etl-{n}")
    def etl(n: int):
        return flaky(n) + child(n)

    @flow(flow_run_name="broken-run")
    def broken():
        raise ValueError("no good")

    etl(1)
    etl(2)
    broken(return_state=True)
    headwater_session.store.flush()
    return headwater_session.store


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_lists_recent_flow_runs_newest_first(history, capsys):
    """A table with name, flow, state, start and duration; newest run first."""
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "FLOW", "STATE", "TASKS", "START", "DURATION", "ID"]
    assert lines[1].split()[:3] == ["broken-run", "broken", "Failed"]
    names = [line.split()[0] for line in lines[1:]]
    assert names.index("etl-2") < names.index("etl-1")


def test_runs_marks_subflow_runs(history, capsys):
    """Subflow runs are listed with a '↳ ' before their name; top-level runs without."""
    _, out, _ = run_cli(capsys, "runs")
    rows = out.splitlines()[1:]
    assert [row.split()[1] for row in rows if row.startswith("↳ ")] == ["child-of-2", "child-of-1"]
    assert any(row.startswith("etl-1 ") for row in rows)


def test_runs_show_lists_subflow_runs_oldest_first(headwater_session, capsys):
    """A flow run's subflow runs are listed in the order they ran."""

    @flow(flow_run_name="sub-{n}")
    def sub(n: int) -> int:
        return n

    @flow(flow_run_name="parent")
    def parent() -> None:
        for n in range(3):
            sub(n)

    parent()
    headwater_session.store.flush()
    _, out, _ = run_cli(capsys, "runs", "show", "parent")
    section = out.split("Subflow runs:\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[0] for line in section.splitlines()] == ["sub-0", "sub-1", "sub-2"]
    _, out, _ = run_cli(capsys, "runs", "show", "parent", "--json")
    assert [c["name"] for c in json.loads(out)["subflow_runs"]] == ["sub-0", "sub-1", "sub-2"]


def test_runs_show_with_a_too_short_id_prefix_says_six_characters_are_needed(history, capsys):
    """`runs show 6d4f` (an id prefix under 6 characters) explains the minimum length."""
    run = history.read_flow_runs(flow_name="broken")[0]
    code, _, err = run_cli(capsys, "runs", "show", run.id[:4])
    assert code == 1
    assert f"'{run.id[:4]}'" in err and "at least 6 characters" in err


def test_runs_json_gives_every_field(history, capsys):
    """--json prints a list of runs with id, name, flow_name, state, times and parameters."""
    code, out, _ = run_cli(capsys, "runs", "--json")
    assert code == 0
    runs = json.loads(out)
    assert len(runs) == 5
    etl1 = next(r for r in runs if r["name"] == "etl-1")
    assert etl1["flow_name"] == "etl" and etl1["state"] == "COMPLETED"
    assert etl1["parameters"] == {"n": 1} and etl1["start_time"] and etl1["end_time"]
    child = next(r for r in runs if r["name"] == "child-of-1")
    assert child["parent_flow_run_id"] == etl1["id"]


def test_runs_limit_and_flow_filter(history, capsys):
    """--limit caps the list; --flow keeps one flow's runs."""
    _, out, _ = run_cli(capsys, "runs", "--json", "--limit", "2")
    assert len(json.loads(out)) == 2
    _, out, _ = run_cli(capsys, "runs", "--json", "--flow", "etl")
    assert sorted(r["name"] for r in json.loads(out)) == ["etl-1", "etl-2"]


def test_filters_that_match_nothing_say_so_naming_the_filters(history, capsys):
    """--flow / --state that match no run: say no runs match those filters (not 'no runs yet')."""
    code, out, _ = run_cli(capsys, "runs", "--flow", "no-such-flow")
    assert code == 0
    assert "No flow runs match --flow no-such-flow" in out and "yet" not in out
    code, out, _ = run_cli(capsys, "runs", "--state", "running")
    assert code == 0 and "No flow runs match --state running" in out


def test_an_unknown_state_is_an_error_listing_the_states(history, capsys):
    """--state bogus exits 2 naming it and listing the state types and names."""
    code, out, err = run_cli(capsys, "runs", "--state", "bogus")
    assert code == 2 and out == ""
    assert "'bogus'" in err and "COMPLETED" in err and "TimedOut" in err


def test_runs_show_by_name_is_a_timeline_of_states_and_task_runs(history, capsys):
    """runs show NAME: the state history with offsets, task runs with durations and histories."""
    code, out, _ = run_cli(capsys, "runs", "show", "etl-1")
    assert code == 0
    assert "Flow run 'etl-1' of flow 'etl'" in out
    history_part = out.split("State history:")[1].split("Task runs")[0]
    assert [line.split("s", 1)[1].split()[0] for line in history_part.strip().splitlines()] == [
        "Pending", "Running", "Completed"]
    assert "Pending > Running > AwaitingRetry > Retrying > Completed" in out
    assert "child-of-1" in out.split("Subflow runs:")[1]


def test_runs_show_by_id_and_id_prefix(history, capsys):
    """runs show accepts the full id and its first characters."""
    run = history.read_flow_runs(flow_name="broken")[0]
    for ref in (run.id, run.id[:8]):
        code, out, _ = run_cli(capsys, "runs", "show", ref)
        assert code == 0 and "Flow run 'broken-run'" in out
        assert "ValueError: no good" in out


def test_runs_show_json(history, capsys):
    """runs show --json: the run with its states, task runs (with states) and subflows."""
    code, out, _ = run_cli(capsys, "runs", "show", "etl-2", "--json")
    assert code == 0
    data = json.loads(out)
    assert [s["name"] for s in data["states"]] == ["Pending", "Running", "Completed"]
    (task_run,) = data["task_runs"]
    assert task_run["task_name"] == "flaky"
    assert [s["name"] for s in task_run["states"]] == ["Pending", "Running", "Completed"]
    assert [c["name"] for c in data["subflow_runs"]] == ["child-of-2"]


def test_runs_show_unknown_run_is_an_error_naming_it(history, capsys):
    """An unknown id or name: exit 1 and a message naming it."""
    code, _, err = run_cli(capsys, "runs", "show", "no-such-run")
    assert code == 1
    assert "'no-such-run'" in err and "headwater runs" in err


def test_runs_on_an_empty_history_says_so(headwater_session, capsys):
    """With no runs yet, a line naming the store file instead of an empty table."""
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0
    assert f"No flow runs recorded in {headwater_session.store.path} yet" in out
    assert "make demo" not in out


def test_an_empty_memory_store_says_it_lives_in_one_process(headwater_home, monkeypatch, capsys):
    """With HEADWATER_DATABASE_URL=memory://, the empty listing explains why it is empty."""
    monkeypatch.setenv("HEADWATER_DATABASE_URL", "memory://")
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and "only inside one process" in out


def test_the_console_script_lists_runs_of_another_process(history, headwater_home):
    """`headwater runs` as a command reads the same HEADWATER_HOME."""
    exe = Path(sys.executable).with_name("headwater")
    env = {**os.environ, "HEADWATER_HOME": str(headwater_home)}
    result = subprocess.run([str(exe), "runs", "--flow", "etl"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "etl-1" in result.stdout and "etl-2" in result.stdout


def test_a_corrupt_database_is_a_one_line_cli_error(headwater_home, capsys):
    """The CLI reports an unusable run store in one line naming the file, exit 1."""
    headwater_home.mkdir(parents=True, exist_ok=True, mode=0o700)  # private: no warning about it
    (headwater_home / "headwater.db").write_text("not a database")
    code, _, err = run_cli(capsys, "runs")
    assert code == 1
    assert err.startswith("headwater: error:") and "headwater.db" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_a_bad_limit_is_a_usage_error_naming_the_value(bad, capsys):
    """--limit must be a whole number of at least 1; anything else exits 2 naming it."""
    with pytest.raises(SystemExit) as info:
        main(["runs", "--limit", bad])
    assert info.value.code == 2
    assert f"got '{bad}'" in capsys.readouterr().err


def test_runs_state_filter(history, capsys):
    """--state keeps runs whose state type or name matches."""
    _, out, _ = run_cli(capsys, "runs", "--json", "--state", "failed")
    assert [r["name"] for r in json.loads(out)] == ["broken-run"]


def test_a_large_parameter_is_stored_as_a_summary_and_printed_short(headwater_session, capsys):
    """A flow called with a 200,000-item list: the store keeps a readable summary instead
    of the list (the run row stays small), small parameters are kept as given, and
    `runs show` prints long values cut to one short line."""

    @flow(flow_run_name="big")
    def bigdata(items: list, label: str = "x" * 300) -> int:
        return len(items)

    bigdata(list(range(200_000)))
    store = headwater_session.store
    store.flush()
    (row,) = store._conn().execute("SELECT parameters FROM flow_runs WHERE name = 'big'").fetchall()
    assert len(row[0]) < 2_000
    run = store.read_flow_run("big")
    assert run.parameters["items"].startswith("<list of 200000 items, 1.")
    assert run.parameters["items"].endswith(" MB as JSON: not stored>")
    assert run.parameters["label"] == "x" * 300
    code, out, _ = run_cli(capsys, "runs", "show", "big")
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  parameters:")]
    assert '"items": "<list of 200000 items' in line and "(302 characters)" in line
    assert len(line) < 300
    code, out, _ = run_cli(capsys, "runs", "show", "big", "--json")
    assert json.loads(out)["parameters"]["label"] == "x" * 300


# Control characters recorded in names, messages and logs are shown escaped (raw, they
# would drive the terminal: clear it, retitle it, rewrite a line, invent a table row).
_RAW = ("\x1b", "\x07", "\r", "\x00", "\x7f", "\x9b")


def _no_raw_controls(text: str) -> None:
    for char in _RAW:
        assert char not in text, (char, text)


def test_runs_escapes_control_characters_in_names(headwater_session, capsys):
    """A run name holding ESC [2J, or a newline and a made-up table row, is one escaped row."""
    fake_row = "ghost-run  etl  Completed  2026-01-01 00:00:00  1.0ms  deadbeef"

    @flow(name="flow\x1b[31m", flow_run_name="evil\x1b[2J\n" + fake_row)
    def evil() -> None:
        return None

    evil()
    headwater_session.store.flush()
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0
    _no_raw_controls(out)
    lines = out.splitlines()
    assert len(lines) == 2 and not any(line.startswith("ghost-run") for line in lines)
    assert lines[1].startswith("evil\\x1b[2J\\nghost-run") and "flow\\x1b[31m" in lines[1]
    code, out, _ = run_cli(capsys, "runs", "--json")  # exact text for scripts
    assert json.loads(out)[0]["name"] == "evil\x1b[2J\n" + fake_row


def test_runs_show_escapes_control_characters_in_logs_and_tracebacks(headwater_session, capsys):
    """Log lines, state messages and traceback text keep their lines but show ESC, BEL,
    CR, NUL, DEL and C1 characters as escapes; task names and parameters too."""
    from headwater import get_run_logger

    @task(task_run_name="step\x1b[1A")
    def step(text: str) -> None:
        get_run_logger().info("progress \x1b[2K\r100%\x07 done\x00")
        raise ValueError("bad \x1b]0;pwned\x07 value\x7f\x9b")

    @flow(flow_run_name="noisy")
    def noisy(text: str) -> None:
        step(text)

    noisy("param\x7f\x1b", return_state=True)
    headwater_session.store.flush()
    code, out, _ = run_cli(capsys, "runs", "show", "noisy")
    assert code == 0
    _no_raw_controls(out)
    assert "progress \\x1b[2K\\r100%\\x07 done\\x00" in out
    assert "bad \\x1b]0;pwned\\x07 value\\x7f\\x9b" in out
    assert "step\\x1b[1A" in out and "param\\u007f\\u001b" in out
    logs = out.split("\nLogs:\n", 1)[1]
    assert "Traceback (most recent call last):" in logs  # still on lines of its own
    assert any(line.startswith("      ValueError: bad \\x1b]0;pwned") for line in logs.splitlines())
    code, out, _ = run_cli(capsys, "runs", "show", "noisy", "--json")
    messages = [line["message"] for line in json.loads(out)["logs"]]
    assert "progress \x1b[2K\r100%\x07 done\x00" in messages


def test_cache_ls_escapes_control_characters(headwater_session, capsys):
    """A cache key or task name holding control characters is one escaped row."""

    @task(name="cached\x1b[2J", cache_key_fn=lambda c, p: "key\x07\nrow")
    def cached() -> int:
        return 1

    @flow
    def fill() -> None:
        cached()

    fill()
    headwater_session.store.flush()
    code, out, _ = run_cli(capsys, "cache", "ls")
    assert code == 0
    _no_raw_controls(out)
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("key\\x07\\nrow") and "cached\\x1b[2J" in lines[1]


def test_a_name_with_a_lone_surrogate_is_shown_alike_everywhere(headwater_session, capsys):
    """A name made from an undecodable file name (stored as the escape \\udcff) reads the
    same in `runs`, in the `runs show` header and in its log labels: one backslash."""
    name = "run-" + os.fsdecode(b"report-\xff.csv")

    @flow(flow_run_name=name)
    def report() -> None:
        from headwater import get_run_logger

        get_run_logger().info("writing")

    report()
    headwater_session.store.flush()
    _, out, _ = run_cli(capsys, "runs")
    assert "run-report-\\udcff.csv" in out
    code, out, _ = run_cli(capsys, "runs", "show", "run-report-\\udcff.csv")
    assert code == 0
    assert "\\\\udcff" not in out
    assert out.startswith("Flow run 'run-report-\\udcff.csv' of flow 'report'")
    assert "| Flow run 'run-report-\\udcff.csv' - writing" in out


def test_headwater_run_escapes_control_characters_in_a_load_error(tmp_path, capsys):
    """`headwater run` reports a file whose import raised an error holding ESC on one
    escaped line."""
    script = tmp_path / "noisy_load.py"
    script.write_text('raise ValueError("bad \\x1b[2J\\x07 input")\n')
    code, _, err = run_cli(capsys, "run", f"{script}:etl")
    assert code == 1
    _no_raw_controls(err)
    assert "ValueError: bad \\x1b[2J\\x07 input" in err and err.count("\n") == 1
