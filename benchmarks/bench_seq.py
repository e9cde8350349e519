"""seq: N direct task calls inside one flow against the same plain function calls.

Overhead per task = (time of the flow call, including the flush that makes every state
durable, minus the plain loop) / N, with the default SQLite run store on. Each
repetition is a fresh process with a new HEADWATER_HOME; a one-task flow runs first so
that loading the session (plugins, opening the store) is not charged to the tasks.

Measured at the default settings (INFO, where every task run writes its lines) and at
WARNING, the children alternating; the budgets are checked at the default: at most
50 us per task, and within 1.25x of the same at WARNING (median of per-pair ratios).
"""

from __future__ import annotations

import time

from harness import DEFAULT, LOG_LEVELS, WARNING, Row, emit, interleaved_children, main, median, \
    size, versus_warning

N = size(10_000)
BUDGET_US = 50
BUDGET_VS_WARNING = 1.25
MEMORY_STORE = "memory store, WARNING log"


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
    variants = {**LOG_LEVELS, MEMORY_STORE: {**LOG_LEVELS[WARNING], "HEADWATER_DATABASE_URL": "memory://"}}
    results = interleaved_children(__file__, [str(N)], args.repeat, variants)
    over = {label: [(r["hw"] - r["bare"]) / N * 1e6 for r in runs] for label, runs in results.items()}
    rows = []
    for label, runs in results.items():
        value = median(over[label])
        budgeted = label == DEFAULT
        rows.append(Row(f"overhead per task, store on, {label}" if label in LOG_LEVELS else
                        f"overhead per task, {label}", value, "us",
                        median(r["bare"] / N * 1e6 for r in runs), "plain call",
                        f"<= {BUDGET_US} us" if budgeted else "", (value <= BUDGET_US) if budgeted else None,
                        over[label], level="default" if budgeted else "WARNING"))
    rows.insert(1, versus_warning("overhead per task", over[DEFAULT], over[WARNING], "us", BUDGET_VS_WARNING))
    return rows, {"N": N}


if __name__ == "__main__":
    main("seq", measure, child)
