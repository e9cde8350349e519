"""cache_hit: N cache hits on a warm cache, in a new process, against reading a file and
unpickling it (what a hit cannot be cheaper than by much: DESIGN §7).

A first process fills the cache (N distinct inputs, ``cache_key_fn=task_input_hash``);
a second, fresh process over the same HEADWATER_HOME calls the task again with the same
inputs: every call must be a hit (the body counts its calls; it must stay at zero).
Per hit = (flow time − plain loop) / N, which includes computing the key.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import time
from pathlib import Path

from harness import Row, emit, main, median, run_child, size

N = size(2_000)


def child(args: list[str]) -> None:
    mode, n = args[0], int(args[1])
    from headwater import flow, task
    from headwater.tasks import task_input_hash

    calls = [0]

    @task(cache_key_fn=task_input_hash)
    def square(x: int) -> int:
        calls[0] += 1
        return x * x

    @flow
    def many(n: int) -> None:
        for i in range(n):
            square(i)

    if mode == "warm":
        many(n)
        emit({"calls": calls[0]})
        return
    # Baseline: N small pickle files written now, read back and unpickled.
    folder = Path(tempfile.mkdtemp(prefix="hw-bench-pickles-"))
    paths = []
    for i in range(n):
        path = folder / f"{i}.pkl"
        path.write_bytes(pickle.dumps(i * i))
        paths.append(path)
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            pickle.loads(handle.read())
    bare = time.perf_counter() - start
    shutil.rmtree(folder)
    many(1)  # load the session; input 0 is a hit too
    calls[0] = 0
    start = time.perf_counter()
    many(n)
    hw = time.perf_counter() - start
    emit({"hw": hw, "bare": bare, "calls": calls[0]})


def measure(args):
    per_hit, bare = [], []
    for _ in range(args.repeat):
        home = tempfile.mkdtemp(prefix="hw-bench-")
        try:
            run_child(__file__, ["warm", str(N)], home=home, HEADWATER_LOGGING_LEVEL="WARNING")
            out = run_child(__file__, ["hit", str(N)], home=home, HEADWATER_LOGGING_LEVEL="WARNING")
        finally:
            shutil.rmtree(home, ignore_errors=True)
        if out["calls"]:
            raise RuntimeError(f"{out['calls']} of {N} calls missed the cache")
        per_hit.append(out["hw"] / N * 1e6)
        bare.append(out["bare"] / N * 1e6)
    value = median(per_hit)
    return [Row("per hit, WARNING log", value, "us", median(bare), "file read + unpickle", "<= 150 us",
                value <= 150, per_hit)], {"N": N}


if __name__ == "__main__":
    main("cache_hit", measure, child)
