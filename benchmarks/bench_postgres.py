"""postgres: the seq and submit workloads with the PostgreSQL run store (headwater-postgres,
server on loopback) against the same with the default SQLite store, side by side.

Per-task cost = the whole flow call, including the flush that makes every state durable,
/ N. Each repetition is a fresh process per store, alternating; each PostgreSQL child
writes to a new schema of one database (``?schema=``), as the SQLite child writes a new
file. The server is the tests' own (``tests/contrib/pg_server.py``) with PostgreSQL's
default durability (fsync on, every commit flushed), started for the run, unless
``BENCH_POSTGRES_URL`` names one. Goal (the issue's): within 2x of the SQLite store, for
both workloads, at the default settings (INFO log, store on); the same at WARNING is
reported beside it.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

from harness import DEFAULT, LEVEL_OF, LOG_LEVELS, WARNING, Row, emit, interleaved, main, median, run_child, \
    size, versus_warning

N = size(10_000)
WORKERS = min(32, (os.cpu_count() or 1) + 4)
GOAL = 2.0
_schemas = itertools.count()


def child(args: list[str]) -> None:
    n, workers = int(args[0]), int(args[1])
    from headwater import flow, task
    from headwater.task_runners import ConcurrentTaskRunner

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def seq(n: int) -> int:
        return sum(inc(i) for i in range(n))

    @flow(task_runner=ConcurrentTaskRunner(max_workers=workers))
    def fan(n: int) -> int:
        futures = [inc.submit(i) for i in range(n)]
        return sum(f.result() for f in futures)

    seq(1)  # session, plugins and store loaded here, not in the timed runs
    fan(2)
    out = {}
    for name, fn in (("seq", seq), ("submit", fan)):
        time.sleep(0.2)
        start = time.perf_counter()
        fn(n)
        out[name] = time.perf_counter() - start
    emit(out)


def _server():
    """A server for the run: ``BENCH_POSTGRES_URL``, else the tests' own, started now."""
    url = os.environ.get("BENCH_POSTGRES_URL")
    if url:
        return None, url
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "contrib"))
    from pg_server import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("bench_postgres: no PostgreSQL server binaries found (apt-get install postgresql), "
                         "and BENCH_POSTGRES_URL is not set")
    # PostgreSQL's own durability defaults, not the tests' fast settings.
    server = PostgresServer(bindir, settings={"fsync": "on", "full_page_writes": "on",
                                              "wal_level": "replica", "max_wal_senders": "10"})
    server.start()
    return server, server.create_database("bench")


def measure(args):
    server, url = _server()
    stores = {"SQLite store": lambda: {},
              # The children load no entry points (harness.child_env): the plugin is named.
              "PostgreSQL store": lambda: {"HEADWATER_DATABASE_URL": f"{url}?schema=bench{next(_schemas)}",
                                           "HEADWATER_PLUGINS": "headwater_postgres.plugin"}}
    variants = {(store, level): (make_env, level_env) for store, make_env in stores.items()
                for level, level_env in LOG_LEVELS.items()}
    try:
        results = interleaved(lambda v: run_child(__file__, [str(N), str(WORKERS)], **v[0](), **v[1]),
                              variants, args.repeat)
    finally:
        if server is not None:
            server.stop()
    rows = []
    both: dict[str, list[float]] = {level: [] for level in LOG_LEVELS}
    for workload in ("seq", "submit"):
        per_task = {key: [r[workload] / N * 1e6 for r in runs] for key, runs in results.items()}
        for level in LOG_LEVELS:
            pg, sqlite = per_task[("PostgreSQL store", level)], per_task[("SQLite store", level)]
            ratios = [p / s for p, s in zip(pg, sqlite)]
            budgeted = level == DEFAULT
            rows.append(Row(f"{workload}: per task, PostgreSQL store, {level}", median(pg), "us", median(sqlite),
                            "SQLite store", f"<= {GOAL}x" if budgeted else "",
                            (median(ratios) <= GOAL) if budgeted else None, pg,
                            note="ratio: median of per-pair ratios" if budgeted else "",
                            level=LEVEL_OF[level], paired_ratio=median(ratios)))
        for level in LOG_LEVELS:
            both[level] += per_task[("PostgreSQL store", level)]
    # One row for both workloads (their pairs side by side): what INFO costs over WARNING.
    rows.append(versus_warning("seq and submit: per task, PostgreSQL store", both[DEFAULT], both[WARNING], "us"))
    return rows, {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("postgres", measure, child)
