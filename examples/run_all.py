"""Run every example in this folder, each in a fresh process, as `make demo` does."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    failures = []
    for number, script in enumerate(scripts, 1):
        print(f"\n=== [{number}/{len(scripts)}] {script.name} ===", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], cwd=HERE)
        took = time.perf_counter() - started
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"=== {script.name}: {status} in {took:.2f}s ===", flush=True)
        if result.returncode != 0:
            failures.append(script.name)
    print(f"\n{len(scripts) - len(failures)}/{len(scripts)} examples ran cleanly.")
    if failures:
        print("Failed: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
