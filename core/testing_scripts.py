"""The scripts the runner conformance suite runs in a child process, and running them.

Two behaviours can only be seen from outside a process: tasks and arguments defined in
``__main__`` (they cannot be imported by name elsewhere), and Ctrl-C (the process must
exit). :func:`run_script` runs such a script with the runner under test, which travels
pickled; :func:`child_store` reads what the child recorded.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from headwater.session import Session

__all__ = ["HOLD_SECONDS", "INTERRUPT_SCRIPT", "MAIN_SCRIPT", "child_store", "run_script"]

#: How long a child process of the suite may take, in seconds: enough for a slow start
#: (a cluster's client imports a lot) on a loaded machine.
CHILD_TIMEOUT = 90.0


#: Settings a child process must not inherit: its runs go under its own HEADWATER_HOME.
CHILD_UNSET = ("HEADWATER_DATABASE_URL", "HEADWATER_LOCAL_STORAGE_PATH")

#: How long a task of the interrupted script holds on, at most (it ends sooner when the
#: test is over): the script must exit long before.
HOLD_SECONDS = 30

# Both scripts take the pickled runner's path as argv[1], and end with the guard a script
# needs for runners that start processes (they import __main__ again).
MAIN_SCRIPT = textwrap.dedent('''
    import dataclasses, json, pickle, sys

    import pydantic

    from headwater import flow, task, unmapped


    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int


    class Order(pydantic.BaseModel):
        item: str
        quantity: int = pydantic.Field(gt=0)


    OFFSET = 100  # a global of __main__, read through a helper


    def shifted(value):
        return value + OFFSET


    def make_scaler(factor):
        @task
        def scale(value: int) -> int:  # a closure over factor
            return shifted(value) * factor
        return scale


    @task
    def move(point: Point, by: int) -> Point:
        return Point(point.x + by, point.y + by)


    @task
    def restock(order: Order) -> Order:
        return order.model_copy(update={"quantity": order.quantity + 1})


    @task
    def price(order: Order, unit: float) -> float:
        return order.quantity * unit


    @flow
    def in_main(points, order):
        moved = move.map(points, unmapped(1))
        scaled = make_scaler(3).map([p.x for p in points])
        restocked = restock.submit(order)
        total = price.submit(restocked, 2.5)
        return [f.result() for f in moved], [f.result() for f in scaled], restocked.result(), total.result()


    if __name__ == "__main__":
        with open(sys.argv[1], "rb") as f:
            runner = pickle.load(f)
        moved, scaled, order, total = in_main.with_options(task_runner=runner)(
            [Point(1, 2), Point(3, 4)], Order(item="tea", quantity=2))
        print(json.dumps({
            "moved": [[p.x, p.y] for p in moved], "points": all(type(p) is Point for p in moved),
            "scaled": scaled, "order": [order.item, order.quantity],
            "is_order": type(order) is Order, "total": total}))
''')

INTERRUPT_SCRIPT = textwrap.dedent(f'''
    import os, pickle, signal, sys, threading, time
    from pathlib import Path

    # Started in the background or under nohup, SIGINT is ignored: Ctrl-C is wanted here.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from headwater import flow, task

    MARKS = Path(sys.argv[2])


    @task
    def hold(i):
        (MARKS / f"started-{{i}}").touch()
        deadline = time.monotonic() + {HOLD_SECONDS}
        while not (MARKS / "stop").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return i


    @task
    def after(x):
        return x


    def press_ctrl_c_once_a_task_runs():
        while not any(MARKS.glob("started-*")):
            time.sleep(0.02)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # lands in the main thread, wherever it is


    @flow
    def interrupted():
        futures = [hold.submit(i) for i in range(3)]
        after.submit(futures[0])
        return [f.result() for f in futures]


    if __name__ == "__main__":
        with open(sys.argv[1], "rb") as f:
            runner = pickle.load(f)
        threading.Thread(target=press_ctrl_c_once_a_task_runs, daemon=True).start()
        interrupted.with_options(task_runner=runner)()
''')


def run_script(source: str, runner: Any, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as ``__main__`` in a child process with ``runner`` (pickled) and
    ``HEADWATER_HOME`` under ``folder``; the child's ``sys.path`` includes this process's,
    so a runner class defined in a test module loads there too."""
    import cloudpickle

    runner_file = folder / "runner.pickle"
    try:
        runner_file.write_bytes(cloudpickle.dumps(runner))
    except Exception as exc:
        pytest.fail(f"this case runs a script in a child process and sends it the runner "
                    f"{runner!r} with cloudpickle, which failed: {type(exc).__name__}: {exc}. "
                    f"Make the runner picklable (e.g. a __reduce__ giving its constructor "
                    f"arguments), or return a registered name from the task_runner fixture")
    script = folder / "script.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in CHILD_UNSET}
    env["HEADWATER_HOME"] = str(folder / "child-home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, str(script), str(runner_file), *args], env=env, cwd=folder,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)


@contextlib.contextmanager
def child_store(folder: Path) -> Iterator[Any]:
    """The run store a child process of :func:`run_script` wrote, read in a session of
    its own (the test's session stays as it is)."""
    env = {k: v for k, v in os.environ.items() if k not in CHILD_UNSET}
    env["HEADWATER_HOME"] = str(folder / "child-home")
    with Session(env=env) as session:
        yield session.store
