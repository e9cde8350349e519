"""Meta-tests keeping the hook specifications, their documentation and DESIGN §4.1 in step.

A hook's name and arguments are a public contract: plugins outside this repository
implement them. Changing one must be a decision, so the frozen table below has to be
edited in the same change (and docs/_gen_hooks.py run again).
"""

from __future__ import annotations

import inspect

import pluggy
import pytest

from headwater import hookspecs
from headwater.plugin_manager import PluginManager

#: hook name -> (signature, kind). Edit deliberately: plugins depend on these.
FROZEN = {
    "headwater_addhooks": ("(pluginmanager: 'pluggy.PluginManager') -> 'None'", "historic"),
    "headwater_configure": ("(session: 'Session') -> 'None'", "historic"),
    "headwater_unconfigure": ("(session: 'Session') -> 'None'", "all"),
    "headwater_register_components": ("(registry: 'Registry') -> 'None'", "all"),
    "headwater_add_commands": ("(cli: 'argparse._SubParsersAction') -> 'None'", "all"),
    "headwater_make_run_store": ("(session: 'Session') -> 'RunStore | None'", "firstresult"),
    "headwater_make_task_runner": (
        "(flow: 'Flow', session: 'Session') -> 'TaskRunner | None'", "firstresult"),
    "headwater_make_result_store": (
        "(flow: 'Flow', session: 'Session') -> 'ResultStore | None'", "firstresult"),
    "headwater_make_state_policy": (
        "(task: 'Task', session: 'Session') -> 'StatePolicy | None'", "firstresult"),
    "headwater_make_flow_state_policy": (
        "(flow: 'Flow', session: 'Session') -> 'StatePolicy | None'", "firstresult"),
    "headwater_flow_run_name": (
        "(flow: 'Flow', parameters: 'dict[str, Any]') -> 'str | None'", "firstresult"),
    "headwater_task_run_name": (
        "(task: 'Task', parameters: 'dict[str, Any]', index: 'int | str') -> 'str | None'",
        "firstresult"),
    "headwater_task_cache_key": (
        "(task: 'Task', context: 'Any', parameters: 'dict[str, Any]') -> 'str | None'", "firstresult"),
    "headwater_flow_run_call": ("(flow_run: 'FlowRun') -> 'Any'", "firstresult"),
    "headwater_task_run_call": ("(task_run: 'TaskRun') -> 'Any'", "firstresult"),
    "headwater_state_changed": (
        "(run: 'FlowRun | TaskRun', previous: 'State | None', state: 'State') -> 'None'", "all"),
}


def specs() -> dict[str, object]:
    return {name: fn for name, fn in vars(hookspecs).items()
            if name.startswith("headwater_") and inspect.isfunction(fn)}


def kind(fn: object) -> str:
    opts = getattr(fn, "headwater_spec")
    return "historic" if opts.get("historic") else "firstresult" if opts.get("firstresult") else "all"


def test_the_hooks_are_exactly_the_frozen_contract():
    """No hook was added, removed or renamed without updating the frozen table."""
    assert sorted(specs()) == sorted(FROZEN)


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_a_hook_signature_and_kind_do_not_change_unnoticed(name):
    """Each hook keeps its argument names, annotations and kind (historic/firstresult/all)."""
    fn = specs()[name]
    assert (str(inspect.signature(fn)), kind(fn)) == FROZEN[name]


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_every_hook_is_documented_for_plugin_authors(name):
    """A hookspec's docstring says when it is called, names every argument it receives,
    states how results combine, and says whether a headwater_hooks.py file may use it."""
    doc = " ".join((inspect.getdoc(specs()[name]) or "").split())
    assert doc, f"{name} has no docstring"
    assert "Called" in doc, f"{name}: say when it is called"
    for arg in inspect.signature(specs()[name]).parameters:
        assert f"``{arg}``" in doc, f"{name}: describe the argument {arg!r}"
    assert "Kind:" in doc and any(
        phrase in doc for phrase in ("first result wins", "All implementations are called",
                                     "all implementations are called")
    ), f"{name}: say whether the first result wins or all are called"
    assert "In ``headwater_hooks.py``:" in doc, f"{name}: say whether a local hook file may use it"


def test_flow_scoped_hooks_are_real_hooks_and_documented_as_scoped():
    """FLOW_SCOPED_HOOKS (what local hook files apply per directory) names only existing
    hooks, and each of them documents the directory scope."""
    for name in hookspecs.FLOW_SCOPED_HOOKS:
        assert name in FROZEN
        assert "at or below the file's directory" in " ".join(inspect.getdoc(specs()[name]).split())


def test_the_plugin_manager_knows_every_hook_with_its_kind():
    """A fresh plugin manager carries every hookspec, historic hooks as historic."""
    pm = PluginManager()
    for name, (_, expected) in FROZEN.items():
        caller = getattr(pm.hook, name)
        assert isinstance(caller, pluggy.HookCaller) and caller.has_spec()
        assert caller.is_historic() == (expected == "historic")
