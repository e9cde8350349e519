"""The core package is built in layers, and the imports between its modules keep to them.

Each core module belongs to one layer (``LAYERS`` below, lowest first). A module imports,
when it is imported, only modules of its own layer or a lower one, so a reader can learn
the package from the bottom up and a change low down cannot need anything above it:

1. values: errors, ids, states, runs, annotations, ...
2. interfaces: state policy, result store, run store, task runner (each with a double)
3. decorators: specs, parameters, flows, tasks
4. the plugin system: hookspecs, plugin manager, registry, settings, session, ...
5. the engine: the task and flow loops, context, futures, run logging
6. entry points: ``headwater`` itself, the CLI, the pytest plugin, ``runtime``, ``remote``

``headwater.plugins`` sits above all of core: core knows no behaviour.

An import inside a function (a "hidden" import) is not seen by a reader of the module's
head, so there are few of them, and each says why on its line or the line above, with
``# layering:`` (a lower layer calling up, e.g. calling a flow starts the engine) or
``# import time:`` (kept out of ``import headwater``; tests/core/test_import_light.py).
Imports under ``if TYPE_CHECKING:`` are for type checkers only and are not counted.

The tests read the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
PACKAGE = "headwater"

VALUES, INTERFACES, DECORATORS, PLUGIN_SYSTEM, ENGINE, ENTRY_POINTS, PLUGINS = range(1, 8)
LAYER_NAMES = {
    VALUES: "values",
    INTERFACES: "interfaces",
    DECORATORS: "decorators",
    PLUGIN_SYSTEM: "plugin system",
    ENGINE: "engine",
    ENTRY_POINTS: "entry points",
    PLUGINS: "default plugins",
}

#: Every module of core, and its layer. A new module must be added here.
LAYERS = {
    "headwater.errors": VALUES,
    "headwater.active": VALUES,
    "headwater.ids": VALUES,
    "headwater.stash": VALUES,
    "headwater.states": VALUES,
    "headwater.runs": VALUES,
    "headwater.tracebacks": VALUES,
    "headwater.task_lines": VALUES,
    "headwater.utilities": VALUES,
    "headwater.utilities.annotations": VALUES,
    "headwater.policy": INTERFACES,
    "headwater.results": INTERFACES,
    "headwater.stores": INTERFACES,
    "headwater.task_runners": INTERFACES,
    "headwater.specs": DECORATORS,
    "headwater.parameters": DECORATORS,
    "headwater.identity": DECORATORS,
    "headwater.flows": DECORATORS,
    "headwater.tasks": DECORATORS,
    "headwater.hookspecs": PLUGIN_SYSTEM,
    "headwater.plugin_manager": PLUGIN_SYSTEM,
    "headwater.registry": PLUGIN_SYSTEM,
    "headwater.settings": PLUGIN_SYSTEM,
    "headwater.local_hooks": PLUGIN_SYSTEM,
    "headwater.bindings": PLUGIN_SYSTEM,
    "headwater.plugin_loading": PLUGIN_SYSTEM,
    "headwater.session": PLUGIN_SYSTEM,
    # The engine package, module by module.
    "headwater.engine": ENGINE,
    "headwater.engine.attempts": ENGINE,
    "headwater.engine.calls": ENGINE,
    "headwater.engine.context": ENGINE,
    "headwater.engine.drivers": ENGINE,
    "headwater.engine.flow_loop": ENGINE,
    "headwater.engine.futures": ENGINE,
    "headwater.engine.task_creation": ENGINE,
    "headwater.engine.task_loop": ENGINE,
    "headwater.engine.timeouts": ENGINE,
    "headwater.run_logging": ENGINE,
    "headwater.reuse": ENGINE,
    "headwater.run_tags": ENGINE,
    "headwater": ENTRY_POINTS,
    "headwater.cli": ENTRY_POINTS,
    "headwater.testing": ENTRY_POINTS,
    "headwater.testing_runners": ENTRY_POINTS,
    "headwater.testing_scripts": ENTRY_POINTS,
    "headwater.testing_results": ENTRY_POINTS,
    "headwater.testing_stores": ENTRY_POINTS,
    "headwater.testing_store_sharing": ENTRY_POINTS,
    "headwater.testing_store_records": ENTRY_POINTS,
    "headwater.runtime": ENTRY_POINTS,
    "headwater.runtime.flow_run": ENTRY_POINTS,
    "headwater.runtime.task_run": ENTRY_POINTS,
    "headwater.remote": ENTRY_POINTS,
    "headwater.main_guard": ENTRY_POINTS,
    "headwater.remote_pickling": ENTRY_POINTS,
    "headwater.remote_worker": ENTRY_POINTS,
    "headwater.remote_runner": ENTRY_POINTS,
    "headwater.remote_tracebacks": ENTRY_POINTS,
    "headwater.retry": ENTRY_POINTS,
    "headwater.exceptions": ENTRY_POINTS,
    "headwater.cache_policies": ENTRY_POINTS,
    # The public paths of the engine's context and futures (re-exports).
    "headwater.context": ENTRY_POINTS,
    "headwater.futures": ENTRY_POINTS,
    "headwater.logging": ENTRY_POINTS,
}

#: At most this many imports of headwater modules inside functions, in all of core:
#: the decorators starting the engine (2), public paths of default plugins' names (2),
#: the in-memory doubles and the worker using default plugins' rules (4), a retry's
#: inputs hash being the input_hash plugin's canonical one (1), and import time (6: two
#: of them the pytest plugin's conformance suites, loaded only by the tests that use
#: them). A new one must take the place of one of these, or say in review why not.
HIDDEN_IMPORT_LIMIT = 15

REASONS = ("# layering:", "# import time:")


@dataclass(frozen=True)
class Import:
    """One import of a headwater module, as written in one core module."""

    module: str  # the importing module
    target: str  # the imported module
    line: int
    hidden: bool  # inside a function body: runs when the function is called
    reason: str  # "" or the line's "# layering: ..."/"# import time: ..." comment

    def where(self) -> str:
        return f"{self.module} line {self.line}"


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package at ``root``: dotted name -> file."""
    return {module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> list[str]:
    """The modules an import statement imports (``from . import x`` imports module
    ``x`` when there is one, else names of the package)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    targets = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        target = submodule if submodule in known else source
        if target not in targets:
            targets.append(target)
    return targets


def imports_in(path: Path, module: str, known: set[str], package: str) -> list[Import]:
    """The imports of ``package``'s modules written in one file, except those under
    ``if TYPE_CHECKING:``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def reason_for(line: int) -> str:
        for text in (lines[line - 1], lines[line - 2] if line >= 2 else ""):
            for reason in REASONS:
                if reason in text:
                    return text[text.index(reason):].strip()
        return ""

    def visit(node: ast.AST, hidden: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for branch_child in child.orelse:
                    visit_statement(branch_child, hidden)
                continue
            visit_statement(child, hidden)

    def visit_statement(child: ast.AST, hidden: bool) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(child, module, is_package, known):
                if target == package or target.startswith(package + "."):
                    found.append(Import(module, target, child.lineno, hidden,
                                        reason_for(child.lineno) if hidden else ""))
            return
        inside = hidden or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(child, inside)

    visit(ast.parse(source, str(path)), False)
    return found


def all_imports(root: Path, package: str) -> list[Import]:
    modules = package_modules(root, package)
    known = set(modules)
    return [imp for name, path in modules.items() for imp in imports_in(path, name, known, package)]


def layer_of(target: str, layers: dict[str, int]) -> int | None:
    """A module's layer; every module of ``headwater.plugins`` is above core."""
    if target == f"{PACKAGE}.plugins" or target.startswith(f"{PACKAGE}.plugins."):
        return PLUGINS
    return layers.get(target)


def upward_imports(imports: list[Import], layers: dict[str, int]) -> list[str]:
    """Module-level imports of a higher layer, described."""
    problems = []
    for imp in imports:
        if imp.hidden or imp.module not in layers:
            continue
        target_layer = layer_of(imp.target, layers)
        if target_layer is not None and target_layer > layers[imp.module]:
            problems.append(
                f"{imp.where()}: {imp.module} ({LAYER_NAMES[layers[imp.module]]}) imports "
                f"{imp.target} ({LAYER_NAMES[target_layer]}), a higher layer, when it is "
                f"imported; move the code down, or import inside the function that needs it "
                f"with a '# layering:' comment"
            )
    return problems


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Cycles among the modules, each as the modules in order (first repeated at the end).

    Every import counts that runs at some time (hidden ones too): two modules that need
    each other are one module in two files, whichever imports first."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
    cycles: list[list[str]] = []
    done: set[str] = set()

    def search(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycle = path[path.index(target):] + [target]
                if not any(set(cycle) == set(seen) for seen in cycles):
                    cycles.append(cycle)
            elif target not in done:
                search(target, path + [target])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            search(start, [start])
    return cycles


def unexplained_hidden_imports(imports: list[Import]) -> list[str]:
    """Hidden imports that give no reason, described."""
    return [
        f"{imp.where()}: {imp.module} imports {imp.target} inside a function without a reason: "
        f"import it at the top of the module, or say why on its line or the line above with "
        f"'# layering: ...' or '# import time: ...'"
        for imp in imports if imp.hidden and not imp.reason
    ]


@pytest.fixture(scope="module")
def core_imports() -> list[Import]:
    return all_imports(CORE, PACKAGE)


def test_every_core_module_has_a_layer():
    """A module missing from LAYERS (a new one) or listed but gone fails, naming it."""
    modules = set(package_modules(CORE, PACKAGE))
    missing = sorted(modules - set(LAYERS))
    gone = sorted(set(LAYERS) - modules)
    assert not missing, (f"core modules with no layer: {missing}; add each to LAYERS in "
                         f"tests/core/test_layers.py")
    assert not gone, f"LAYERS names modules that do not exist: {gone}; remove them"


def test_no_module_imports_a_higher_layer_when_imported(core_imports):
    """A module-level import may reach the module's own layer or lower ones only."""
    problems = upward_imports(core_imports, LAYERS)
    assert not problems, "\n".join(problems)


def test_core_has_no_import_cycle(core_imports):
    """No two core modules need each other, directly or through others."""
    cycles = import_cycles(core_imports)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_hidden_imports_are_few_and_each_says_why(core_imports):
    """Imports inside functions stay under the limit, and each gives its reason."""
    hidden = [imp for imp in core_imports if imp.hidden]
    problems = unexplained_hidden_imports(core_imports)
    assert not problems, "\n".join(problems)
    assert len(hidden) <= HIDDEN_IMPORT_LIMIT, (
        f"{len(hidden)} imports of headwater modules inside functions, more than "
        f"{HIDDEN_IMPORT_LIMIT}: " + ", ".join(f"{imp.where()} ({imp.target})" for imp in hidden))


# -- the checks themselves, on a small package written for each test -----------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checks_find_an_upward_import_a_cycle_and_an_unexplained_hidden_import(tmp_path):
    """A values module importing an engine module when imported, two modules importing
    each other from inside functions, and a hidden import without a reason are each
    reported; a hidden import with a reason and a TYPE_CHECKING import are not."""
    root = write_package(tmp_path / "core", {
        "__init__.py": "",
        "errors.py": "from . import engine\n",
        "engine.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from .session import Session\n"
            "def run():\n"
            "    from .session import current\n"
        ),
        "session.py": (
            "def current():\n"
            "    # layering: the session starts the engine\n"
            "    from headwater.engine import run\n"
        ),
    })
    imports = all_imports(root, PACKAGE)
    layers = {"headwater": ENTRY_POINTS, "headwater.errors": VALUES,
              "headwater.engine": ENGINE, "headwater.session": PLUGIN_SYSTEM}

    upward = upward_imports(imports, layers)
    assert len(upward) == 1 and "headwater.errors (values) imports headwater.engine (engine)" in upward[0]
    assert import_cycles(imports) == [["headwater.engine", "headwater.session", "headwater.engine"]]
    unexplained = unexplained_hidden_imports(imports)
    assert len(unexplained) == 1
    assert unexplained[0].startswith("headwater.engine line 5: headwater.engine imports headwater.session")
