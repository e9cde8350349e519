"""chain: N tasks on the concurrent runner, each taking the previous task's future, against
a ThreadPoolExecutor chain where each job waits for the previous job's result.

Each link waits for the one before, so this measures the latency of one hand-over.
Measured at the default settings (INFO) and at WARNING, the children alternating.
"""

from __future__ import annotations

import os
import time

from harness import emit, interleaved_children, main, per_unit_rows, size

N = size(2_000)
WORKERS = min(32, (os.cpu_count() or 1) + 4)


def child(args: list[str]) -> None:
    n, workers = int(args[0]), int(args[1])
    from concurrent.futures import ThreadPoolExecutor

    from headwater import flow, task
    from headwater.task_runners import ConcurrentTaskRunner

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow(task_runner=ConcurrentTaskRunner(max_workers=workers))
    def chain(n: int) -> int:
        future = inc.submit(0)
        for _ in range(n - 1):
            future = inc.submit(future)
        return future.result()

    def link(previous):
        return previous.result() + 1

    def pool(n: int) -> int:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            future = ex.submit(lambda: 1)
            for _ in range(n - 1):
                future = ex.submit(link, future)
            return future.result()

    chain(2)
    pool(2)
    start = time.perf_counter()
    assert pool(n) == n
    bare = time.perf_counter() - start
    start = time.perf_counter()
    assert chain(n) == n
    hw = time.perf_counter() - start
    emit({"hw": hw, "bare": bare})


def measure(args):
    results = interleaved_children(__file__, [str(N), str(WORKERS)], args.repeat)
    return per_unit_rows("per link", results, N, f"ThreadPoolExecutor({WORKERS}) chain"), \
        {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("chain", measure, child)
