"""Shared pieces of the benchmark scripts: machine facts, fresh child processes, medians,
the printed table and the JSON file under ``benchmarks/results/``.

Every case script measures in *fresh processes* (``python bench_x.py --child ...``), each
with its own temporary ``HEADWATER_HOME``, and reports the median of several
repetitions. Each headwater figure sits next to a baseline that needs no headwater,
measured in the same run, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", HERE / "results"))
PYTHON = sys.executable
#: ``BENCH_SMOKE=1``: every size a hundredth (at least 10), to check that the scripts
#: run (tests/benchmarks), not to measure anything.
SMOKE = os.environ.get("BENCH_SMOKE") == "1"


def size(n: int) -> int:
    """A case's size, shrunk in smoke runs."""
    return max(10, n // 100) if SMOKE else n


@dataclass
class Row:
    """One line of a case's table."""

    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    budget: str = ""
    ok: bool | None = None
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# -- machine facts ------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "core", "plugins"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_facts() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, memory, OS, Python, headwater's commit."""
    try:
        from importlib.metadata import version

        hw_version = version("headwater")
    except Exception:
        hw_version = "unknown"
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "headwater": hw_version,
        "commit": _git_commit(),
        # Other processes on the machine skew every wall-clock figure: shown, not hidden.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def print_facts(facts: dict[str, Any]) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))


# -- child processes ----------------------------------------------------------------------


#: Settings the children inherit from the benchmark's own environment.
_KEPT = ("HEADWATER_STORE_WRITER",)


def child_env(home: str, **extra: str) -> dict[str, str]:
    """A clean environment for one child: its own home, no user plugins, quiet unless told.
    ``HEADWATER_STORE_WRITER`` is kept: ``HEADWATER_STORE_WRITER=thread make bench``
    measures the store's writer thread alone (docs/performance.md)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_") or k in _KEPT}
    env["HEADWATER_HOME"] = home
    env["HEADWATER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(extra)
    return env


def run_child(script: str | Path, args: list[str], home: str | None = None,
              timeout: float = 300, **env: str) -> dict[str, Any]:
    """Run ``python script --child args...`` in a fresh process; return its JSON line.

    The child's stderr (headwater's console log, when on) goes to a file that is read
    only when the child fails: it is still formatted and written, so the cost of
    logging is measured, but not shown.
    """
    own_home = home is None
    home = home or tempfile.mkdtemp(prefix="hw-bench-")
    try:
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([PYTHON, str(script), "--child", *args], env=child_env(home, **env),
                                  stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout,
                                  cwd=str(HERE))
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                err.seek(0, os.SEEK_END)
                err.seek(max(0, err.tell() - 3000))
                raise RuntimeError(f"{Path(script).name} --child {' '.join(args)} failed "
                                   f"(exit {proc.returncode}):\n{err.read()}")
        return json.loads(lines[-1])
    finally:
        if own_home:
            shutil.rmtree(home, ignore_errors=True)


def time_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one whole process, output discarded."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, cwd=str(HERE))
    return time.perf_counter() - start


def emit(result: dict[str, Any]) -> None:
    """What a child prints: one JSON line on stdout."""
    print(json.dumps(result), flush=True)


# -- the table ----------------------------------------------------------------------------


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,} {unit}".strip()
    if unit == "s" and value < 1:
        return f"{value * 1000:.1f} ms"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def format_table(case: str | None, rows: list[Row] | list[tuple[str, Row]]) -> str:
    """The printed table: one line per row (``rows`` may be ``(case, row)`` pairs)."""
    pairs = [(case, r) if isinstance(r, Row) else r for r in rows]
    header = ("case", "metric", "headwater", "baseline", "ratio", "budget", "")
    body = []
    for name, row in pairs:
        status = "" if row.ok is None else ("ok" if row.ok else "OVER")
        base = f"{_fmt(row.baseline, row.unit)} ({row.baseline_label})" if row.baseline is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        body.append((name, row.metric, _fmt(row.value, row.unit), base, ratio, row.budget or "-", status))
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    notes = [f"  note ({row.metric}): {row.note}" for _, row in pairs if row.note]
    return "\n".join(lines + notes)


def report(case: str, rows: list[Row], facts: dict[str, Any], params: dict[str, Any],
           seconds: float) -> None:
    """Print the case's table and write ``benchmarks/results/<case>.json``."""
    print(format_table(case, rows))
    print(f"({case}: {params}; {seconds:.1f} s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"case": case, "machine": facts, "params": params, "seconds": round(seconds, 2),
               "rows": [{**asdict(r), "ratio": r.ratio} for r in rows]}
    (RESULTS / f"{case}.json").write_text(json.dumps(payload, indent=2))


def main(case: str, measure: Callable[[argparse.Namespace], tuple[list[Row], dict[str, Any]]],
         child: Callable[[list[str]], None], repeat: int = 5) -> None:
    """Entry point of a case script: ``--child ...`` measures; otherwise drive and report."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=f"headwater benchmark: {case}")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", repeat)),
                        help="fresh-process repetitions per figure (the median is reported)")
    parser.add_argument("--no-facts", action="store_true", help="do not print the machine line")
    args = parser.parse_args()
    facts = machine_facts()
    if not args.no_facts:
        print_facts(facts)
    start = time.perf_counter()
    rows, params = measure(args)
    report(case, rows, facts, {**params, "repeat": args.repeat}, time.perf_counter() - start)
