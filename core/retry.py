"""Retrying a flow run from where it failed: ``headwater.retry_run(run)`` and
``headwater runs retry RUN``.

A retry is a new attempt of the same flow run: the same id and name, ``run_count`` one
more, its state history going on (``AwaitingRetry``, then ``Retrying``), the same
parameters, and the flow loaded from where it was defined (its :class:`EntryPoint`,
recorded with every flow run). Task calls that match a task run that completed in an
earlier attempt end ``Cached`` with its persisted result (``headwater.reuse``).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import states
from .engine import flow_loop
from .engine.context import FlowRunContext
from .errors import RetryError
from .flows import Flow
from .results import ResultMissing, read_result
from .reuse import inputs_hash
from .session import Session

if TYPE_CHECKING:
    from .runs import FlowRun
    from .stores import RunStore

__all__ = ["EntryPoint", "RetryError", "load_flow", "read_entry_point", "retry_run", "retry_run_async"]

#: The final states a retry starts from without ``force``.
RETRIABLE = ("FAILED", "CRASHED", "CANCELLED")


@dataclass(frozen=True)
class EntryPoint:
    """Where a flow is defined: its module (``__main__`` for a script), the function's
    qualified name, the file, the flow's name, and the directory the run started in."""

    module: str
    qualname: str
    file: str | None
    flow_name: str
    cwd: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EntryPoint:
        data = json.loads(text)
        return cls(data["module"], data["qualname"], data.get("file"), data["flow_name"], data.get("cwd"))

    def __str__(self) -> str:
        return f"{self.file or self.module}:{self.qualname}"


def read_entry_point(run: FlowRun) -> EntryPoint:
    """The recorded entry point of ``run``; a :class:`RetryError` when there is none."""
    if not run.entry_point:
        raise RetryError(f"flow run {run.name!r} cannot be retried: no entry point was recorded for flow "
                         f"{run.flow_name!r} (it was defined inside a function or at an interactive prompt, "
                         f"or run by a headwater older than 0.2); pass the flow itself: "
                         f"headwater.retry_run({run.id!r}, flow=my_flow)")
    data = json.loads(run.entry_point)
    return EntryPoint(data["module"], data["qualname"], data.get("file"), data["flow_name"], data.get("run_cwd"))


def load_flow(entry: EntryPoint) -> Flow:
    """The flow at ``entry``: its module imported (a script loaded from its file, so its
    ``if __name__ == "__main__":`` block does not run), then the flow found by its
    function's name, or by the flow's name. A :class:`RetryError` says what failed."""
    module = _load_module(entry)
    found: Any = module
    for part in entry.qualname.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, Flow) and found.name == entry.flow_name):
        named = [v for v in vars(module).values() if isinstance(v, Flow) and v.name == entry.flow_name]
        if not named:
            flows = sorted({v.name for v in vars(module).values() if isinstance(v, Flow)})
            raise RetryError(f"{entry} has no flow {entry.flow_name!r} any more (flows there: "
                             f"{', '.join(repr(n) for n in flows) or 'none'})")
        found = named[0]
    return found


def _load_module(entry: EntryPoint) -> Any:
    if entry.cwd and os.path.isdir(entry.cwd) and entry.cwd not in sys.path:
        # `python -m pkg.flows` and `python -c ...` put the directory they start in first
        # on the path: the run's own packages import from there.
        sys.path.insert(0, entry.cwd)
    flow_loop.loading_for_retry = entry.file or entry.module
    try:
        return _find_module(entry)
    finally:
        flow_loop.loading_for_retry = None


def _find_module(entry: EntryPoint) -> Any:
    if entry.module != "__main__" and entry.file is None:
        return _import(entry.module, entry)
    if entry.module != "__main__":
        loaded = sys.modules.get(entry.module)
        if loaded is None:
            try:
                spec = importlib.util.find_spec(entry.module)
            except (ImportError, ValueError):
                spec = None
            origin = getattr(spec, "origin", None)
            if origin and entry.file and _same_file(origin, entry.file):
                return _import(entry.module, entry)
        elif entry.file and _same_file(getattr(loaded, "__file__", "") or "", entry.file):
            return loaded
    assert entry.file is not None
    path = Path(entry.file)
    if not path.is_file():
        raise RetryError(f"cannot load flow {entry.flow_name!r}: its file {entry.file} no longer exists "
                         f"(recorded entry point {entry}); if it moved, pass the flow itself: "
                         f"headwater.retry_run(run, flow=my_flow)")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise RetryError(f"cannot load flow {entry.flow_name!r} from {entry.file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as `python file.py` would: its neighbours import
    try:
        spec.loader.exec_module(module)
    except RetryError:
        raise
    except Exception as exc:
        raise RetryError(f"cannot load flow {entry.flow_name!r} from {entry.file}: "
                         f"{type(exc).__name__}: {exc}") from exc
    return module


def _import(name: str, entry: EntryPoint) -> Any:
    try:
        return importlib.import_module(name)
    except RetryError:
        raise
    except Exception as exc:
        raise RetryError(f"cannot import module {name!r} of flow {entry.flow_name!r} (recorded entry point "
                         f"{entry}): {type(exc).__name__}: {exc}") from exc


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- the retry ---------------------------------------------------------------------------------


def find_run(store: RunStore, run: str) -> FlowRun:
    """The flow run ``run`` names (an id, an id prefix of 6 or more characters, or a
    name: the newest run of that name); a :class:`RetryError` when there is none."""
    if not isinstance(run, str) or not run.strip():
        raise RetryError(f"expected a flow run id, id prefix or name, got {run!r}")
    found = store.read_flow_run(run)
    if found is None:
        hint = "; an id prefix needs at least 6 characters" if len(run) < 6 else ""
        raise RetryError(f"no flow run {run!r} in the run store{hint} (`headwater runs` lists them)")
    return found


def check_retriable(run: FlowRun, force: bool) -> None:
    """Refuse a run that is still running, or completed without ``force``."""
    state = run.state
    kind = state.type.value if state is not None else None
    if kind in RETRIABLE:
        return
    if kind == "COMPLETED":
        if force:
            return
        raise RetryError(f"flow run {run.name!r} completed ({state.name}); there is nothing to retry "
                         f"(--force, or force=True, runs it again, reusing what it can)")
    shown = state.name if state is not None else "no state"
    raise RetryError(f"flow run {run.name!r} is {shown}, not failed: only a Failed, Crashed or Cancelled "
                     f"flow run can be retried (a running one once it has ended)")


def retry_parameters(flow: Flow, run: FlowRun, result_store: Any) -> dict[str, Any]:
    """The run's parameters, exactly as it was called with: read back from the result
    store when they were persisted, else from the record when that reads back to the same
    values (checked against the hash recorded with the run)."""
    unreadable = None
    if run.parameters_location:
        try:
            return dict(read_result(result_store, run.parameters_location, None))
        except ResultMissing as exc:  # the record may still be exact (checked below)
            unreadable = f"; its persisted parameters cannot be read either ({exc})"
    parameters = dict(run.parameters)
    if flow.spec.validate_parameters:
        try:
            parameters = flow.validator.validate(parameters)
        except Exception as exc:
            raise RetryError(f"cannot retry flow run {run.name!r}: its recorded parameters no longer fit "
                             f"flow {flow.name!r}: {exc}") from None
    if run.inputs_hash is None or inputs_hash(parameters) != run.inputs_hash:
        names = ", ".join(repr(name) for name in parameters) or "none"
        raise RetryError(f"cannot retry flow run {run.name!r}: its parameters ({names}) were not recorded "
                         f"exactly: the run store keeps them as JSON, where tuples, sets, dates and other "
                         f"objects come back as other types" + (unreadable or "; persist results "
                         f"(@flow(persist_result=True) or HEADWATER_PERSIST_RESULTS=true) so runs keep them"))
    return parameters


def prepare(run: str, flow: Flow | None = None, force: bool = False) -> tuple[Flow, FlowRun, dict[str, Any]]:
    """Everything a retry needs, checked before anything runs: the flow (loaded from
    the run's entry point unless given), the run, and its parameters."""
    session = Session.current()
    store = session.store
    found = find_run(store, run)
    if found.parent_flow_run_id is not None:
        parent = store.read_flow_run(found.parent_flow_run_id)
        name = parent.name if parent is not None else found.parent_flow_run_id
        done = parent is not None and parent.state is not None and parent.state.is_completed()
        raise RetryError(f"flow run {found.name!r} is a subflow run of {name!r}: retry that one (its "
                         f"failed subflow runs are retried with it" + (", with --force or force=True, as it "
                         f"completed)" if done else ")"))
    check_retriable(found, force)
    if flow is None:
        flow = load_flow(read_entry_point(found))
    elif flow.name != found.flow_name:
        raise RetryError(f"flow run {found.name!r} is a run of flow {found.flow_name!r}, not of "
                         f"{flow.name!r}")
    context = FlowRunContext(flow, found, session, session.bindings_for(flow.source_dir))
    parameters = retry_parameters(flow, found, context.result_store if found.parameters_location else None)
    check_signature(flow, found, parameters)
    return flow, found, parameters


def check_signature(flow: Flow, run: FlowRun, parameters: dict[str, Any]) -> None:
    """Refuse parameters the flow, as it is defined now, cannot take (a parameter
    renamed or added since the run), before anything runs."""
    binder = flow.binder
    extras = (binder.var_positional, binder.var_keyword)
    if binder.var_keyword is None:
        unknown = [name for name in parameters if name not in binder.names]
        if unknown:
            raise RetryError(f"cannot retry flow run {run.name!r}: flow {flow.name!r} has no parameter "
                             f"{unknown[0]!r} any more (the run was called with {unknown[0]}="
                             f"{parameters[unknown[0]]!r}; its parameters now: {', '.join(binder.names) or 'none'})")
    missing = [name for name in binder.names
               if name not in parameters and name not in binder.defaults and name not in extras]
    if missing:
        raise RetryError(f"cannot retry flow run {run.name!r}: flow {flow.name!r} now needs parameter "
                         f"{missing[0]!r}, which the run was not called with")


def retry_run(run: str, *, force: bool = False, flow: Flow | None = None) -> states.State:
    """Run a Failed, Crashed or Cancelled flow run again from where it failed, and return
    its final state.

    ``run`` is a run id, an id prefix or a run name (the newest run of that name). The
    flow is loaded from where it was defined, as recorded, unless ``flow`` gives it (a
    flow defined inside a function or a notebook cell, which cannot be loaded again).
    Task runs that completed in an earlier attempt with a persisted result are reused,
    not run. A Completed run is refused unless ``force``. Raises :class:`RetryError`
    (before anything runs) when the run cannot be retried. An async flow is run to its
    end here, in an event loop of its own."""
    flow, found, parameters = prepare(run, flow=flow, force=force)
    return run_again(flow, found, parameters)


async def retry_run_async(run: str, *, force: bool = False, flow: Flow | None = None) -> states.State:
    """:func:`retry_run` for code already in an event loop (``await``): an async flow
    runs on this loop, a sync one in a worker thread."""
    import anyio  # import time: only retries need it

    flow, found, parameters = prepare(run, flow=flow, force=force)
    if flow.is_async:
        return await flow_loop.resume_flow_async(flow, found, parameters)
    return await anyio.to_thread.run_sync(flow_loop.resume_flow, flow, found, parameters)


def run_again(flow: Flow, found: FlowRun, parameters: dict[str, Any]) -> Any:
    """Run the new attempt of ``found`` (checked by :func:`prepare`) to its end; its final state."""
    if flow.is_async:
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RetryError(f"flow {flow.name!r} is async and this thread runs an event loop already: "
                             f"await headwater.retry_run_async({found.id!r}) instead")
        import anyio

        async def main() -> states.State:
            return await flow_loop.resume_flow_async(flow, found, parameters)

        return anyio.run(main)
    return flow_loop.resume_flow(flow, found, parameters)

