"""dask: N tiny tasks submitted through headwater's DaskTaskRunner, against the same
function submitted to the same Dask cluster directly with ``Client.submit``.

The cluster (a LocalCluster of worker processes) is started once per child process,
before either clock starts, and both sides use it. headwater's figure includes what the
flow run adds: recording every run (Pending, Running, Completed) in the SQLite store,
pickling each run's package, the worker's attempt loop and recording the outcome, plus
connecting its own client. Reported, not budgeted (contrib/headwater-dask, issue #7), at the
default settings (INFO) and at WARNING, the children alternating.
"""

from __future__ import annotations

import time

from harness import DEFAULT, LEVEL_OF, WARNING, Row, emit, interleaved_children, main, median, size, \
    versus_warning

N = size(1_000)
WORKERS = 2
ROUNDS = 2  # per child process; the median is kept


def child(args: list[str]) -> None:
    n, workers = int(args[0]), int(args[1])
    import distributed

    from headwater import flow, task
    from headwater_dask import DaskTaskRunner

    def plain(x: int) -> int:
        return x + 1

    @task
    def inc(x: int) -> int:
        return x + 1

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)

        @flow(task_runner=runner)
        def fan(n: int) -> int:
            futures = [inc.submit(i) for i in range(n)]
            return sum(f.result() for f in futures)

        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:

            def direct(n: int) -> int:
                futures = [client.submit(plain, i, pure=False) for i in range(n)]
                return sum(f.result() for f in futures)  # as the flow reads them: one by one

            assert direct(20) == fan(20)  # warm both paths up (imports, pickling caches)
            hws, bares = [], []
            for _ in range(ROUNDS):  # alternate, so neither side gets the quieter moments
                start = time.perf_counter()
                direct(n)
                bares.append(time.perf_counter() - start)
                start = time.perf_counter()
                fan(n)
                hws.append(time.perf_counter() - start)
    hw, bare = median(hws), median(bares)
    emit({"hw": hw, "bare": bare})


def measure(args):
    try:
        import distributed  # noqa: F401
        import headwater_dask  # noqa: F401
    except ImportError as exc:
        print(f"dask: skipped ({exc}); install it with `pip install -e contrib/headwater-dask`")
        return [], {"skipped": str(exc)}
    results = interleaved_children(__file__, [str(N), str(WORKERS)], args.repeat)
    rows = []
    for label, runs in results.items():
        ratios = [r["hw"] / r["bare"] for r in runs]
        added = median((r["hw"] - r["bare"]) / N * 1e6 for r in runs)
        rows.append(Row(f"per task, {N} tasks, {label}", median(r["hw"] / N * 1e6 for r in runs), "us",
                        median(r["bare"] / N * 1e6 for r in runs), f"Client.submit, {WORKERS} worker processes",
                        samples=ratios, note=f"ratio: median of per-process ratios; headwater adds {added:.0f} us "
                                             f"per task", level=LEVEL_OF[label], paired_ratio=median(ratios)))
    per_task = {label: [r["hw"] / N * 1e6 for r in runs] for label, runs in results.items()}
    rows.append(versus_warning(f"per task, {N} tasks", per_task[DEFAULT], per_task[WARNING], "us"))
    return rows, {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("dask", measure, child, repeat=3)
