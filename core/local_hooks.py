"""Finding and importing ``headwater_hooks.py`` files, the way pytest finds conftest files.

For a flow defined in directory D, every ``headwater_hooks.py`` from the project root
(the nearest ancestor of D with ``pyproject.toml`` or ``.git``) down to D is loaded, the
root's first, so nearer files are registered later and called first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .errors import PluginError
from .identity import find_project_root

FILENAME = "headwater_hooks.py"


def hook_files_for(directory: Path) -> list[Path]:
    """The hook files that apply to ``directory``, root first."""
    directory = directory.resolve()
    root = find_project_root(directory) or directory
    chain = [directory, *directory.parents]
    if root in chain:
        chain = chain[: chain.index(root) + 1]
    else:
        chain = [directory]
    return [d / FILENAME for d in reversed(chain) if (d / FILENAME).is_file()]


def import_hook_file(path: Path) -> ModuleType:
    """Import one hook file under a private module name derived from its path."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_name = f"headwater_hooks_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import hook file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise PluginError(f"hook file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def is_blocked(hook_file: Path, blocked: frozenset[str] | set[str]) -> bool:
    """Whether ``HEADWATER_DISABLE_PLUGINS`` names this hook file.

    A local file's plugin name is its absolute path; the path relative to the project
    root (``sub/headwater_hooks.py``) is accepted too.
    """
    if not blocked:
        return False
    names = {str(hook_file)}
    root = find_project_root(hook_file.parent)
    if root is not None:
        names.add(hook_file.relative_to(root).as_posix())
    return bool(names & set(blocked))


def applies_to(hook_file: Path, directory: Path) -> bool:
    """Whether a hook file's flow-level hooks apply to flows defined in ``directory``."""
    base = hook_file.parent
    directory = directory.resolve()
    return directory == base or base in directory.parents
