"""hello: one whole, cold process that runs a flow with one task (new HEADWATER_HOME each
time, so the store is created too), against bare ``python -c pass`` and against the same
script with the decorators taken away. At the default settings (INFO), where the budget is
checked, and at WARNING, the processes alternating.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness import DEFAULT, PYTHON, WARNING, Row, child_env, main, median, time_process, versus_warning

HELLO = '''
from headwater import flow, task

@task
def say(name):
    return f"hello, {name}"

@flow
def hello(name="world"):
    return say(name)

hello()
'''

PLAIN = '''
def say(name):
    return f"hello, {name}"

def hello(name="world"):
    return say(name)

hello()
'''


def child(args: list[str]) -> None:  # every run here is a whole process of its own
    raise SystemExit("bench_hello has no child mode")


def measure(args):
    work = Path(tempfile.mkdtemp(prefix="hw-bench-hello-"))
    (work / "hello.py").write_text(HELLO)
    (work / "plain.py").write_text(PLAIN)
    reps = max(args.repeat * 2, 7)
    hw_info, hw_warn, plain, bare = [], [], [], []
    for i in range(reps + 1):
        homes = [tempfile.mkdtemp(prefix="hw-bench-") for _ in range(2)]
        times = (time_process([PYTHON, str(work / "hello.py")], child_env(homes[0])),
                 time_process([PYTHON, str(work / "hello.py")],
                              child_env(homes[1], HEADWATER_LOGGING_LEVEL="WARNING")),
                 time_process([PYTHON, str(work / "plain.py")], child_env(homes[0])),
                 time_process([PYTHON, "-c", "pass"], child_env(homes[0])))
        if i == 0:
            continue  # the first round warms the file cache
        for bucket, value in zip((hw_info, hw_warn, plain, bare), times):
            bucket.append(value)
    b = median(bare)
    rows = [
        Row(f"whole process, {DEFAULT}", median(hw_info), "s", median(plain), "plain script",
            "<= 0.6 s", median(hw_info) <= 0.6, hw_info, level="default"),
        versus_warning("whole process", hw_info, hw_warn, "s"),
        Row(f"whole process, {WARNING}", median(hw_warn), "s", median(plain), "plain script", samples=hw_warn,
            level="WARNING"),
        Row("bare start-up", b, "s", note="python -c pass"),
    ]
    return rows, {"processes_each": reps, "cold": "new HEADWATER_HOME per process"}


if __name__ == "__main__":
    main("hello", measure, child)
