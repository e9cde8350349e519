"""Hooks bound once per flow directory, so a task run pays for no hook lookups.

A pluggy call costs about a microsecond plus half a microsecond per implementation; a
plain call costs a few dozen nanoseconds. So each per-run hook is resolved here once:

* no implementation  → ``None`` (the engine skips the call);
* only the default plugin's implementation → that plain function;
* anything else → a call through pluggy, which orders and wraps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .hookspecs import FLOW_SCOPED_HOOKS
from .plugin_loading import DEFAULT_PLUGINS

if TYPE_CHECKING:
    from .session import Session

#: Hooks whose default implementation just calls the body: bound to None when alone.
_PASS_THROUGH = frozenset({"headwater_flow_run_call", "headwater_task_run_call"})


class FlowBindings:
    """The flow-scoped hooks, resolved for one set of applicable plugins."""

    def __init__(self, session: Session, excluded_plugins: list[Any]) -> None:
        manager = session.pm
        self.session = session
        default_bound: set[str] = set()
        for hook_name in FLOW_SCOPED_HOOKS:
            if excluded_plugins:
                caller = manager.subset_hook_caller(hook_name, excluded_plugins)
            else:
                caller = getattr(manager.hook, hook_name)
            impls = caller.get_hookimpls()
            bound: Callable[..., Any] | None
            if not impls:
                bound = None
            elif len(impls) == 1 and impls[0].plugin_name in DEFAULT_PLUGINS and not impls[0].wrapper:
                bound = None if hook_name in _PASS_THROUGH else impls[0].function
                default_bound.add(hook_name[len("headwater_"):])
            else:
                # The caller itself: no wrapper frame. Tests count pluggy calls with
                # manager.add_hookcall_monitoring, which sees subset callers' calls too.
                bound = caller
            setattr(self, hook_name[len("headwater_"):], bound)
        #: Short names of the hooks bound to a default plugin's own implementation alone,
        #: so the engine may skip work around a call whose default it knows (naming a
        #: task without ``task_run_name`` needs no ``headwater.runtime``).
        self.default_bound: frozenset[str] = frozenset(default_bound)

    @classmethod
    def empty(cls) -> FlowBindings:
        """Bindings that skip every hook (each ``None``): for runs where no plugin is
        loaded, such as a task run detached to a worker process."""
        bindings = cls.__new__(cls)
        bindings.session = None  # type: ignore[assignment]
        for hook_name in FLOW_SCOPED_HOOKS:
            setattr(bindings, hook_name[len("headwater_"):], None)
        bindings.default_bound = frozenset()
        return bindings

    # Declared for readers and type checkers; set in __init__.
    make_task_runner: Callable[..., Any] | None
    make_result_store: Callable[..., Any] | None
    make_state_policy: Callable[..., Any] | None
    make_flow_state_policy: Callable[..., Any] | None
    flow_run_name: Callable[..., Any] | None
    task_run_name: Callable[..., Any] | None
    task_cache_key: Callable[..., Any] | None
    flow_run_call: Callable[..., Any] | None
    task_run_call: Callable[..., Any] | None
    state_changed: Callable[..., Any] | None
