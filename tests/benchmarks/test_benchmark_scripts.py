"""Every benchmark script still runs and reports its table (``make bench`` is not part
of the test run, so a broken script would otherwise go unnoticed). Sizes are a
hundredth (``BENCH_SMOKE=1``) and one repetition: this checks the scripts, not speed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
CASES = sorted(p.stem[len("bench_"):] for p in BENCHMARKS.glob("bench_*.py"))
#: Cases in which headwater writes no log line, so there is no log level to compare.
WITHOUT_LOGGING = {"import", "store"}
DEFAULT_LABEL, WARNING_LABEL = "INFO log (default)", "WARNING log"


def smoke_env(results: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(BENCH_SMOKE="1", BENCH_RESULTS=str(results))
    return env


def run_script(script: str, *args: str, results: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=BENCHMARKS,
                          env=smoke_env(results), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("case", CASES)
def test_the_benchmark_script_runs_and_reports_numbers(case, tmp_path):
    """``bench_<case>.py`` exits 0, prints its table and writes a result file whose rows
    all carry a number (a budget row also says whether it was met)."""
    if case == "dask" and importlib.util.find_spec("headwater_dask") is None:
        pytest.skip("contrib/headwater-dask is not installed")
    if case == "ray" and importlib.util.find_spec("headwater_ray") is None:
        pytest.skip("contrib/headwater-ray is not installed")
    done = run_script(f"bench_{case}.py", "--repeat", "1", results=tmp_path)
    assert f"\n{case}" in done.stdout and "machine:" in done.stdout
    result = json.loads((tmp_path / f"{case}.json").read_text())
    assert result["rows"], "no rows reported"
    for row in result["rows"]:
        assert isinstance(row["value"], (int, float)), row
        if row["budget"]:
            assert row["ok"] in (True, False), row
    levels = [row["level"] for row in result["rows"]]
    if case in WITHOUT_LOGGING:
        assert set(levels) == {""}, levels
        assert "no logging in this case" in done.stdout
        return
    # Measured at the default settings and at WARNING, the default-level rows first and
    # carrying every budget; the WARNING rows are reported, never budgeted.
    default = [row for row in result["rows"] if row["level"] == "default"]
    warning = [row for row in result["rows"] if row["level"] == "WARNING"]
    assert any(DEFAULT_LABEL in row["metric"] for row in default), [r["metric"] for r in result["rows"]]
    assert any(WARNING_LABEL in row["metric"] for row in warning), [r["metric"] for r in result["rows"]]
    assert levels == sorted(levels, key=lambda level: level != "default"), levels
    assert not [row["metric"] for row in warning if row["budget"] or row["ok"] is not None]
    versus = [row for row in default if row["metric"].endswith("default vs WARNING")]
    assert len(versus) == 1 and versus[0]["ratio"] is not None, versus


@pytest.mark.parametrize("case", ["seq", "submit"])
def test_direct_calls_and_submit_are_budgeted_at_the_default_level_against_warning(case, tmp_path):
    """seq and submit check that the default level costs at most 1.25x of WARNING, the
    ratio being the median of the per-pair ratios of children run side by side."""
    run_script(f"bench_{case}.py", "--repeat", "2", "--no-facts", results=tmp_path)
    rows = {row["metric"]: row for row in json.loads((tmp_path / f"{case}.json").read_text())["rows"]}
    versus = next(row for metric, row in rows.items() if metric.endswith("default vs WARNING"))
    assert versus["budget"] == "<= 1.25x" and versus["ok"] == (versus["ratio"] <= 1.25)
    pairs = versus["samples"]
    assert len(pairs) == 2 and versus["ratio"] == pytest.approx(sum(pairs) / 2)
    if case == "submit":
        default = rows[f"per task, {DEFAULT_LABEL}"]
        assert default["budget"] == "<= 3x" and default["ok"] == (default["ratio"] <= 3)


def test_the_summary_lists_each_case_default_level_rows_first(tmp_path):
    """``run_all.py`` prints a summary in which each case's default-level rows come before
    its WARNING rows, and writes summary.json with the same keys per row as before."""
    done = run_script("run_all.py", "import", "seq", "--repeat", "1", results=tmp_path)
    summary = done.stdout.split("== summary", 1)[1]
    seq_lines = [line for line in summary.splitlines() if line.startswith("seq ")]
    assert DEFAULT_LABEL in seq_lines[0] and "default vs WARNING" in seq_lines[1], seq_lines
    assert WARNING_LABEL in seq_lines[2], seq_lines
    data = json.loads((tmp_path / "summary.json").read_text())
    assert {tuple(sorted(row)) for row in data["rows"]} == {
        ("baseline", "budget", "case", "metric", "ok", "ratio", "unit", "value")}
    assert [row["case"] for row in data["rows"]][:4] == ["import", "import", "import", "seq"]
