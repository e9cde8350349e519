"""A real Dask cluster on loopback for the tests: ``dask scheduler`` and two ``dask
worker`` processes started by the test, each with its log in the test's directory, and
stopped (workers first) when it is done."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Seconds for the scheduler and both workers to come up (a loaded 2-core machine).
START_LIMIT = 60.0


def dask_command(*args: str) -> list[str]:
    """``dask <args>`` with this interpreter's dask."""
    script = Path(sys.executable).with_name("dask")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "dask", *args]


@contextlib.contextmanager
def running_cluster(base: Path, env: dict[str, str], workers: int = 2) -> Iterator[str]:
    """A scheduler and ``workers`` workers (2 threads each, no nanny) started in ``base``
    with ``env``; yields the scheduler's address once every worker has joined."""
    import distributed

    scheduler_file = base / "scheduler.json"
    names = ["scheduler", *(f"worker-{i}" for i in range(1, workers + 1))]
    logs = [open(base / f"{name}.log", "w") for name in names]
    procs = [subprocess.Popen(
        dask_command("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(scheduler_file)),
        cwd=base, env=env, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + START_LIMIT
        while not scheduler_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail("dask scheduler did not start:\n" + (base / "scheduler.log").read_text())
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written whole, but give the writer a moment
        address = json.loads(scheduler_file.read_text())["address"]
        for i, name in enumerate(names[1:], start=1):
            procs.append(subprocess.Popen(
                dask_command("worker", address, "--host", "127.0.0.1", "--nthreads", "2",
                             "--no-nanny", "--no-dashboard", "--name", name),
                cwd=base, env=env, stdout=logs[i], stderr=subprocess.STDOUT))
        with distributed.Client(address, set_as_default=False, timeout=START_LIMIT) as client:
            try:
                client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
            except Exception:
                text = "\n".join((base / f"{name}.log").read_text() for name in names[1:])
                pytest.fail(f"dask workers did not start:\n{text}")
        yield address
    finally:
        for proc in reversed(procs):  # workers first, so none waits to reconnect
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # never leave a process behind
                proc.wait(timeout=10)
        for log in logs:
            log.close()
