"""map: ``task.map`` over N inputs on the concurrent runner, results collected, against
``ThreadPoolExecutor.map`` over the same inputs with the same number of workers, at the
default settings (INFO) and at WARNING, the children alternating."""

from __future__ import annotations

import os
import time

from harness import emit, interleaved_children, main, per_unit_rows, size

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
    results = interleaved_children(__file__, [str(N), str(WORKERS)], args.repeat)
    return per_unit_rows("per element", results, N, f"ThreadPoolExecutor({WORKERS}).map"), \
        {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("map", measure, child)
