"""Every hook headwater calls: when, with what, what its return value means.

This module is the plugin reference; ``docs/hooks.md`` is generated from it.

A plugin is any module or object with functions named ``headwater_*``; mark them with
``@headwater.hookimpl`` to pass options (``tryfirst``, ``trylast``, ``wrapper``). In a
``headwater_hooks.py`` file the marker is optional. A ``headwater_*`` name that is not a
hook below (nor added by ``headwater_addhooks``) is an error naming the plugin's file.

Kinds used below:

* **historic**: a plugin registered late still receives the call, once.
* **firstresult**: implementations are called newest first and the first one that
  returns something other than ``None`` wins; the rest are not called.
* **all**: every implementation is called; the results are collected in a list.
* **bound**: resolved once per flow run (DESIGN §4.4). With no implementation the engine
  skips the call; with only the default implementation it calls that function directly.

Scope: session-level hooks (configure, unconfigure, components) in a
``headwater_hooks.py`` file apply to the whole process from the moment the file loads.
Flow- and task-level hooks in such a file apply only to flows defined in the file's
directory or below it. ``headwater_make_run_store`` and ``headwater_add_commands`` are
not read from such files.
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
    "headwater_make_flow_state_policy",
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

    Called once for each plugin as it registers, before any other hook of that plugin
    is checked or called, with ``pluginmanager``: the session's plugin manager. Call
    ``pluginmanager.add_hookspecs(module_or_class)``; the new ``headwater_*`` names then
    count as known hooks for this plugin and every plugin after it.

    Kind: historic (a plugin registered later still receives the call). All
    implementations are called; the return value is ignored.

    In ``headwater_hooks.py``: allowed; the hooks it adds are known from the moment the
    file loads.
    """


@hookspec(historic=True)
def headwater_configure(session: Session) -> None:
    """Configure the plugin once the session has loaded every plugin.

    Called once per session, at the first run (never at ``import headwater``), with
    ``session``: read ``session.settings``, set up logging, open connections.

    Kind: historic (a plugin registered later, such as a ``headwater_hooks.py`` file, is
    configured the moment it registers, and only once). All implementations are
    called; the return value is ignored.

    In ``headwater_hooks.py``: allowed; called when the file loads, that is at the first
    run of a flow defined at or below its directory.
    """


@hookspec
def headwater_unconfigure(session: Session) -> None:
    """Undo what ``headwater_configure`` did.

    Called once when the session closes (``Session.close()``, the end of a ``with
    Session()`` block, or interpreter exit), after the run store is flushed, with
    ``session``.

    Kind: all implementations are called; the return value is ignored.

    In ``headwater_hooks.py``: allowed.
    """


@hookspec
def headwater_register_components(registry: Registry) -> None:
    """Register named components: task runners, result stores, run stores, serializers, cache policies.

    Called once per session after ``headwater_configure`` (and again when a
    ``headwater_hooks.py`` file loads), with ``registry``, a
    :class:`headwater.registry.Registry`. ``registry.add_task_runner("name", cls)``
    makes ``task_runner="name"`` work; ``add_run_store("scheme", factory)`` serves
    ``HEADWATER_DATABASE_URL`` of that scheme; ``add_result_store``, ``add_serializer``
    and ``add_cache_policy`` likewise. Each entry records the plugin that added it.

    Kind: all implementations are called, oldest plugin first, so a later plugin
    registering the same name replaces the earlier entry. The return value is ignored.

    In ``headwater_hooks.py``: allowed; the components exist from the moment the file
    loads.
    """


@hookspec
def headwater_add_commands(cli: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``headwater`` command.

    Called only by the command-line tool, once, before the arguments are parsed, with
    ``cli``: the argparse subparsers object. Add a parser with
    ``cli.add_parser("name", help=...)`` and set the callable it runs:
    ``parser.set_defaults(func=callable)``; the callable receives the parsed namespace
    and returns an exit code.

    Kind: all implementations are called; the return value is ignored.

    In ``headwater_hooks.py``: not used (the command line parses its arguments before any
    hook file is loaded); ship commands in an entry-point package or a module named in
    ``HEADWATER_PLUGINS``.
    """


@hookspec(firstresult=True)
def headwater_make_run_store(session: Session) -> RunStore | None:
    """Create the run store: where flow runs, task runs and states are recorded.

    Called once per session, the first time the store is needed, with ``session``
    (``session.settings.database_url`` names the store). Return a
    :class:`headwater.stores.RunStore`, or ``None`` to leave the choice to the next
    plugin.

    Kind: first result wins. The default (``sqlite_store``, ``trylast``) looks up a
    run store registered for the URL's scheme.

    In ``headwater_hooks.py``: not supported (the store may exist before the file loads);
    use an entry-point package or ``HEADWATER_PLUGINS``.
    """


@hookspec(firstresult=True)
def headwater_make_task_runner(flow: Flow, session: Session) -> TaskRunner | None:
    """Choose the task runner for one flow run.

    Called once per flow run, before the flow body starts, with ``flow`` (the
    :class:`~headwater.flows.Flow`; ``flow.task_runner`` is its option) and ``session``.
    Return a :class:`headwater.task_runners.TaskRunner` instance, or ``None`` to leave the
    choice to the next plugin.

    Kind: first result wins. The default resolves the flow's ``task_runner`` option,
    then ``HEADWATER_TASK_RUNNER``, by name through the registry.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_make_result_store(flow: Flow, session: Session) -> ResultStore | None:
    """Choose where persisted results go for one flow run.

    Called at most once per flow run, the first time a result is persisted or read,
    with ``flow`` and ``session``. Return a :class:`headwater.results.ResultStore`, or ``None`` to leave
    the choice to the next plugin.

    Kind: first result wins. The default (``local_results``) stores cloudpickle files
    under ``HEADWATER_LOCAL_STORAGE_PATH``.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_make_state_policy(task: Task, session: Session) -> StatePolicy | None:
    """Build the policy that decides a task's retries, cache hits and timeout.

    Called once per task per flow run (and once per call of a task outside a flow), with
    ``task`` (the :class:`~headwater.tasks.Task`; its options read as attributes) and
    ``session``. Return a :class:`headwater.policy.StatePolicy`, or ``None`` to leave the
    choice to the next plugin.

    Kind: first result wins. The default ``retries`` plugin returns the retry policy;
    the ``caching`` plugin wraps it (``wrapper=True``) with cache lookups when the task
    has a ``cache_key_fn``, a ``cache_policy`` or a ``result_storage_key``, and
    ``local_results`` wraps it to name the result key of a task with ``persist_result``.
    In a retried flow run (``headwater runs retry``) the engine wraps the answer once
    more, so that earlier task runs answer first (``headwater.reuse``). Return a subclass of ``StatePolicy`` (one with only
    some of its methods gets the do-nothing answer for the others).

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_make_flow_state_policy(flow: Flow, session: Session) -> StatePolicy | None:
    """Build the policy that decides whether a failed flow run is retried.

    Called at most once per flow run, at its first failed attempt (a run that never
    fails never asks), with ``flow`` (the :class:`~headwater.flows.Flow`; its options
    on ``flow.spec``) and ``session``. Return a :class:`headwater.policy.StatePolicy`
    (only its ``propose_failed`` is asked, with a
    :class:`headwater.policy.FlowRunAttempts` as ``ctx``), or ``None`` to leave the
    choice to the next plugin. With no policy at all, a failed flow run is not retried.

    Kind: first result wins. The default ``retries`` plugin returns the retry policy of
    the flow's ``retries`` and ``retry_delay_seconds``.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_flow_run_name(flow: Flow, parameters: dict[str, Any]) -> str | None:
    """Name a new flow run.

    Called once per flow run, with ``flow`` and ``parameters`` (the bound parameters,
    defaults included), while ``headwater.runtime.flow_run`` already answers. Return the
    name, or ``None`` to leave it to the next plugin.

    Kind: first result wins. The default (``run_naming``, ``trylast``) formats the
    flow's ``flow_run_name`` or generates an ``adjective-animal`` slug. With no answer at
    all (``run_naming`` disabled), or when naming raised, the run is named by its id.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_task_run_name(task: Task, parameters: dict[str, Any], index: int | str) -> str | None:
    """Name a new task run.

    Called per task run (bound once per flow run), with ``task``, ``parameters`` (the
    bound parameters) and ``index`` (how many runs of this task, by its task key, the
    flow run created before this one: 0, 1, ...; text such as ``"3f2a9c1d.0"`` for a run
    a task starts inside a run on an out-of-process runner), while
    ``headwater.runtime.task_run`` answers (``task_run.name`` is still empty). Return the
    name, or ``None`` to leave it to the next plugin.

    Kind: first result wins. The default (``run_naming``, ``trylast``) formats the task's
    ``task_run_name`` when it has one, else answers
    ``{task name}-{8 hex of the task key}-{index}``. With no answer at all (``run_naming``
    disabled), the run is named by its id.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_task_cache_key(task: Task, context: Any, parameters: dict[str, Any]) -> str | None:
    """Compute a task run's cache key.

    Called per task run (bound) for tasks whose policy uses a cache (a ``cache_key_fn``,
    a ``cache_policy`` or a ``result_storage_key``; every task of a retried flow run),
    after the run is ``Pending``, with ``task``, ``context`` (the task run context:
    ``context.task_run``, ``context.task``) and ``parameters`` (the bound parameters).
    Return a string key, or ``None`` to run uncached.

    Kind: first result wins. The default (``caching``) calls the task's
    ``cache_key_fn(context, parameters)``, else asks its ``cache_policy``, else formats
    its ``result_storage_key``; a task with none of them gets ``None``.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_flow_run_call(flow_run: FlowRun) -> Any:
    """Run the flow body. Meant for ``wrapper=True`` implementations.

    Called once per attempt of a flow run, with ``flow_run`` (the
    :class:`~headwater.runs.FlowRun`). The innermost (default) implementation calls
    ``flow_run.call_body()`` and returns the body's return value. A wrapper receives
    that value from ``yield`` (or the exception raised there) and returns it, so it can
    time, trace or hold a resource around the body.

    Kind: first result wins. Skipped entirely (the body is called directly) when only the
    default implementation exists.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec(firstresult=True)
def headwater_task_run_call(task_run: TaskRun) -> Any:
    """Run the task body. Meant for ``wrapper=True`` implementations.

    Called per attempt of a task run (bound once per flow run), with ``task_run`` (the
    :class:`~headwater.runs.TaskRun`). The innermost (default) implementation calls
    ``task_run.call_body()``. A wrapper gets the return value from ``yield`` and must
    return it. For ``async def`` tasks ``call_body()`` returns a coroutine: wrappers see
    the coroutine, not its value.

    Kind: first result wins. Skipped when only the default implementation exists, so
    tasks pay nothing for it.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """


@hookspec
def headwater_state_changed(run: FlowRun | TaskRun, previous: State | None, state: State) -> None:
    """Observe a state transition of a flow run or task run.

    Called after every transition is recorded (bound once per flow run; skipped entirely
    when no plugin implements it), with ``run`` (a ``FlowRun`` or ``TaskRun``),
    ``previous`` (its state before, ``None`` for the first state) and ``state`` (the new
    :class:`~headwater.states.State`). Exceptions propagate into the run, so keep it
    light.

    Kind: all implementations are called; the return value is ignored.

    In ``headwater_hooks.py``: allowed; applies to flows defined at or below the file's
    directory.
    """
