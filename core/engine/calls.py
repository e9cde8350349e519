"""How a task call starts task runs: ``task(...)`` runs one now, ``task.submit(...)``
hands one to the flow's task runner, ``task.map(...)`` submits one per element.

Futures among the arguments (also nested in lists, tuples, sets and dicts) and in
``wait_for`` are the run's upstream: it starts only when they are done, and ends
``NotReady`` instead of running when one of them did not complete, unless it was passed
inside ``allow_failure(...)``: then the run goes ahead with the upstream's exception in
its place. ``quote(x)`` passes ``x`` as it is (no futures looked for inside it).
Arguments holding neither pay nothing for either: ``upstream_of`` says so with ``None``.
"""

from __future__ import annotations

from threading import get_ident
from typing import TYPE_CHECKING, Any

from .. import states
from ..utilities.annotations import QUOTED_ARGUMENTS, allow_failure, quote, unmapped
from .context import FlowRunContext, flow_run_ctx, task_run_ctx
from .futures import (Future, FutureList, Work, collect_futures, in_event_loop, resolve_annotated, resolve_futures,
                      run_coroutine_function, strip_quotes, when_all_done)
from .task_creation import create_task_run, standalone_context
from .task_loop import TaskExecution, execute_async, execute_sync, finish_run, never_started

if TYPE_CHECKING:
    from ..tasks import Task


def call_task(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool,
              wait_for: Any) -> Any:
    """``task(...)``: run now, in this thread, and return the result (or state)."""
    flow_context = flow_run_ctx.get()
    if flow_context is None:
        flow_context = standalone_context(task)
    parameters = task.binder.bind(args, kwargs)
    upstream, tolerated = upstream_of(task, parameters, wait_for)
    execution = create_task_run(task, flow_context, parameters, upstream)
    try:
        not_ready = (wait_upstream(execution, upstream, tolerated)
                     if upstream or tolerated is not None else None)
        if not_ready is None:
            if task.is_async:
                return _call_async_task(execution, return_state)
            state = execute_sync(execution)
    except BaseException as exc:
        # An interrupt while waiting for upstream runs, or before the attempt loop began
        # (which ends its own runs): the run never started. Noted first without a call
        # (see task_loop._escaped): at the recursion limit the calls fail too.
        flow_context.unfinished.append((execution, exc, get_ident()))
        if not _cancelled(execution):
            never_started(execution, exc)
        raise
    if not_ready is not None:
        return not_ready if return_state else not_ready.result()
    if return_state:
        return state
    return state.result()


async def _async_result(execution: TaskExecution, return_state: bool) -> Any:
    state = await execute_async(execution)
    return state if return_state else state.result()


def _call_async_task(execution: TaskExecution, return_state: bool) -> Any:
    """An async task called: awaitable when its caller is async, else run to completion
    here (in a thread of its own if this thread's event loop is blocked by a sync body,
    as in a sync flow called from a notebook cell)."""
    if _caller_is_async():
        return _async_result(execution, return_state)
    return run_coroutine_function(lambda: _async_result(execution, return_state))


def _caller_is_async() -> bool:
    """Whether the body making the call can await: the task or flow run whose body runs
    here; outside any flow, whether an event loop runs in this thread."""
    caller = task_run_ctx.get()
    if caller is not None:
        return caller.task.is_async
    flow_context = flow_run_ctx.get()
    if flow_context is not None and flow_context.flow is not None:
        return flow_context.flow.is_async
    return in_event_loop()


def wait_upstream(execution: TaskExecution, upstream: list[Future],
                   tolerated: frozenset[Future] | None = None) -> states.State | None:
    """Wait for upstream futures; resolve them into the parameters, or end NotReady.

    ``tolerated`` (from :func:`upstream_of`): the upstream runs that may fail, or ``None``
    when no argument holds ``allow_failure`` or ``quote``."""
    for future in upstream:
        future.wait()
    if tolerated is None:
        failed = next((f for f in upstream if not f.state.is_completed()), None)
        if failed is not None:
            return not_ready(execution, failed)
        resolved = {k: resolve_futures(v) for k, v in execution.parameters.items()}
    else:
        failed = next((f for f in upstream if f not in tolerated and not f.state.is_completed()), None)
        if failed is not None:
            return not_ready(execution, failed)
        for future in tolerated:
            # This run takes the outcome as it is: a failure it was allowed is handled,
            # so it does not fail the flow run (also when only in wait_for).
            future.observed = True
        resolved = unwrap_arguments(execution)
    execution.context.parameters = resolved
    execution.task_run.parameters = resolved
    return None


def unwrap_arguments(execution: TaskExecution) -> dict[str, Any]:
    """The run's arguments as its function receives them: futures resolved (those inside
    ``allow_failure`` to their exception if they failed), ``quote`` wrappers removed.
    A run given a quoted argument keeps its arguments with the wrappers on its stash
    (``QUOTED_ARGUMENTS``), for ``task_input_hash`` to leave the quoted value unhashed."""
    quotes: list[Any] = []
    keyed = {k: resolve_annotated(v, quotes=quotes) for k, v in execution.parameters.items()}
    if not quotes:
        return keyed
    execution.task_run.stash[QUOTED_ARGUMENTS] = keyed
    return {k: strip_quotes(v) for k, v in keyed.items()}


def not_ready(execution: TaskExecution, failed: Future) -> states.State:
    """End the run ``NotReady`` because the upstream run of ``failed`` did not complete;
    return the run's last state. Task runners that settle runs themselves use it too.

    A run the crashing flow run ended meanwhile keeps that final state (check and set
    under the run's lock, as ``finish_run`` does)."""
    state = states.NotReady(message=f"Upstream task run {failed.task_run_name!r} did not reach a "
                               f"'COMPLETED' state ({failed.state}).")
    last = finish_run(execution.flow_context, execution.task_run, state)
    if last is state:
        execution.finish_logs(state)
    return last


def _flow_context_for(task: Task, method: str, advice: str) -> FlowRunContext:
    """The active flow run's context; ``.submit``/``.map`` outside a flow is an error."""
    flow_context = flow_run_ctx.get()
    if flow_context is None or flow_context.flow_run is None:
        raise RuntimeError(f"{task.name}.{method}() was called outside a flow. {advice}")
    return flow_context


def submit_task(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any) -> Future:
    """``task.submit(...)``: hand the run to the flow's task runner; return its future."""
    flow_context = _flow_context_for(task, "submit", "Submitting needs a flow run's task runner: call it "
                             f"inside a @flow function, or call the task directly: {task.name}(...)")
    parameters = task.binder.bind(args, kwargs)
    return _submit(task, flow_context, parameters, wait_for)


#: The upstream of most runs: shared, and a tuple so nothing can add to it (an empty
#: list kept per run in flight was one more object for the garbage collector to walk).
_NO_UPSTREAM: Any = ()


def upstream_of(task: Task, parameters: dict[str, Any],
                wait_for: Any) -> tuple[list[Future], frozenset[Future] | None]:
    """The futures a run depends on: those in its arguments (also nested in lists, tuples,
    sets and dicts) and those in ``wait_for`` (a future or an iterable of futures); and
    which of them may fail (passed only inside ``allow_failure``), or ``None`` when no
    argument holds ``allow_failure`` or ``quote`` (the arguments need no unwrapping)."""
    upstream: list[Future] = []
    annotated: list[Any] = []
    for name, value in parameters.items():
        if type(value) is unmapped:  # meaningful to .map() only; elsewhere the value itself
            value = parameters[name] = value.value
        collect_futures(value, upstream, 0, annotated)
    if wait_for is not None:
        if isinstance(wait_for, (Future, allow_failure)):
            wait_for = [wait_for]
        elif isinstance(wait_for, (str, bytes, dict)) or not hasattr(wait_for, "__iter__"):
            raise TypeError(f"{task.name}: wait_for={wait_for!r} must be a list of futures "
                            f"(from .submit() or .map())")
        else:
            wait_for = list(wait_for)  # read again by _tolerated: a generator reads once
        for item in wait_for:
            if type(item) is allow_failure:
                found_allowed: list[Future] = []
                collect_futures(item.value, found_allowed)
                if not found_allowed:
                    raise TypeError(f"{task.name}: wait_for got {_short(item)}, which holds no future; "
                                    f"wrap the futures returned by .submit() or .map()")
                upstream.extend(found_allowed)
                annotated.append(item)
                continue
            if isinstance(item, (list, tuple)):  # e.g. the list a .map() returned
                found: list[Future] = []
                collect_futures(item, found)
                if len(found) == len(item):
                    upstream.extend(found)
                    continue
            if not isinstance(item, Future):
                raise TypeError(f"{task.name}: wait_for got {_short(item)}, which is not a future; "
                                f"wait_for takes futures returned by .submit() or .map()")
            upstream.append(item)
    if len(upstream) > 1:
        upstream = list(dict.fromkeys(upstream))  # one dependency per future, in order
    if not annotated:
        return upstream or _NO_UPSTREAM, None
    return upstream or _NO_UPSTREAM, _tolerated(parameters.values(), wait_for)


def _tolerated(arguments: Any, wait_for: Any) -> frozenset[Future]:
    """The futures found only inside ``allow_failure(...)`` among ``arguments`` and the
    items of ``wait_for``: a future also passed bare must complete."""
    required: list[Future] = []
    allowed: list[Future] = []
    for value in arguments:
        _split_futures(value, required, allowed)
    for item in wait_for or ():
        _split_futures(item, required, allowed)
    return frozenset(allowed).difference(required)


def _split_futures(value: Any, required: list[Future], allowed: list[Future], depth: int = 0) -> None:
    if isinstance(value, Future):
        required.append(value)
    elif depth < 16:
        cls = type(value)
        if cls in (list, tuple, set, frozenset):
            for item in value:
                _split_futures(item, required, allowed, depth + 1)
        elif cls is dict:
            for item in value.values():
                _split_futures(item, required, allowed, depth + 1)
        elif cls is allow_failure:
            collect_futures(value.value, allowed, depth + 1)


def _not_to_run(work: Work) -> states.State | None:
    """The state a submitted run ends in without running: the flow ended it already, or
    an upstream run did not complete (``NotReady``). ``None``: run it."""
    execution = work.execution
    if _cancelled(execution):
        return execution.task_run.state
    if work.upstream or work.tolerated is not None:
        return wait_upstream(execution, work.upstream, work.tolerated)
    return None


def _submit(task: Task, flow_context: FlowRunContext, parameters: dict[str, Any], wait_for: Any) -> Future:
    upstream, tolerated = upstream_of(task, parameters, wait_for)
    execution = create_task_run(task, flow_context, parameters, upstream)
    try:
        future = Future(execution.task_run, flow_context)
        if task.is_async:
            work = Work(future, execution, None, _run_submitted_async, upstream, tolerated)
        else:
            work = Work(future, execution, _run_submitted_sync, None, upstream, tolerated)
        future.work = work
        flow_context.track(future)  # told when the future finishes: it is the future's owner
    except BaseException as exc:  # interrupted before the flow run could see the run
        flow_context.unfinished.append((execution, exc, get_ident()))
        never_started(execution, exc)
        raise
    if flow_context.crashed:
        # The flow run crashed meanwhile (this is a task's thread): it may have ended
        # its runs before this one was tracked, so end it here; nothing runs it now.
        future.set_state(finish_run(flow_context, execution.task_run, states.Cancelled(
            message="The flow run crashed before this task run started.")))
        return future
    runner = flow_context.task_runner
    pending = [f for f in upstream if not f.done()] if upstream else upstream
    if not pending or runner.handles_dependencies:
        work.ready = True
        try:
            _hand_to_runner(runner, work, execution)
        except BaseException:
            future.observed = True  # raised to the caller: not a silent failure
            raise
    else:
        _submit_when_done(runner, work, pending, execution)
    return future


def _run_submitted_sync(work: Work) -> states.State:
    """A submitted sync run, in whichever thread runs it; its final state."""
    execution = work.execution
    token = _enter_flow_run(execution.flow_context)
    try:
        early = _not_to_run(work)
        return early if early is not None else execute_sync(execution)
    except BaseException as exc:
        return _escaped_submitted(work, exc)
    finally:
        if token is not None:
            flow_run_ctx.reset(token)


async def _run_submitted_async(work: Work) -> states.State:
    """A submitted async run, on the event loop that runs it; its final state."""
    execution = work.execution
    token = _enter_flow_run(execution.flow_context)
    try:
        early = _not_to_run(work)
        return early if early is not None else await execute_async(execution)
    except BaseException as exc:
        return _escaped_submitted(work, exc)
    finally:
        if token is not None:
            flow_run_ctx.reset(token)


def _enter_flow_run(flow_context: FlowRunContext) -> Any:
    """Make the run's flow run the active one, if it is not: a runner may run work in a
    thread that did not copy the submitting context (docs/task-runners.md, "Writing a
    task runner"), and the task must still submit to its flow's runner and read
    ``headwater.runtime.flow_run``. The token to reset, or None."""
    if flow_run_ctx.get() is flow_context:
        return None
    return flow_run_ctx.set(flow_context)


def _escaped_submitted(work: Work, exc: BaseException) -> states.State:
    """In a worker an interrupt or an engine error must still end the run, never leave
    it Running or its future unfinished: the run's final state for an error; an
    interrupt (in the thread that runs the flow: the sequential runner, or a waiter
    running the work itself; or a cancelled event loop) ends the future, then is raised
    again, so it still stops the flow."""
    state = work.execution.crash(exc)
    if isinstance(exc, Exception):
        return state
    work.future.set_state(state)
    raise exc


def _cancelled(execution: TaskExecution) -> bool:
    """True when the flow run ended this run (Cancelled) before a worker started it."""
    state = execution.task_run.state
    return state is not None and state.is_final()


def _hand_to_runner(runner: Any, work: Work, execution: TaskExecution) -> None:
    """``runner.submit(work)``; if the runner itself fails, the run ends Crashed (so the
    flow never waits for it forever) and the error propagates."""
    try:
        runner.submit(work)
    except BaseException as exc:
        if not work.future.done():
            work.future.set_state(execution.crash(exc))
        raise


def _submit_when_done(runner: Any, work: Work, pending: list[Future], execution: TaskExecution) -> None:
    def hand_over() -> None:
        work.ready = True
        try:
            _hand_to_runner(runner, work, execution)
        except Exception:
            pass  # recorded as Crashed on the run; the thread finishing upstream goes on

    when_all_done(pending, hand_over)


def map_task(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any) -> FutureList:
    """``task.map(...)``: one submitted run per element of the iterable arguments.

    Every argument passed that is iterable (a list, tuple, range, set, generator, ... but
    not a str, bytes or dict) is mapped over; several are zipped and must have the same
    length. ``unmapped(x)``, other values and parameters left at their default are passed
    whole to every run. A future is mapped over its result, and every run depends on it.
    ``allow_failure(...)`` or ``quote(...)`` around an argument applies to each run's
    item (around ``unmapped(x)``, to ``x`` in every run).
    """
    flow_context = _flow_context_for(task, "map", "Mapping submits to a flow run's task runner: call it "
                             "inside a @flow function")
    parameters = task.binder.bind(args, kwargs)
    # Only arguments the caller passed are mapped: a default that happens to be a list
    # is a constant. *args / **kwargs parameters are passed whole.
    passed = set(task.binder.signature.bind_partial(*args, **kwargs).arguments)
    whole = {task.binder.var_positional, task.binder.var_keyword}
    iterables: dict[str, list[Any]] = {}
    constants: dict[str, Any] = {}
    mapped_futures: list[Future] = []
    rewrap: dict[str, type] = {}  # allow_failure / quote around an argument: kept per run
    for name, value in parameters.items():
        if type(value) is allow_failure or type(value) is quote:
            rewrap[name] = type(value)
            value = value.value
        if isinstance(value, unmapped):
            constants[name] = value.value
        elif name not in passed or name in whole:
            constants[name] = value
        elif isinstance(value, Future):
            resolved = value.result()  # raises the upstream's own error if it failed
            if not _is_mappable(resolved):
                raise TypeError(f"{task.name}.map(): argument {name!r} is a future whose result "
                                f"{_short(resolved)} is not iterable; wrap it in unmapped(...) to "
                                f"pass it whole to every run")
            iterables[name] = list(resolved)
            mapped_futures.append(value)
        elif _is_mappable(value):
            iterables[name] = list(value)
        else:
            constants[name] = value
    if not iterables:
        raise TypeError(f"{task.name}.map() needs at least one iterable argument to map over, got "
                        f"{', '.join(f'{n}={_short(v)}' for n, v in parameters.items()) or 'none'}; "
                        f"pass a list for the values to map over and wrap constants in unmapped(...)")
    lengths = {name: len(items) for name, items in iterables.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{n}={length}" for n, length in lengths.items())
        raise ValueError(f"{task.name}.map() got iterables of different lengths ({described}); "
                         f"every mapped argument needs one item per run: wrap constants in "
                         f"unmapped(...)")
    count = next(iter(lengths.values()))
    if mapped_futures:
        # Each run depends on the future it was mapped from, as if passed directly.
        wait_for = [*(wait_for or ()), *mapped_futures]
    futures = FutureList()
    for i in range(count):
        call = dict(constants)
        for name, items in iterables.items():
            call[name] = items[i]
        for name, annotation in rewrap.items():
            call[name] = annotation(call[name])
        ordered = {n: call[n] for n in parameters}
        futures.append(_submit(task, flow_context, ordered, wait_for))
    return futures


def _is_mappable(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, dict)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


