"""submit: N ``.submit()`` + ``.result()`` on the concurrent runner against
``concurrent.futures.ThreadPoolExecutor`` with the same number of workers.

Per-task cost = wall time of the whole submit-then-collect (for headwater: the whole flow
call, including the flush of the run store) / N. Fresh process per repetition.
"""

from __future__ import annotations

import os
import time

from harness import Row, emit, main, median, run_child

N = 10_000
WORKERS = min(32, (os.cpu_count() or 1) + 4)  # both pools' default size


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

    fan(2)
    pool(2)
    start = time.perf_counter()
    pool(n)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    fan(n)
    hw = time.perf_counter() - start
    emit({"hw": hw, "bare": bare})


def measure(args):
    rows = []
    for label, env, budgeted in [("WARNING log", {"HEADWATER_LOGGING_LEVEL": "WARNING"}, True),
                                 ("INFO log (default)", {}, False)]:
        results = [run_child(__file__, [str(N), str(WORKERS)], **env) for _ in range(args.repeat)]
        ratios = [r["hw"] / r["bare"] for r in results]
        hw = median(r["hw"] / N * 1e6 for r in results)
        bare = median(r["bare"] / N * 1e6 for r in results)
        rows.append(Row(f"per task, {label}", hw, "us", bare, f"ThreadPoolExecutor({WORKERS})",
                        "<= 2x" if budgeted else "", (median(ratios) <= 2) if budgeted else None, ratios,
                        note=f"median of per-process ratios {median(ratios):.2f}x" if budgeted else ""))
    return rows, {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("submit", measure, child)
