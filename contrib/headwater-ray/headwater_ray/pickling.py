"""Pickling what goes to Ray workers, with clear errors naming what cannot travel.

The user's own modules (a script, a test file, anything not installed) are pickled by
value: Ray workers cannot import a project's files.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

from headwater.remote import DetachedRun, NotPicklable

__all__ = ["dumps_by_value", "dumps_run", "dumps_task", "describe_task"]

_by_value_lock = threading.Lock()


def describe_task(task: Any) -> str:
    fn = task.fn
    return f"task {task.name!r} ({getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)})"


def dumps_by_value(value: Any, task: Any) -> bytes:
    """cloudpickle ``value``, sending the task's own module by value when it is not an
    installed package."""
    import cloudpickle

    module = sys.modules.get(getattr(task.fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or is_installed(module):
        return cloudpickle.dumps(value)
    with _by_value_lock:
        registered = module.__name__ in cloudpickle.list_registry_pickle_by_value()
        if not registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(value)
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)


def is_installed(module: Any) -> bool:
    """Whether workers can import ``module`` by name (the standard library, site-packages)."""
    path = getattr(module, "__file__", None) or ""
    top = module.__name__.split(".")[0]
    return (not path or "site-packages" in path or "dist-packages" in path
            or top in sys.stdlib_module_names or top in ("headwater", "headwater_ray"))


def dumps_run(task: Any, run_name: str, detached: DetachedRun) -> bytes:
    """Pickle one run's package; an argument that cannot be pickled is named."""
    try:
        return dumps_by_value(detached, task)
    except Exception:
        pass  # find the argument to name
    for name, value in detached.parameters.items():
        try:
            dumps_by_value(value, task)
        except Exception as exc:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise NotPicklable(
                f"argument {name!r} of task {task.name!r} cannot be pickled to send it to Ray "
                f"workers: {type(value).__name__} {shown}: {type(exc).__name__}: {exc}") from None
    raise NotPicklable(f"task run {run_name!r} cannot be pickled to send it to Ray workers")


def dumps_task(value: Any, task: Any, describe: Callable[[], str]) -> bytes:
    """Pickle the task with its policy and flow facts; the error names the task."""
    try:
        return dumps_by_value(value, task)
    except Exception as exc:
        try:
            dumps_by_value(task, task)
            what = f"the state policy of {describe()}"
        except Exception:
            what = describe()
        raise NotPicklable(f"{what} cannot be pickled to send it to Ray workers: "
                           f"{type(exc).__name__}: {exc}. Define the task at module level, and "
                           f"keep locks, connections and open files out of its globals") from exc
