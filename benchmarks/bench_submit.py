"""submit: N ``.submit()`` + ``.result()`` on the concurrent runner against
``concurrent.futures.ThreadPoolExecutor`` with the same number of workers.

Per-task cost = wall time of the whole submit-then-collect (for headwater: the whole flow
call, including the flush of the run store) / N. Fresh process per repetition.

Two figures per process. The *first* N-task flow of a process also pays for what a busy
flow starts once per session: the run store's writer process (about 50 ms to start,
during which the store's thread writes) and the worker threads' first use; the bare pool's
first round is timed against it. The budgeted figure is the steady state, the cost a
long-lived program pays per task: ``ROUNDS`` more rounds of each, alternating, and the
median round of each side (one round alone moves by a third with the machine's
scheduling, for the bare pool as much as for headwater).
"""

from __future__ import annotations

import os
import time
from typing import Any

from harness import Row, emit, main, median, run_child, size

N = size(10_000)
WORKERS = min(32, (os.cpu_count() or 1) + 4)  # both pools' default size
ROUNDS = 1 if size(10_000) < 10_000 else 5  # steady-state rounds of each side per process
SETTLE = 0.2  # seconds of rest before every timed round


def child(args: list[str]) -> None:
    n, workers = int(args[0]), int(args[1])
    from concurrent.futures import ThreadPoolExecutor

    from headwater import flow, task
    from headwater.task_runners import ConcurrentTaskRunner

    @task
    def inc(x: int) -> int:
        return x + 1

    def plain(x: int) -> int:
        return x + 1

    @flow(task_runner=ConcurrentTaskRunner(max_workers=workers))
    def fan(n: int) -> int:
        futures = [inc.submit(i) for i in range(n)]
        return sum(f.result() for f in futures)

    def pool(n: int) -> int:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            futures = [ex.submit(plain, i) for i in range(n)]
            return sum(f.result() for f in futures)

    def timed(fn: Any) -> float:
        # What a round leaves running (the store's writer process checkpoints once the
        # flow is idle) must not be timed in the next round, the bare pool's included.
        time.sleep(SETTLE)
        start = time.perf_counter()
        fn(n)
        return time.perf_counter() - start

    fan(2)
    pool(2)
    first_bare, first_hw = timed(pool), timed(fan)
    bare, hw = [], []
    for _ in range(ROUNDS):
        bare.append(timed(pool))
        hw.append(timed(fan))
    emit({"hw": median(hw), "bare": median(bare), "first_hw": first_hw, "first_bare": first_bare})


def measure(args):
    rows = []
    for label, env, budgeted in [("WARNING log", {"HEADWATER_LOGGING_LEVEL": "WARNING"}, True),
                                 ("INFO log (default)", {}, False)]:
        results = [run_child(__file__, [str(N), str(WORKERS)], **env) for _ in range(args.repeat)]
        for prefix, metric in (("", f"per task, {label}"), ("first_", f"first flow in a process, {label}")):
            ratios = [r[prefix + "hw"] / r[prefix + "bare"] for r in results]
            hw = median(r[prefix + "hw"] / N * 1e6 for r in results)
            bare = median(r[prefix + "bare"] / N * 1e6 for r in results)
            checked = budgeted and not prefix
            rows.append(Row(metric, hw, "us", bare, f"ThreadPoolExecutor({WORKERS})",
                            "<= 2x" if checked else "", (median(ratios) <= 2) if checked else None, ratios,
                            note=f"median of per-process ratios {median(ratios):.2f}x" if checked else ""))
    return rows, {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("submit", measure, child)
