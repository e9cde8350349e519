"""memory: peak RSS of a flow running 100,000 sequential tasks against 10,000.

The store keeps the history; the process must not (DESIGN §7: no per-run objects kept
beyond the store). Baselines: the same loop of plain calls, and a process that only
imports headwater. Tasks return None, so the results themselves hold nothing.
"""

from __future__ import annotations

import resource

from harness import Row, emit, main, median, run_child, size

SMALL, LARGE = size(10_000), size(100_000)


def child(args: list[str]) -> None:
    mode, n = args[0], int(args[1])
    from headwater import flow, task

    def plain(x: int) -> None:
        return None

    if mode == "plain":
        for i in range(n):
            plain(i)
    else:
        inc = task(plain, name="noop")

        @flow
        def many(n: int) -> None:
            for i in range(n):
                inc(i)

        many(n)
    emit({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


def measure(args):
    reps = max(1, min(args.repeat, 3))  # the 100,000-task process is the slow one

    def peak(mode: str, n: int) -> list[float]:
        return [run_child(__file__, [mode, str(n)], HEADWATER_LOGGING_LEVEL="WARNING")["maxrss_kb"] / 1024
                for _ in range(reps)]

    small, large, plain = peak("flow", SMALL), peak("flow", LARGE), peak("plain", LARGE)
    s, lg = median(small), median(large)
    return [
        Row(f"peak RSS, {LARGE:,} tasks", lg, "MB", s, f"{SMALL:,} tasks", "<= 1.5x", lg / s <= 1.5, large),
        Row(f"peak RSS, {SMALL:,} tasks", s, "MB", median(plain), f"{LARGE:,} plain calls", samples=small),
    ], {"small": SMALL, "large": LARGE, "repeat_used": reps}


if __name__ == "__main__":
    main("memory", measure, child)
