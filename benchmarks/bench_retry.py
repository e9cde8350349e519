"""retry: the cost of one retry attempt (retry_delay_seconds=0), against a plain Python
loop that calls, catches and calls again.

Per retry = (N runs that fail R times then succeed − N runs that succeed at once) / (N·R).
Each failed attempt is recorded (AwaitingRetry, Retrying) and logged at ERROR level with
its traceback, which is part of the figure at either level. Measured at the default
settings (INFO) and at WARNING, the children alternating.
"""

from __future__ import annotations

import time

from harness import DEFAULT, LEVEL_OF, WARNING, Row, emit, interleaved_children, main, median, size, \
    versus_warning

N = size(500)
R = 3


def child(args: list[str]) -> None:
    n, r = int(args[0]), int(args[1])
    from headwater import flow, task

    attempts: dict[int, int] = {}

    def body(i: int) -> int:
        seen = attempts.get(i, 0)
        attempts[i] = seen + 1
        if seen < r:
            raise ValueError(f"attempt {seen} of input {i} fails")
        return i

    flaky = task(retries=r, retry_delay_seconds=0, name="flaky")(body)
    steady = task(retries=r, retry_delay_seconds=0, name="steady")(lambda i: i)

    @flow
    def run_all(n: int, use_flaky: bool) -> None:
        t = flaky if use_flaky else steady
        for i in range(n):
            t(i)

    def plain(n: int) -> None:
        for i in range(n):
            for _ in range(r + 1):
                try:
                    body(i)
                    break
                except ValueError:
                    continue

    run_all(1, False)
    attempts.clear()
    start = time.perf_counter()
    plain(n)
    bare = time.perf_counter() - start
    attempts.clear()
    start = time.perf_counter()
    run_all(n, False)
    steady_t = time.perf_counter() - start
    start = time.perf_counter()
    run_all(n, True)
    flaky_t = time.perf_counter() - start
    emit({"per_retry": (flaky_t - steady_t) / (n * r), "bare_per_retry": bare / (n * (r + 1))})


def measure(args):
    results = interleaved_children(__file__, [str(N), str(R)], args.repeat)
    hw = {label: [r["per_retry"] * 1e6 for r in runs] for label, runs in results.items()}
    rows = [Row(f"per retry attempt, {label}", median(hw[label]), "us",
                median(r["bare_per_retry"] * 1e6 for r in runs), "plain call+catch", samples=hw[label],
                note="includes the ERROR log line with traceback per failed attempt, at either level"
                if label == DEFAULT else "",
                level=LEVEL_OF[label])
            for label, runs in results.items()]
    rows.append(versus_warning("per retry attempt", hw[DEFAULT], hw[WARNING], "us"))
    return rows, {"N": N, "retries": R}


if __name__ == "__main__":
    main("retry", measure, child)
