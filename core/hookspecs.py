"""Every hook headwater calls. This module is the plugin reference.

A plugin is any module or object with functions named ``headwater_*``; mark them with
``@headwater.hookimpl`` to pass options (``tryfirst``, ``trylast``, ``wrapper``). In a
``headwater_hooks.py`` file the marker is optional.

Kinds used below:

* **historic**: a plugin registered late still receives the call.
* **firstresult**: implementations are called newest first and the first one that
  returns something other than ``None`` wins; the rest are not called.
* **all**: every implementation is called; the results are collected in a list.
* **bound**: resolved once per flow run (DESIGN §4.4). With no implementation the engine
  skips the call; with only the default implementation it calls that function directly.

Scope: session-level hooks (configure, components, run store, commands) in a
``headwater_hooks.py`` file apply to the whole process. Flow- and task-level hooks in such
a file apply only to flows defined in the file's directory or below it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from .flows import Flow
    from .registry import Registry
    from .results import ResultStore
    from .runs import FlowRun, TaskRun
    from .session import Session
    from .states import State
    from .policy import StatePolicy
    from .stores import RunStore
    from .task_runners import TaskRunner
    from .tasks import Task

hookspec = pluggy.HookspecMarker("headwater")

#: Hooks that apply per flow: a local ``headwater_hooks.py`` file's implementations of
#: these apply only to flows defined at or below the file's directory.
FLOW_SCOPED_HOOKS = (
    "headwater_make_task_runner",
    "headwater_make_result_store",
    "headwater_make_state_policy",
    "headwater_flow_run_name",
    "headwater_task_run_name",
    "headwater_task_cache_key",
    "headwater_flow_run_call",
    "headwater_task_run_call",
    "headwater_state_changed",
)


@hookspec(historic=True)
def headwater_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hook specifications of your own.

    Called at session start, before any other hook, with the session's plugin manager.
    Use ``pluginmanager.add_hookspecs(module)``. Historic: plugins registered later also
    receive it. Return value ignored. Allowed in ``headwater_hooks.py``.
    """


@hookspec(historic=True)
def headwater_configure(session: Session) -> None:
    """Configure the plugin once the session has loaded every plugin.

    Called once per session at the first run (never at ``import headwater``). Historic:
    a plugin registered later is configured when it registers. Use it to read
    ``session.settings`` or to set up logging. Return value ignored. Allowed in
    ``headwater_hooks.py``.
    """


@hookspec
def headwater_unconfigure(session: Session) -> None:
    """Undo what ``headwater_configure`` did.

    Called once when the session closes (``Session.close()``, the end of a ``with
    Session()`` block, or interpreter exit), after the run store is flushed. All
    implementations are called; return value ignored.
    """


@hookspec
def headwater_register_components(registry: Registry) -> None:
    """Register named components: task runners, result stores, run stores, serializers.

    Called once per session, after configure. ``registry.add_task_runner("name", cls)``
    makes ``task_runner="name"`` work; ``add_run_store("scheme", factory)`` serves
    ``HEADWATER_DATABASE_URL`` of that scheme; ``add_result_store`` and
    ``add_serializer`` likewise. All implementations are called; return value ignored.
    """


@hookspec
def headwater_add_commands(cli: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``headwater`` command.

    Called only by the command-line tool, once, with the argparse subparsers object.
    Add a parser with ``cli.add_parser("name", help=...)`` and set ``func`` as its
    default: ``parser.set_defaults(func=callable)``; the callable receives the parsed
    namespace and returns an exit code. All implementations are called.
    """


@hookspec(firstresult=True)
def headwater_make_run_store(session: Session) -> RunStore | None:
    """Create the run store: where flow runs, task runs and states are recorded.

    Called once per session, on first use. Receives the session (``session.settings.
    database_url`` names the store). Return a :class:`headwater.stores.RunStore`.
    First result wins; the default picks a registered run store by the URL's scheme.
    """


@hookspec(firstresult=True)
def headwater_make_task_runner(flow: Flow, session: Session) -> TaskRunner | None:
    """Choose the task runner for one flow run.

    Called once per flow run, before the flow body starts. Return a
    :class:`headwater.task_runners.TaskRunner` instance. First result wins; the default
    resolves the flow's ``task_runner`` option, then ``HEADWATER_TASK_RUNNER``. Flow-scoped
    in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_make_result_store(flow: Flow, session: Session) -> ResultStore | None:
    """Choose where persisted results go for one flow run.

    Called once per flow run. Return a :class:`headwater.results.ResultStore`. First
    result wins; the default stores cloudpickle files under
    ``HEADWATER_LOCAL_STORAGE_PATH``. Flow-scoped in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_make_state_policy(task: Task, session: Session) -> StatePolicy | None:
    """Build the policy that decides a task's retries, cache hits and timeout.

    Called once per task per flow run (and once per call of a task outside a flow).
    Return a :class:`headwater.policy.StatePolicy`. First result wins. The default
    ``retries`` plugin returns the retry policy; the ``caching`` plugin wraps it
    (``wrapper=True``) with cache lookups when the task has a ``cache_key_fn``.
    Flow-scoped in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_flow_run_name(flow: Flow, parameters: dict[str, Any]) -> str | None:
    """Name a new flow run.

    Called once per flow run, with the bound parameters (defaults included), while
    ``headwater.runtime.flow_run`` already answers. Return the name. First result wins;
    the default formats ``flow_run_name`` or generates an ``adjective-animal`` slug.
    Flow-scoped in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_task_run_name(task: Task, parameters: dict[str, Any]) -> str | None:
    """Name a new task run.

    Called per task run (bound once per flow run), with the bound parameters, while
    ``headwater.runtime.task_run`` answers (``task_run.name`` is still empty). Return the
    name, or ``None`` for the default ``{task name}-{8 hex of the task key}-{counter}``.
    First result wins. Flow-scoped in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_task_cache_key(task: Task, context: Any, parameters: dict[str, Any]) -> str | None:
    """Compute a task run's cache key.

    Called per task run (bound) for tasks that have a ``cache_key_fn``, after the run is
    ``Pending``. ``context`` is the task run context (``context.task_run``, ``context.task``)
    and ``parameters`` the bound parameters. Return a string key, or ``None`` to run
    uncached. First result wins; the default calls the task's ``cache_key_fn``.
    Flow-scoped in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_flow_run_call(flow_run: FlowRun) -> Any:
    """Run the flow body. Meant for ``wrapper=True`` implementations.

    Called once per attempt of a flow run; the innermost (default) implementation calls
    ``flow_run.call_body()`` and returns the body's return value. A wrapper receives it
    from ``yield`` (or the exception) and returns it, so it can time, trace or hold a
    resource around the body. First result wins. Skipped (the body is called directly)
    when only the default implementation exists. Flow-scoped in ``headwater_hooks.py``.
    """


@hookspec(firstresult=True)
def headwater_task_run_call(task_run: TaskRun) -> Any:
    """Run the task body. Meant for ``wrapper=True`` implementations.

    Called per attempt of a task run (bound once per flow run); the innermost (default)
    implementation calls ``task_run.call_body()``. A wrapper gets the return value from
    ``yield`` and must return it. First result wins. Skipped when only the default exists,
    so tasks pay nothing for it. For ``async def`` tasks ``call_body()`` returns a
    coroutine: wrappers see the coroutine, not its value. Flow-scoped in
    ``headwater_hooks.py``.
    """


@hookspec
def headwater_state_changed(run: FlowRun | TaskRun, previous: State | None, state: State) -> None:
    """Observe a state transition of a flow run or task run.

    Called after every transition is recorded (bound once per flow run; skipped entirely
    when no plugin implements it). ``previous`` is ``None`` for the first state. All
    implementations are called; return value ignored. Exceptions propagate into the run,
    so keep it light. Flow-scoped in ``headwater_hooks.py``.
    """
