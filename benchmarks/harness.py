"""Shared pieces of the benchmark scripts: machine facts, fresh child processes, medians,
the printed table and the JSON file under ``benchmarks/results/``.

Every case script measures in *fresh processes* (``python bench_x.py --child ...``), each
with its own temporary ``HEADWATER_HOME``, and reports the median of several
repetitions. Each headwater figure sits next to a baseline that needs no headwater,
measured in the same run, and the ratio of the two.

A case that logs is measured at the default settings (no ``HEADWATER_LOGGING_LEVEL``:
INFO, the store on), which is what users run and where its budget is checked, and at
WARNING, reported beside it. The two alternate in one run (``interleaved``), and their
ratio is the median of the per-pair ratios (``versus_warning``).
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
from typing import Any, Callable, Iterable, Mapping, TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", HERE / "results"))
PYTHON = sys.executable
#: ``BENCH_SMOKE=1``: every size a hundredth (at least 10), to check that the scripts
#: run (tests/benchmarks), not to measure anything.
SMOKE = os.environ.get("BENCH_SMOKE") == "1"


#: The two settings a case that logs is measured at, as row labels and the environment
#: each child gets on top of ``child_env``: the default (INFO, every task run writes its
#: lines) and WARNING (the per-task lines are dropped before they are made).
DEFAULT = "INFO log (default)"
WARNING = "WARNING log"
LOG_LEVELS: dict[str, dict[str, str]] = {DEFAULT: {}, WARNING: {"HEADWATER_LOGGING_LEVEL": "WARNING"}}
#: What ``Row.level`` says: a figure at the default settings, at WARNING, or neither.
LEVEL_OF = {DEFAULT: "default", WARNING: "WARNING"}
#: The note of a case in which headwater writes no log line at all.
NO_LOGGING = "no logging in this case: the same at any log level"

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")


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
    #: "default" (the settings users run: INFO, store on), "WARNING", or "" (no log level).
    level: str = ""
    #: The ratio as measured pair by pair (median of per-pair ratios), shown instead of
    #: value / baseline, which is a ratio of two medians.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
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


def interleaved(run_once: Callable[[V], R], variants: Mapping[K, V], repeat: int) -> dict[K, list[R]]:
    """Run every variant once per repetition, in turn: rep 1 of each, then rep 2 of each...

    Measured side by side like this, the machine's drift (other processes, the CPU's
    clock) hits every variant alike. The results are listed per variant in repetition
    order, so the i-th results of two variants are a pair (``paired_ratio``)."""
    results: dict[K, list[R]] = {key: [] for key in variants}
    for _ in range(repeat):
        for key, variant in variants.items():
            results[key].append(run_once(variant))
    return results


def interleaved_children(script: str | Path, args: list[str], repeat: int,
                         variants: Mapping[str, dict[str, str]] = LOG_LEVELS,
                         **env: str) -> dict[str, list[dict[str, Any]]]:
    """``run_child(script, args)`` once per variant (extra environment) and repetition,
    interleaved; by default at the two log levels, ``LOG_LEVELS``."""
    return interleaved(lambda extra: run_child(script, args, **{**env, **extra}), variants, repeat)


def per_unit_rows(metric: str, results: dict[str, list[dict[str, Any]]], n: int,
                  baseline_label: str) -> list[Row]:
    """The rows of a case whose children emit ``{"hw": seconds, "bare": seconds}`` for
    ``n`` units, from :func:`interleaved_children`: ``<metric>, <level>`` per level in
    µs per unit beside the bare figure, then ``<metric>, default vs WARNING``."""
    hw = {label: [r["hw"] / n * 1e6 for r in runs] for label, runs in results.items()}
    rows = [Row(f"{metric}, {label}", median(hw[label]), "us", median(r["bare"] / n * 1e6 for r in runs),
                baseline_label, samples=hw[label], level=LEVEL_OF[label])
            for label, runs in results.items()]
    rows.append(versus_warning(metric, hw[DEFAULT], hw[WARNING], "us"))
    return rows


def paired_ratio(values: list[float], baselines: list[float]) -> float:
    """The median of the per-pair ratios ``values[i] / baselines[i]``."""
    if len(values) != len(baselines) or not values:
        raise ValueError(f"paired_ratio needs two lists of the same non-zero length, got "
                         f"{len(values)} and {len(baselines)} values")
    return median(v / b for v, b in zip(values, baselines))


def versus_warning(metric: str, default: list[float], warning: list[float], unit: str,
                   budget: float | None = None) -> Row:
    """The row ``<metric>, default vs WARNING``: the default-level figure against the same
    at WARNING, measured in pairs (``interleaved``), with the median of the per-pair
    ratios as its ratio and, when given, checked against ``budget`` (a ratio)."""
    ratios = [d / w for d, w in zip(default, warning)]
    ratio = paired_ratio(default, warning)
    return Row(f"{metric}, default vs WARNING", median(default), unit, median(warning), WARNING,
               f"<= {budget:g}x" if budget is not None else "",
               (ratio <= budget) if budget is not None else None, ratios,
               note=f"median of the per-pair ratios: {ratio:.2f}x ({len(ratios)} "
               f"pair{'s' if len(ratios) != 1 else ''})", level="default",
               paired_ratio=ratio)


def default_first(rows: list[Row]) -> list[Row]:
    """The rows with the default-level ones first, otherwise in their order."""
    return sorted(rows, key=lambda row: row.level != "default")


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
    """Print the case's table, default-level rows first, and write
    ``benchmarks/results/<case>.json``."""
    rows = default_first(rows)
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
