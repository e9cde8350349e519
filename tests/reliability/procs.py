"""Helpers for the tests that run headwater in child processes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a child process over its own HEADWATER_HOME.

    Every HEADWATER_* variable of the test run is dropped so that the child sees only the
    settings the test gives it, and plugin autoload is off so that plugins installed on the
    machine do not change what the child records. ``extra`` adds variables (for example
    ``PYTHONUNBUFFERED="1"`` or ``HEADWATER_LOGGING_LEVEL="WARNING"``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(HEADWATER_HOME=str(home), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1", **extra)
    return env


def start_together(count: int, start: Callable[[int], subprocess.Popen[str]], gate: Path,
                   wait: float = 90) -> list[subprocess.Popen[str]]:
    """Start ``start(0) .. start(count - 1)`` and release them at once.

    Each child touches ``gate/ready-<n>`` once it is imported and ready, then waits for
    ``gate/go``: starting a Python process takes longer than the work under test, so
    without the gate the children would mostly run one after the other. ``go`` is touched
    once all are ready, one has exited (its output tells why), or ``wait`` seconds passed.
    """
    gate.mkdir(exist_ok=True)
    procs = [start(n) for n in range(count)]
    deadline = time.time() + wait
    while len(list(gate.glob("ready-*"))) < count and time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.02)
    (gate / "go").touch()
    return procs
