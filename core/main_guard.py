"""Whether a flow is being called by a script's top-level code, outside
``if __name__ == "__main__":``.

A runner that starts worker processes by ``spawn`` or ``forkserver`` (Dask's local
cluster) makes each of them import the script again, as ``__mp_main__``: a flow called at
the script's top level would run again in every worker, which would start a cluster of
its own. Python refuses that (a process cannot start processes while it is being set
up), and the user sees pages of tracebacks from the workers. Such a runner asks
:func:`check_main_guard` before it starts its cluster, and gets one clear error line
instead, naming the fix.

Only the script's own frames are read (and its source, once, with ``ast``): a flow
called from a function, from a guarded block, from ``python -c`` or a notebook (which
no worker imports again) passes.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from types import FrameType

from .errors import ConfigurationError

__all__ = ["MainGuardMissing", "check_main_guard", "reimporting_main", "unguarded_main_call"]


class MainGuardMissing(ConfigurationError):
    """A flow whose runner starts worker processes was called by a script's top-level
    code without ``if __name__ == "__main__":``."""


def check_main_guard(flow_name: str, starts: str | None) -> None:
    """Raise :class:`MainGuardMissing` when the flow is called while the script is being
    imported again by a worker process (so no cluster is ever started there); and, when
    ``starts`` names processes that import the script again (e.g. ``"Dask's local
    cluster starts worker processes"``), when it is called by the script's own top-level
    code outside ``if __name__ == "__main__":``."""
    if reimporting_main():
        raise MainGuardMissing(
            f"flow {flow_name!r} was called while a worker process imported the script again: "
            f"put the script's flow calls under `if __name__ == \"__main__\":`")
    where = unguarded_main_call() if starts else None
    if where is not None:
        raise MainGuardMissing(
            f"{where} calls flow {flow_name!r} at the script's top level, and {starts} that import "
            f"the script again: put the call under `if __name__ == \"__main__\":`")


def reimporting_main() -> bool:
    """Whether this call comes from a script's top-level code run again as
    ``__mp_main__`` (in a process started by ``spawn`` or ``forkserver``)."""
    return _script_frame("__mp_main__") is not None


def unguarded_main_call() -> str | None:
    """``"file.py:12"`` when this call comes from the top-level code of the script this
    process runs (``python file.py`` or ``python -m``), outside an
    ``if __name__ == "__main__":`` block; else None (also when its source cannot be read)."""
    frame = _script_frame("__main__")
    if frame is None:
        return None
    filename, line = frame.f_code.co_filename, frame.f_lineno
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file or not _same_path(main_file, filename):
        return None  # python -c, a notebook: no worker imports it again
    try:
        with open(filename, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return None
    if _guarded(tree.body, line):
        return None
    return f"{filename}:{line}"


def _script_frame(module_name: str) -> FrameType | None:
    """The outermost frame of a module's top-level code named ``module_name`` on this
    thread's stack, if any."""
    frame = inspect.currentframe()
    found = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == module_name:
            found = frame
        frame = frame.f_back
    return found


def _guarded(body: list[ast.stmt], line: int) -> bool:
    """Whether ``line`` lies inside an ``if __name__ == "__main__":`` block of ``body``."""
    for node in body:
        end = getattr(node, "end_lineno", None) or node.lineno
        if not node.lineno <= line <= end:
            continue
        if isinstance(node, ast.If) and _is_main_test(node.test):
            return any(child.lineno <= line <= (child.end_lineno or child.lineno) for child in node.body) \
                or _guarded(node.orelse, line)
        # Compound statements (for, with, try, another if): look inside them.
        for name in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, name, None)
            if isinstance(inner, list) and inner and _guarded(inner, line):
                return True
        return False
    return False


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round), also as one of the conditions of
    an ``and``."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_is_main_test(value) for value in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    texts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(texts) == 1


def _same_path(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
