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


@pytest.mark.parametrize("case", CASES)
def test_the_benchmark_script_runs_and_reports_numbers(case, tmp_path):
    """``bench_<case>.py`` exits 0, prints its table and writes a result file whose rows
    all carry a number (a budget row also says whether it was met)."""
    if case == "dask" and importlib.util.find_spec("headwater_dask") is None:
        pytest.skip("contrib/headwater-dask is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(BENCH_SMOKE="1", BENCH_RESULTS=str(tmp_path))
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"bench_{case}.py"), "--repeat", "1"],
                          cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"\n{case}" in done.stdout and "machine:" in done.stdout
    result = json.loads((tmp_path / f"{case}.json").read_text())
    assert result["rows"], "no rows reported"
    for row in result["rows"]:
        assert isinstance(row["value"], (int, float)), row
        if row["budget"]:
            assert row["ok"] in (True, False), row
