"""Run every benchmark case (``make bench``), each in its own process, then print one
summary table of the budgets, each case's rows at the default settings (INFO log, store
on) first. Results: ``benchmarks/results/<case>.json`` and ``benchmarks/results/summary.json``.

    .venv/bin/python benchmarks/run_all.py                 # everything, 5 repetitions
    .venv/bin/python benchmarks/run_all.py seq submit      # some cases
    .venv/bin/python benchmarks/run_all.py --repeat 3      # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from harness import HERE, RESULTS, Row, default_first, format_table, machine_facts, print_facts

ORDER = ["import", "hello", "seq", "submit", "chain", "map", "cache_hit", "retry", "memory", "store"]


def discover() -> list[str]:
    found = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    return [c for c in ORDER if c in found] + [c for c in found if c not in ORDER]


def summary_rows(cases: list[str]) -> list[tuple[str, Row]]:
    """Every case's rows from its result file, case by case, default-level rows first."""
    rows_by_case = []
    for case in cases:
        path = RESULTS / f"{case}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        rows = [Row(**{k: v for k, v in raw.items() if k != "ratio"}) for raw in data.get("rows", [])]
        rows_by_case += [(case, row) for row in default_first(rows)]
    return rows_by_case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all of {', '.join(discover())})")
    parser.add_argument("--repeat", type=int, default=5, help="fresh-process repetitions per figure")
    args = parser.parse_args()
    cases = args.cases or discover()
    unknown = [c for c in cases if not (HERE / f"bench_{c}.py").exists()]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; expected some of {', '.join(discover())}")
    facts = machine_facts()
    print_facts(facts)
    began = time.perf_counter()
    failed = []
    for case in cases:
        print(f"\n== {case}", flush=True)
        result = RESULTS / f"{case}.json"
        result.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, str(HERE / f"bench_{case}.py"), "--no-facts",
                               "--repeat", str(args.repeat)], cwd=str(HERE))
        if proc.returncode:
            failed.append(case)
    total = time.perf_counter() - began
    rows_by_case = summary_rows(cases)
    print(f"\n== summary ({total:.0f} s)")
    print_facts(facts)
    table = format_table(None, rows_by_case)
    print("\n".join(line for line in table.splitlines() if not line.startswith("  note")))
    over = [f"{c}: {r.metric}" for c, r in rows_by_case if r.ok is False]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps({
        "machine": facts, "seconds": round(total, 1), "repeat": args.repeat, "failed": failed,
        "over_budget": over,
        "rows": [{"case": c, "metric": r.metric, "value": r.value, "unit": r.unit, "baseline": r.baseline,
                  "ratio": r.ratio, "budget": r.budget, "ok": r.ok} for c, r in rows_by_case],
    }, indent=2))
    if failed:
        print(f"cases that failed to run: {', '.join(failed)}")
    print("over budget: " + ("; ".join(over) if over else "none"))
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (at the start: {facts.get('load_avg_1m')})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
