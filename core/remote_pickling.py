"""Pickling what a remote runner sends to its workers, with clear errors naming what
cannot travel.

The user's own modules (a script, a test file, anything not installed) are pickled by
value: workers cannot import a project's files. Used by
:class:`headwater.remote_runner.RemoteTaskRunner` (the Dask and Ray runners).
"""

from __future__ import annotations

import pickle
import sys
import threading
from typing import Any

import cloudpickle

from .remote import DetachedRun, NotPicklable

__all__ = ["describe_task", "dumps", "dumps_by_value", "dumps_run", "dumps_task", "is_installed"]

_by_value_lock = threading.Lock()


def describe_task(task: Any) -> str:
    """``task 'load' (etl.load)``: the task's name and where its function lives."""
    fn = task.fn
    return f"task {task.name!r} ({getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)})"


#: Types every Python pickles and loads by name alike: a run whose arguments hold only
#: these is pickled by the standard library's pickle, a few times faster than cloudpickle.
_PLAIN = (int, float, str, bytes, bool, type(None))


def dumps(value: Any) -> bytes:
    """Pickle ``value`` on a worker, to send it back: the standard library's pickle when
    it can (it is a few times faster), else cloudpickle (a class or function made on
    the worker, say one pickled by value from the user's script). Either loads in the
    flow process the same way."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a lambda, a local or a by-value class: cloudpickle's cases
        return cloudpickle.dumps(value)


def _plain(value: Any, budget: list[int]) -> bool:
    """Whether ``value`` holds only :data:`_PLAIN` values (in lists, tuples and dicts);
    gives up (False) after ``budget[0]`` values, so a large argument is not walked twice."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is list or kind is tuple:
        return all(_plain(item, budget) for item in value)
    if kind is dict:
        return all(type(k) in _PLAIN and _plain(v, budget) for k, v in value.items())
    return False


def dumps_by_value(value: Any, task: Any, installed: tuple[str, ...] = ("headwater",)) -> bytes:
    """cloudpickle ``value``, sending the task's own module by value when workers cannot
    import it (see :func:`is_installed`; ``installed`` names packages they have)."""
    module = sys.modules.get(getattr(task.fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or is_installed(module, installed):
        return cloudpickle.dumps(value)
    # The registry is global to cloudpickle: one thread at a time registers and unregisters.
    with _by_value_lock:
        registered = module.__name__ in cloudpickle.list_registry_pickle_by_value()
        if not registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(value)
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)


def is_installed(module: Any, installed: tuple[str, ...] = ("headwater",)) -> bool:
    """Whether workers can import ``module`` by name: the standard library, site-packages,
    or one of the packages named in ``installed`` (headwater and the runner's own)."""
    path = getattr(module, "__file__", None) or ""
    top = module.__name__.split(".")[0]
    return (not path or "site-packages" in path or "dist-packages" in path
            or top in sys.stdlib_module_names or top in installed)


def dumps_run(task: Any, run_name: str, detached: DetachedRun, engine: str,
              installed: tuple[str, ...] = ("headwater",)) -> bytes:
    """Pickle one run's package; an argument that cannot be pickled is named (``engine``
    names the workers in the message: ``"Dask"``, ``"Ray"``)."""
    budget = [64]
    if all(_plain(value, budget) for value in detached.parameters.values()):
        # Nothing a worker must get by value (a DetachedRun is headwater's, and the
        # flow's own names are strings): the standard library's pickle is enough.
        return pickle.dumps(detached, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return dumps_by_value(detached, task, installed)
    except Exception:
        pass  # find the argument to name
    for name, value in detached.parameters.items():
        try:
            dumps_by_value(value, task, installed)
        except Exception as exc:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise NotPicklable(
                f"argument {name!r} of task {task.name!r} cannot be pickled to send it to {engine} "
                f"workers: {type(value).__name__} {shown}: {type(exc).__name__}: {exc}") from None
    raise NotPicklable(f"task run {run_name!r} cannot be pickled to send it to {engine} workers")


def dumps_task(value: Any, task: Any, engine: str, installed: tuple[str, ...] = ("headwater",)) -> bytes:
    """Pickle the task with its policy and flow facts (``value``); the error names the
    task, or its state policy when the task alone pickles."""
    try:
        return dumps_by_value(value, task, installed)
    except Exception as exc:
        try:
            dumps_by_value(task, task, installed)
            what = f"the state policy of {describe_task(task)}"
        except Exception:
            what = describe_task(task)
        raise NotPicklable(f"{what} cannot be pickled to send it to {engine} workers: "
                           f"{type(exc).__name__}: {exc}. Define the task at module level, and "
                           f"keep locks, connections and open files out of its globals") from exc
