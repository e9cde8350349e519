"""ray: N tiny tasks submitted through headwater's RayTaskRunner, against the same
function as a bare Ray remote function (``ray.remote``, no framework) and as a bare
``distributed`` ``Client.submit``, all in the same child process.

Ray (``ray.init(num_cpus=WORKERS)``) is started once per child process, before any clock
starts, and both Ray sides use it; it is then stopped and a LocalCluster of as many
worker processes is started for the bare Dask figure. headwater's figure includes what
the flow run adds: recording every run (Pending, Running, Completed) in the SQLite store,
pickling each run's package, the worker's attempt loop and recording the outcome.
Measured at the default settings (INFO) and at WARNING, the children alternating. The
goal (issue #20): headwater adds at most 1.5x to Ray's own per-task cost.
"""

from __future__ import annotations

import time

from harness import DEFAULT, LEVEL_OF, WARNING, Row, emit, interleaved_children, main, median, size, \
    versus_warning

N = size(1_000)
WORKERS = 2
ROUNDS = 2  # per child process; the median is kept
BUDGET = 1.5


def child(args: list[str]) -> None:
    n, workers = int(args[0]), int(args[1])
    import distributed
    import ray

    from headwater import flow, task
    from headwater_ray import RayTaskRunner

    def plain(x: int) -> int:
        return x + 1

    @task
    def inc(x: int) -> int:
        return x + 1

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        bare_remote = ray.remote(plain)

        @flow(task_runner=RayTaskRunner())  # the Ray this process started
        def fan(n: int) -> int:
            futures = [inc.submit(i) for i in range(n)]
            return sum(f.result() for f in futures)

        def direct(n: int) -> int:
            refs = [bare_remote.remote(i) for i in range(n)]
            return sum(ray.get(ref) for ref in refs)  # as the flow reads them: one by one

        assert direct(20) == fan(20)  # warm both paths up (worker processes, pickling caches)
        hws, bares = [], []
        for _ in range(ROUNDS):  # alternate, so neither side gets the quieter moments
            start = time.perf_counter()
            direct(n)
            bares.append(time.perf_counter() - start)
            start = time.perf_counter()
            fan(n)
            hws.append(time.perf_counter() - start)
    finally:
        ray.shutdown()
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:

        def dask_direct(n: int) -> int:
            futures = [client.submit(plain, i, pure=False) for i in range(n)]
            return sum(f.result() for f in futures)

        dask_direct(20)
        dasks = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            dask_direct(n)
            dasks.append(time.perf_counter() - start)
    emit({"hw": median(hws), "bare": median(bares), "dask": median(dasks)})


def measure(args):
    try:
        import distributed  # noqa: F401
        import headwater_ray  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        print(f"ray: skipped ({exc}); install it with `pip install -e contrib/headwater-ray` "
              f"(and distributed for the Dask baseline)")
        return [], {"skipped": str(exc)}
    results = interleaved_children(__file__, [str(N), str(WORKERS)], args.repeat)
    rows = []
    for label, runs in results.items():
        ratios = [r["hw"] / r["bare"] for r in runs]
        added = median((r["hw"] - r["bare"]) / N * 1e6 for r in runs)
        default = label == DEFAULT
        rows.append(Row(f"per task, {N} tasks, {label}", median(r["hw"] / N * 1e6 for r in runs), "us",
                        median(r["bare"] / N * 1e6 for r in runs), f"bare ray.remote, {WORKERS} CPUs",
                        budget=f"<= {BUDGET:g}x" if default else "",
                        ok=(median(ratios) <= BUDGET) if default else None,
                        samples=ratios, note=f"ratio: median of per-process ratios; headwater adds "
                                             f"{added:.0f} us per task", level=LEVEL_OF[label],
                        paired_ratio=median(ratios)))
        rows.append(Row(f"per task, {N} tasks, {label}, against bare distributed",
                        median(r["hw"] / N * 1e6 for r in runs), "us",
                        median(r["dask"] / N * 1e6 for r in runs),
                        f"bare Client.submit, {WORKERS} worker processes",
                        samples=[r["hw"] / r["dask"] for r in runs],
                        note="the other engine's own cost, same child process", level=LEVEL_OF[label],
                        paired_ratio=median(r["hw"] / r["dask"] for r in runs)))
    rows.sort(key=lambda row: row.level != "default")
    per_task = {label: [r["hw"] / N * 1e6 for r in runs] for label, runs in results.items()}
    rows.insert(2, versus_warning(f"per task, {N} tasks", per_task[DEFAULT], per_task[WARNING], "us"))
    return rows, {"N": N, "workers": WORKERS}


if __name__ == "__main__":
    main("ray", measure, child, repeat=3)
