"""map: ``task.map`` over N inputs on the concurrent runner, results collected, against
``ThreadPoolExecutor.map`` over the same inputs with the same number of workers."""

from __future__ import annotations

import os
import time

from harness import Row, emit, main, median, run_child, size

N = size(10_000)
WORKERS = min(32, (os.cpu_count() or 1) + 4)


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
    def mapped(n: int) -> int:
        return sum(f.result() for f in inc.map(range(n)))

    def pool(n: int) -> int:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            return sum(ex.map(plain, range(n)))

    mapped(2)
    pool(2)
    start = time.perf_counter()
    pool(n)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    mapped(n)
    hw = time.perf_counter() - start
    emit({"hw": hw, "bare": bare})


def measure(args):
    results = [run_child(__file__, [str(N), str(WORKERS)], HEADWATER_LOGGING_LEVEL="WARNING")
               for _ in range(args.repeat)]
    hw = [r["hw"] / N * 1e6 for r in results]
    bare = median(r["bare"] / N * 1e6 for r in results)
    return [Row("per element, WARNING log", median(hw), "us", bare, f"ThreadPoolExecutor({WORKERS}).map",
                samples=hw)], {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("map", measure, child)
