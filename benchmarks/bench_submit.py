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

Measured at the default settings (INFO, every task run writes its lines) and at WARNING,
the children alternating. The budgets are checked on the steady state at the default:
within 3x of the bare pool (median of per-process ratios) and within 1.25x of the same
flow at WARNING (median of per-pair ratios).
"""

from __future__ import annotations

import os
import time
from typing import Any

from harness import DEFAULT, LEVEL_OF, WARNING, Row, emit, interleaved_children, main, median, size, \
    versus_warning

N = size(10_000)
WORKERS = min(32, (os.cpu_count() or 1) + 4)  # both pools' default size
ROUNDS = 1 if size(10_000) < 10_000 else 5  # steady-state rounds of each side per process
SETTLE = 0.2  # seconds of rest before every timed round
BUDGET_VS_POOL = 3  # default-level steady state against the bare pool
BUDGET_VS_WARNING = 1.25  # default-level steady state against the same flow at WARNING


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
    results = interleaved_children(__file__, [str(N), str(WORKERS)], args.repeat)
    rows = []
    for prefix, what in (("", "per task"), ("first_", "first flow in a process")):
        for label, runs in results.items():
            ratios = [r[prefix + "hw"] / r[prefix + "bare"] for r in runs]
            hw = median(r[prefix + "hw"] / N * 1e6 for r in runs)
            bare = median(r[prefix + "bare"] / N * 1e6 for r in runs)
            checked = label == DEFAULT and not prefix
            rows.append(Row(f"{what}, {label}", hw, "us", bare, f"ThreadPoolExecutor({WORKERS})",
                            f"<= {BUDGET_VS_POOL}x" if checked else "",
                            (median(ratios) <= BUDGET_VS_POOL) if checked else None, ratios,
                            note="ratio: median of per-process ratios" if checked else "",
                            level=LEVEL_OF[label], paired_ratio=median(ratios)))
        if not prefix:
            per_task = {label: [r["hw"] / N * 1e6 for r in runs] for label, runs in results.items()}
            rows.append(versus_warning("per task", per_task[DEFAULT], per_task[WARNING], "us",
                                       BUDGET_VS_WARNING))
    return rows, {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("submit", measure, child)
