"""Where a function or a class comes from, the same however its file was started.

Python names a module after how it was loaded: ``__main__`` for ``python etl.py``,
``etl`` under ``headwater run etl.py:flow`` or ``import etl``, ``pipelines.etl`` when
imported from its package. Task keys and cache keys must not change with that, so they
name the defining *file* instead:

* its path relative to the project root (the nearest ancestor directory holding
  ``pyproject.toml`` or ``.git``), with ``/`` separators, e.g. ``pipelines/etl.py``;
* its file name alone when no project holds it, e.g. ``etl.py``;
* the module name, as before, for installed code (the standard library, anything under
  a ``site-packages`` or ``dist-packages`` directory), whose module names are stable,
  and for code with no file on disk (a REPL, ``python -c``, a notebook cell, exec'd text).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

_file_ids: dict[str, str | None] = {}  # file name as the code object has it -> identity
_module_files: dict[str, str] = {}  # module name -> file, learned from the functions of tasks
_library_roots: tuple[str, ...] | None = None


def _libraries() -> tuple[str, ...]:
    global _library_roots
    if _library_roots is None:
        import sysconfig

        paths = sysconfig.get_paths()
        roots = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
        _library_roots = tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))
    return _library_roots


def _is_library(real: str) -> bool:
    parts = Path(real).parts
    return "site-packages" in parts or "dist-packages" in parts or real.startswith(_libraries())


def file_identity(filename: str | None) -> str | None:
    """The project-relative path of a source file (see the module docstring), or None for
    installed code and for names that are not a file on disk."""
    if not filename:
        return None
    try:
        return _file_ids[filename]
    except KeyError:
        pass
    found: str | None = None
    if not filename.startswith("<"):
        real = os.path.realpath(filename)  # symlinks and relative names: one file, one identity
        if os.path.isfile(real) and not _is_library(real):
            root = find_project_root(Path(real).parent)
            found = Path(os.path.relpath(real, root)).as_posix() if root is not None else os.path.basename(real)
    if len(_file_ids) > 10_000:  # bounded: exec'd code can make endless names
        _file_ids.clear()
    _file_ids[filename] = found
    return found


def find_project_root(start: Path) -> Path | None:
    """The nearest ancestor of ``start`` holding ``pyproject.toml`` or ``.git``."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").exists() or (directory / ".git").exists():
            return directory
    return None


def function_origin(fn: Any) -> str:
    """Where ``fn`` is defined: its file's identity, else its module name.

    Also remembers the file of ``fn``'s module, so classes of a module that is not in
    ``sys.modules`` (a file run by ``headwater run``) are named by file too.
    """
    try:
        inner = inspect.unwrap(fn)  # a decorated function: where its body is defined
    except ValueError:  # a wrapper cycle
        inner = fn
    code = getattr(inner, "__code__", None)
    filename = getattr(code, "co_filename", None)
    where = file_identity(filename)
    module = getattr(inner, "__module__", None) or getattr(fn, "__module__", None) or ""
    if where is not None and module:
        _module_files[module] = filename  # type: ignore[assignment]
    return where if where is not None else module


def type_name(cls: type) -> str:
    """A class's name for keys: ``file:qualname`` for a class of the user's own files,
    ``module.qualname`` for installed code (unchanged by how the flow was started)."""
    module_name = cls.__module__
    module = sys.modules.get(module_name)
    filename = None
    if module is not None and vars(module).get(cls.__qualname__.split(".", 1)[0]) is cls:
        filename = getattr(module, "__file__", None)
    if filename is None:  # not (or not visibly) that module's: e.g. a file headwater run loaded
        filename = _module_files.get(module_name) or getattr(module, "__file__", None)
    where = file_identity(filename)
    if where is None:
        return f"{module_name}.{cls.__qualname__}"
    return f"{where}:{cls.__qualname__}"


def task_key(task: Any) -> str:
    """A stable 8-hex key for a task: same in every process, unaffected by line numbers,
    and by how its file was started (script, ``headwater run``, import): the defining
    file relative to the project root, the qualified name and the task name
    (docs/caching.md)."""
    fn = task.fn
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    ident = f"{function_origin(fn)}:{qualname}:{task.name}"
    return hashlib.sha1(ident.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def source_dir_of(fn: Any) -> Path | None:
    """The directory of the file that defines ``fn`` (where its ``headwater_hooks.py``
    files are looked up), or ``None`` for code with no file on disk."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    if not path or path.startswith("<"):
        return None
    return Path(path).resolve().parent
