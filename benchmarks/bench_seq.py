"""seq: N direct task calls inside one flow against the same plain function calls.

Overhead per task = (time of the flow call, including the flush that makes every state
durable, minus the plain loop) / N, with the default SQLite run store on. Each
repetition is a fresh process with a new HEADWATER_HOME; a one-task flow runs first so
that loading the session (plugins, opening the store) is not charged to the tasks.
"""

from __future__ import annotations

import time

from harness import Row, emit, main, median, run_child, size

N = size(10_000)


def child(args: list[str]) -> None:
    n = int(args[0])
    from headwater import flow, task

    @task
    def inc(x: int) -> int:
        return x + 1

    def plain(x: int) -> int:
        return x + 1

    @flow
    def many(n: int) -> int:
        total = 0
        for i in range(n):
            total += inc(i)
        return total

    def plain_many(n: int) -> int:
        total = 0
        for i in range(n):
            total += plain(i)
        return total

    many(1)  # session, plugins and store loaded here, not in the timed run
    start = time.perf_counter()
    plain_many(n)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    many(n)
    hw = time.perf_counter() - start
    emit({"hw": hw, "bare": bare})


def measure(args):
    rows = []
    variants = [
        ("store on, WARNING log", {"HEADWATER_LOGGING_LEVEL": "WARNING"}, True),
        ("store on, INFO log (default)", {}, False),
        ("memory store, WARNING log", {"HEADWATER_LOGGING_LEVEL": "WARNING",
                                       "HEADWATER_DATABASE_URL": "memory://"}, False),
    ]
    for label, env, budgeted in variants:
        results = [run_child(__file__, [str(N)], **env) for _ in range(args.repeat)]
        over = [(r["hw"] - r["bare"]) / N * 1e6 for r in results]
        plain = median(r["bare"] / N * 1e6 for r in results)
        value = median(over)
        rows.append(Row(f"overhead per task, {label}", value, "us", plain, "plain call",
                        "<= 50 us" if budgeted else "", (value <= 50) if budgeted else None, over))
    return rows, {"N": N}


if __name__ == "__main__":
    main("seq", measure, child)
