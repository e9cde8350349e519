"""cache_hit: N cache hits on a warm cache, in a new process, against reading a file and
unpickling it (what a hit cannot be cheaper than by much: DESIGN §7).

A first process fills the cache (N distinct inputs, ``cache_key_fn=task_input_hash``);
a second, fresh process over the same HEADWATER_HOME calls the task again with the same
inputs: every call must be a hit (the body counts its calls; it must stay at zero).
Per hit = (flow time − plain loop) / N, which includes computing the key.
Measured at the default settings (INFO) and at WARNING, the pairs of processes
alternating; the budget is checked at the default.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import time
from pathlib import Path

from harness import DEFAULT, LEVEL_OF, LOG_LEVELS, WARNING, Row, emit, interleaved, main, median, run_child, \
    size, versus_warning

N = size(2_000)
BUDGET_US = 150


def child(args: list[str]) -> None:
    mode, n = args[0], int(args[1])
    from headwater import flow, task
    from headwater.tasks import task_input_hash

    calls = [0]

    @task(cache_key_fn=task_input_hash)
    def square(x: int) -> int:
        calls[0] += 1
        return x * x

    @flow
    def many(n: int) -> None:
        for i in range(n):
            square(i)

    if mode == "warm":
        many(n)
        emit({"calls": calls[0]})
        return
    # Baseline: N small pickle files written now, read back and unpickled.
    folder = Path(tempfile.mkdtemp(prefix="hw-bench-pickles-"))
    paths = []
    for i in range(n):
        path = folder / f"{i}.pkl"
        path.write_bytes(pickle.dumps(i * i))
        paths.append(path)
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            pickle.loads(handle.read())
    bare = time.perf_counter() - start
    shutil.rmtree(folder)
    many(1)  # load the session; input 0 is a hit too
    calls[0] = 0
    start = time.perf_counter()
    many(n)
    hw = time.perf_counter() - start
    emit({"hw": hw, "bare": bare, "calls": calls[0]})


def hits(env: dict[str, str]) -> dict[str, float]:
    """Fill a new cache in one process, then hit it in another, at the log level ``env``."""
    home = tempfile.mkdtemp(prefix="hw-bench-")
    try:
        run_child(__file__, ["warm", str(N)], home=home, **env)
        out = run_child(__file__, ["hit", str(N)], home=home, **env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if out["calls"]:
        raise RuntimeError(f"{out['calls']} of {N} calls missed the cache")
    return out


def measure(args):
    results = interleaved(hits, LOG_LEVELS, args.repeat)
    per_hit = {label: [r["hw"] / N * 1e6 for r in runs] for label, runs in results.items()}
    rows = []
    for label, runs in results.items():
        value, budgeted = median(per_hit[label]), label == DEFAULT
        rows.append(Row(f"per hit, {label}", value, "us", median(r["bare"] / N * 1e6 for r in runs),
                        "file read + unpickle", f"<= {BUDGET_US} us" if budgeted else "",
                        (value <= BUDGET_US) if budgeted else None, per_hit[label], level=LEVEL_OF[label]))
    rows.append(versus_warning("per hit", per_hit[DEFAULT], per_hit[WARNING], "us"))
    return rows, {"N": N}


if __name__ == "__main__":
    main("cache_hit", measure, child)
