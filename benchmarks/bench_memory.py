"""memory: peak RSS of a flow running 100,000 sequential tasks against 10,000.

The store keeps the history; the process must not (DESIGN §7: no per-run objects kept
beyond the store). Baselines: the same loop of plain calls, and a process that only
imports headwater. Tasks return None, so the results themselves hold nothing. The flows
run at the default settings (INFO) and at WARNING, the processes alternating; the budget
is checked at the default.
"""

from __future__ import annotations

import resource

from harness import DEFAULT, LEVEL_OF, LOG_LEVELS, WARNING, Row, emit, interleaved, main, median, \
    run_child, size, versus_warning

SMALL, LARGE = size(10_000), size(100_000)
BUDGET = 1.5  # the large flow's peak against the small one's, at the default level


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
    variants = {(n, label): (["flow", str(n)], env) for n in (SMALL, LARGE) for label, env in LOG_LEVELS.items()}
    variants["plain"] = (["plain", str(LARGE)], {})  # no flow, no log line: one level is enough

    def peak(variant: tuple[list[str], dict[str, str]]) -> float:
        argv, env = variant
        return run_child(__file__, argv, **env)["maxrss_kb"] / 1024

    mb = interleaved(peak, variants, reps)
    rows = []
    for label in LOG_LEVELS:
        large, small = mb[LARGE, label], mb[SMALL, label]
        ratio, budgeted = median(large) / median(small), label == DEFAULT
        rows.append(Row(f"peak RSS, {LARGE:,} tasks, {label}", median(large), "MB", median(small),
                        f"{SMALL:,} tasks", f"<= {BUDGET:g}x" if budgeted else "",
                        (ratio <= BUDGET) if budgeted else None, large, level=LEVEL_OF[label]))
    for label in LOG_LEVELS:
        rows.append(Row(f"peak RSS, {SMALL:,} tasks, {label}", median(mb[SMALL, label]), "MB", median(mb["plain"]),
                        f"{LARGE:,} plain calls", samples=mb[SMALL, label], level=LEVEL_OF[label]))
    rows.append(versus_warning(f"peak RSS, {LARGE:,} tasks", mb[LARGE, DEFAULT], mb[LARGE, WARNING], "MB"))
    return rows, {"small": SMALL, "large": LARGE, "repeat_used": reps}


if __name__ == "__main__":
    main("memory", measure, child)
