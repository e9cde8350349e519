"""DaskTaskRunner: run a flow's submitted task runs on a Dask cluster.

The flow process stays the only writer of the run store. For each submitted run it
answers cache hits itself, then sends the task (pickled once per flow run) and the run
to Dask; the worker runs the attempt loop (retries, timeouts) and sends back one
package, which the flow process records (``headwater.remote``). Futures in arguments
become Dask dependencies, so Dask orders the work and moves the data.

A run given ``allow_failure(...)`` or ``quote(...)`` is the exception: it waits in the flow
process for its upstream runs and leaves with plain values (see ``_dispatch_unwrapped``).
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import sys
import threading
from typing import Any, Callable

from headwater import states
from headwater.errors import ConfigurationError, HeadwaterError
from headwater.main_guard import check_main_guard
from headwater.remote import (
    FlowRunContext,
    Future,
    NotPicklable,
    TaskExecution,
    UpstreamRef,
    Work,
    check_cache,
    detach,
    finish_run,
    flow_facts,
    not_ready,
    record_outcome,
    replace_futures,
    resolve_arguments,
    transition,
    when_all_done,
)
from headwater.run_logging import flow_extra, flow_logger, task_extra, task_logger
from headwater.task_runners import TaskRunner

__all__ = ["DaskTaskRunner", "DaskRunnerError"]

#: Read when ``address`` is not given, so ``HEADWATER_TASK_RUNNER=dask`` can use a cluster.
ADDRESS_ENV = "HEADWATER_DASK_ADDRESS"


class DaskRunnerError(HeadwaterError):
    """The Dask cluster could not be started, reached or used."""


def _check_mapping(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigurationError(f"DaskTaskRunner({name}={value!r}): expected a dict of keyword "
                                 f"arguments, e.g. {name}={{'n_workers': 2}}")
    return dict(value)


class DaskTaskRunner(TaskRunner):
    """Runs submitted task runs on Dask.

    ``address``: a running scheduler (``"tcp://10.0.0.5:8786"``); the runner connects
    and never shuts that cluster down. Without it (and without ``HEADWATER_DASK_ADDRESS``)
    the runner starts ``cluster_class(**cluster_kwargs)`` (default
    ``distributed.LocalCluster``; a class or a ``"module.Class"`` string) for the flow
    run, adapts it with ``adapt_kwargs`` if given, and closes it when the flow run ends.
    ``client_kwargs`` go to ``distributed.Client``.
    """

    handles_dependencies = True

    def __init__(self, address: str | None = None, cluster_class: Any = None,
                 cluster_kwargs: dict[str, Any] | None = None, adapt_kwargs: dict[str, Any] | None = None,
                 client_kwargs: dict[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ConfigurationError(f"DaskTaskRunner(address={address!r}): expected a scheduler "
                                     f"address such as 'tcp://127.0.0.1:8786'")
        if cluster_class is not None and not (isinstance(cluster_class, str) or callable(cluster_class)):
            raise ConfigurationError(f"DaskTaskRunner(cluster_class={cluster_class!r}): expected a "
                                     f"cluster class or its dotted name, e.g. 'distributed.LocalCluster'")
        if address is not None and (cluster_class is not None or cluster_kwargs or adapt_kwargs):
            raise ConfigurationError(
                f"DaskTaskRunner(address={address!r}) connects to an existing cluster; "
                f"cluster_class, cluster_kwargs and adapt_kwargs are for a cluster it starts")
        self.address = address
        self.cluster_class = cluster_class
        self.cluster_kwargs = _check_mapping("cluster_kwargs", cluster_kwargs)
        self.adapt_kwargs = _check_mapping("adapt_kwargs", adapt_kwargs)
        self.client_kwargs = _check_mapping("client_kwargs", client_kwargs)
        self._reset()

    def _reset(self) -> None:
        self._client: Any = None
        self._cluster: Any = None  # set only for a cluster this runner started
        self._context: FlowRunContext | None = None
        self._lock = threading.Lock()
        self._inflight: dict[str, Any] = {}  # task run id -> Dask future, until recorded
        self._tasks: dict[int, tuple[str, bytes, Any]] = {}  # id(task) -> token, blob, task

    def duplicate(self) -> DaskTaskRunner:
        return DaskTaskRunner(self.address, self.cluster_class, self.cluster_kwargs or None,
                              self.adapt_kwargs or None, self.client_kwargs or None)

    def __reduce__(self) -> tuple[Any, ...]:
        # A template pickles as its options, never its client or cluster (per flow run),
        # so a flow's runner can go to another process, e.g. a script the runner
        # conformance suite starts.
        return DaskTaskRunner, (self.address, self.cluster_class, self.cluster_kwargs or None,
                                self.adapt_kwargs or None, self.client_kwargs or None)

    def __repr__(self) -> str:
        if self.address:
            return f"DaskTaskRunner(address={self.address!r})"
        cls = self.cluster_class
        shown = cls if isinstance(cls, str) or cls is None else f"{cls.__module__}.{cls.__qualname__}"
        return f"DaskTaskRunner(cluster_class={shown!r}, cluster_kwargs={self.cluster_kwargs!r})"

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` while the flow run is on (None before and after)."""
        return self._client

    def start(self, context: FlowRunContext | None = None) -> None:
        import distributed

        self._context = context
        flow_name = context.flow_run.flow_name if context is not None and context.flow_run is not None else "?"
        client_kwargs = {"set_as_default": False, **self.client_kwargs}
        address = self.address
        if address is None and self.cluster_class is None and not self.cluster_kwargs and not self.adapt_kwargs:
            address = os.environ.get(ADDRESS_ENV) or None
        try:
            if address is not None:
                check_main_guard(flow_name, None)  # never from a worker importing the script again
                self._client = distributed.Client(address, **client_kwargs)
            else:
                cluster_class = self._cluster_class()
                # Before any process starts: a script without a main guard is one clear line.
                check_main_guard(flow_name, _spawns_importers(cluster_class, self.cluster_kwargs))
                self._cluster = cluster_class(**self.cluster_kwargs)
                if self.adapt_kwargs:
                    self._cluster.adapt(**self.adapt_kwargs)
                self._client = distributed.Client(self._cluster, **client_kwargs)
        except (ConfigurationError, DaskRunnerError):  # (MainGuardMissing is a ConfigurationError)
            self.shutdown(wait=False)
            raise
        except Exception as exc:
            self.shutdown(wait=False)
            where = f"connect to the Dask scheduler at {address!r}" if self._cluster is None and address \
                else f"start a Dask cluster with {self!r}"
            raise DaskRunnerError(f"could not {where}: {type(exc).__name__}: {exc}") from exc
        if context is not None and context.flow_run is not None and flow_logger.isEnabledFor(logging.INFO):
            link = getattr(self._client, "dashboard_link", None) if self._cluster is not None else None
            flow_logger.info("Dask scheduler %s%s", self._client.scheduler.address,
                             f", dashboard {link}" if link else "", extra=flow_extra(context))

    def _cluster_class(self) -> Callable[..., Any]:
        cls = self.cluster_class
        if cls is None:
            from distributed import LocalCluster

            return LocalCluster
        if isinstance(cls, str):
            module_name, _, name = cls.rpartition(".")
            try:
                return getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ConfigurationError(f"DaskTaskRunner(cluster_class={cls!r}): cannot import it "
                                         f"({type(exc).__name__}: {exc})") from None
        return cls

    def shutdown(self, wait: bool = True) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        with self._lock:
            inflight = list(self._inflight.values())
            self._tasks.clear()
        if not wait and client is not None and inflight:
            try:
                client.cancel(inflight)
            except Exception:
                pass
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:  # only a cluster this runner started
                cluster.close()

    # -- submitting -------------------------------------------------------------------------

    def submit(self, work: Work) -> None:
        # Claimed here, so a waiter never runs the task in the flow process instead.
        if not work.claim():
            return
        try:
            if self._context is None or self._client is None:
                raise DaskRunnerError("DaskTaskRunner.submit() before start(): the flow run starts it")
            self._dispatch(work, work.execution)
        except NotPicklable:
            raise
        except BaseException as exc:
            if not work.future.done():
                self._settle(work, _crashed(work, exc, "could not be sent to Dask"))
            raise

    def _dispatch(self, work: Work, execution: TaskExecution) -> None:
        """Send ``work`` to Dask, or settle it here, or arrange to come back when it can go."""
        if self._client is None:
            raise DaskRunnerError(f"the flow run's Dask client is closed; task run "
                                  f"{work.run_obj.name!r} was not sent")
        if work.tolerated is not None:  # allow_failure / quote among the arguments: rare
            self._dispatch_unwrapped(work, execution)
            return
        run = work.run_obj
        upstream = work.upstream
        uses_cache = execution.policy.uses_cache
        with self._lock:
            # A cached task needs its inputs here, to look up its key; other runs wait here
            # only on runs that are not on Dask yet (themselves waiting for a cache lookup).
            waiting = [f for f in upstream if not f.done()
                       and (uses_cache or f.task_run_id not in self._inflight)]
        if waiting:
            self._when_done(waiting, work, execution)
            return
        failed = next((f for f in upstream if f.done() and not f.state.is_completed()), None)
        if failed is not None:
            self._settle(work, not_ready(execution, failed))
            return
        if uses_cache:
            resolved = {k: replace_futures(v, lambda f: f.result()) for k, v in run.parameters.items()}
            execution.parameters = run.parameters = resolved
            state = check_cache(execution)
            if state is not None and state.type is states.StateType.SCHEDULED:
                self._later(execution.retry_delay(state), work, execution)  # the key function failed
                return
            if state is not None:
                self._settle(work, state)
                return
        deps: list[Any] = []
        index: dict[str, int] = {}

        def swap(future: Future) -> Any:
            with self._lock:
                dask_future = self._inflight.get(future.task_run_id)
            if dask_future is None:  # finished (and recorded) since: its value is here
                if not future.state.is_completed():
                    raise _UpstreamNotCompleted(future)
                return future.result()
            if future.task_run_id not in index:
                index[future.task_run_id] = len(deps)
                deps.append(dask_future)
            return UpstreamRef(index[future.task_run_id])

        try:
            parameters = {k: replace_futures(v, swap) for k, v in run.parameters.items()}
        except _UpstreamNotCompleted as failed:
            self._settle(work, not_ready(execution, failed.future))
            return
        for future in upstream:  # wait_for=[...]: ordering without data
            if future.task_run_id not in index:
                with self._lock:
                    dask_future = self._inflight.get(future.task_run_id)
                if dask_future is not None:
                    index[future.task_run_id] = len(deps)
                    deps.append(dask_future)
                elif not future.state.is_completed():
                    self._settle(work, not_ready(execution, future))
                    return
        self._send(work, execution, parameters, deps)

    def _dispatch_unwrapped(self, work: Work, execution: TaskExecution) -> None:
        """Dispatch a run whose arguments hold ``allow_failure`` or ``quote``.

        Those wrappers cannot go to the worker as they are: an upstream run inside
        ``allow_failure`` may fail and the run must still go ahead with its exception,
        while a Dask dependency only carries a completed result (the worker answers
        NOT_READY otherwise); and ``quote`` must reach the task unwrapped, its futures
        untouched. So such a run waits here for all its upstream runs, then the engine's
        own step (``resolve_arguments``, as the local runners do) decides NotReady, or
        gives the arguments as the function receives them, which go as plain values with
        no Dask dependencies. The upstream results are in the flow process anyway (each
        outcome is recorded here), so the cost is only the trip back out to a worker.
        """
        pending = [f for f in work.upstream if not f.done()]
        if pending:
            # Dask's callback thread finishes them: never block it, come back instead.
            self._when_done(pending, work, execution)
            return
        stopped = resolve_arguments(work)
        if stopped is not None:
            self._settle(work, stopped)
            return
        self._send_plain(work, execution)

    def _send_plain(self, work: Work, execution: TaskExecution) -> None:
        """Send a run whose parameters are already plain values (``_dispatch_unwrapped``).
        Also where a retried cache key function comes back to: resolving the arguments
        again would read quoted futures as if they were plain ones."""
        if self._client is None:
            raise DaskRunnerError(f"the flow run's Dask client is closed; task run "
                                  f"{work.run_obj.name!r} was not sent")
        if execution.policy.uses_cache:
            state = check_cache(execution)
            if state is not None and state.type is states.StateType.SCHEDULED:
                self._later(execution.retry_delay(state), work, execution, self._send_plain)
                return
            if state is not None:
                self._settle(work, state)
                return
        parameters = execution.task_run.parameters
        quoted: list[Future] = []
        for value in parameters.values():
            replace_futures(value, quoted.append)
        if quoted:
            # Only quote(...) leaves futures in resolved arguments. A future lives in the
            # flow process (its run's state, its waiters) and cannot be sent to a worker.
            _fail_unpicklable(execution, work.future, NotPicklable(
                f"task {work.task.name!r} was given quote(...) around the future of task run "
                f"{quoted[0].task_run_name!r}: a future cannot be sent to a Dask worker, only "
                f"its result. Pass the future without quote(...) to receive its result, or "
                f"run this task with a local task runner"))
        self._send(work, execution, parameters, [])

    def _send(self, work: Work, execution: TaskExecution, parameters: dict[str, Any], deps: list[Any]) -> None:
        """Pickle the run and submit it to Dask; ``deps`` are the Dask futures of the
        upstream runs its ``UpstreamRef`` placeholders point at, in their order."""
        run = work.run_obj
        try:
            token, task_blob = self._task_blob(execution)
            run_blob = _dumps_run(execution, detach(execution, parameters))
        except NotPicklable as error:
            _fail_unpicklable(execution, work.future, error)
        from headwater_dask.worker import run_task

        with self._lock:
            dask_future = self._client.submit(run_task, token, task_blob, run_blob, *deps,
                                              key=f"{work.task.name}-{run.id}", pure=False)
            self._inflight[run.id] = dask_future
        dask_future.add_done_callback(lambda done: self._on_done(work, execution, done))

    def _when_done(self, waiting: list[Future], work: Work, execution: TaskExecution) -> None:
        when_all_done(waiting, lambda: self._redispatch(work, execution))

    def _later(self, delay: float, work: Work, execution: TaskExecution,
               step: Callable[[Work, TaskExecution], None] | None = None) -> None:
        timer = threading.Timer(delay, self._redispatch, (work, execution, step))
        timer.daemon = True
        timer.start()

    def _redispatch(self, work: Work, execution: TaskExecution,
                    step: Callable[[Work, TaskExecution], None] | None = None) -> None:
        try:
            (step or self._dispatch)(work, execution)
        except BaseException as exc:  # nobody to raise to: end the run instead
            if not work.future.done():
                self._settle(work, _crashed(work, exc, "could not be sent to Dask"))

    def _task_blob(self, execution: TaskExecution) -> tuple[str, bytes]:
        task = execution.task
        cached = self._tasks.get(id(task))
        if cached is None:
            flow_run = execution.flow_context.flow_run
            token = f"{flow_run.id if flow_run else ''}:{id(task)}"
            facts = flow_facts(execution.flow_context)
            try:
                _dumps_by_value(facts, task)
            except Exception:  # the flow's own parameters are a convenience on workers
                facts = {**facts, "parameters": {}}
            blob = _dumps_named((task, execution.policy, facts), task, lambda: _describe_task(task))
            cached = (token, blob, task)  # the task is kept so its id stays unique
            self._tasks[id(task)] = cached
        return cached[0], cached[1]

    # -- results ----------------------------------------------------------------------------

    def _on_done(self, work: Work, execution: TaskExecution, done: Any) -> None:
        """In Dask's callback thread: record the outcome, then finish the future."""
        from headwater_dask.worker import NOT_READY

        run = work.run_obj
        try:
            if done.status == "finished":
                blob = done.result()
                if blob == NOT_READY:
                    self._not_ready_when_recorded(work, execution)
                    return
                final = record_outcome(execution, pickle.loads(blob))
            elif run.state is not None and run.state.is_final():
                final = run.state  # cancelled with a crashed flow run, which recorded it
            else:
                # An upstream run inside allow_failure may have failed: that is not why
                # this one was lost (such a run had no Dask dependencies).
                tolerated = work.tolerated or ()
                failed = next((f for f in work.upstream if f not in tolerated and f.done()
                               and not f.state.is_completed()), None)
                if failed is not None:
                    final = not_ready(execution, failed)
                else:
                    error = _dask_error(done)
                    final = _crashed(work, error, "was lost by Dask")
        except BaseException as exc:
            final = _crashed(work, exc, "could not be recorded")
        self._settle(work, final)

    def _not_ready_when_recorded(self, work: Work, execution: TaskExecution) -> None:
        # An upstream run did not complete, but its outcome may still be waiting in this
        # very callback thread: never block here, settle once every upstream is recorded.
        # (Never for a run given allow_failure or quote: it has no Dask dependencies, so
        # its worker never answers NOT_READY.)
        def settle() -> None:
            upstream = work.upstream
            failed = next((f for f in upstream if not f.state.is_completed()), upstream[0])
            self._settle(work, not_ready(execution, failed))

        pending = [f for f in work.upstream if not f.done()]
        if pending:
            when_all_done(pending, settle)
        else:
            settle()

    def _settle(self, work: Work, final: states.State) -> None:
        work.future.set_state(final)
        with self._lock:
            self._inflight.pop(work.run_obj.id, None)


def _spawns_importers(cluster_class: Any, cluster_kwargs: dict[str, Any]) -> str | None:
    """What imports the script again when ``cluster_class(**cluster_kwargs)`` starts: a
    LocalCluster of worker processes started by spawn or forkserver (the default); else None."""
    import dask
    from distributed import LocalCluster

    if not (isinstance(cluster_class, type) and issubclass(cluster_class, LocalCluster)):
        return None
    if cluster_kwargs.get("processes", True) is False:
        return None
    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    if method not in ("spawn", "forkserver"):
        return None
    return "Dask's local cluster starts worker processes"


class _UpstreamNotCompleted(Exception):
    def __init__(self, future: Future) -> None:
        super().__init__(future.task_run_name)
        self.future = future


# -- states the flow process settles itself -----------------------------------------------


def _crashed(work: Work, exc: BaseException, what: str) -> states.State:
    """End the run Crashed, saying what went wrong on the way to or from Dask; a run that
    is final already (its flow run crashed meanwhile) keeps its state."""
    state = states.Crashed(message=f"Task run {what}: {type(exc).__name__}: {exc}", data=exc)
    return finish_run(work.execution.flow_context, work.run_obj, state)


def _dask_error(done: Any) -> BaseException:
    if done.status == "cancelled":
        return DaskRunnerError("the Dask future was cancelled")
    try:
        return done.exception() or DaskRunnerError(f"Dask future ended {done.status!r}")
    except BaseException as exc:
        return exc


# -- pickling, with a clear error naming what cannot be pickled -----------------------------


def _describe_task(task: Any) -> str:
    fn = task.fn
    return f"task {task.name!r} ({getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)})"


def _dumps_run(execution: TaskExecution, detached: Any) -> bytes:
    task = execution.task
    try:
        return _dumps_by_value(detached, task)
    except Exception:
        pass  # find the argument to name
    for name, value in detached.parameters.items():
        try:
            _dumps_by_value(value, task)
        except Exception as exc:
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise NotPicklable(
                f"argument {name!r} of task {task.name!r} cannot be pickled to send it to Dask "
                f"workers: {type(value).__name__} {shown}: {type(exc).__name__}: {exc}") from None
    raise NotPicklable(f"task run {execution.task_run.name!r} cannot be pickled to send it to Dask workers")


def _dumps_named(value: Any, task: Any, describe: Callable[[], str]) -> bytes:
    try:
        return _dumps_by_value(value, task)
    except Exception as exc:
        try:
            _dumps_by_value(task, task)
            what = f"the state policy of {describe()}"
        except Exception:
            what = describe()
        raise NotPicklable(f"{what} cannot be pickled to send it to Dask workers: "
                           f"{type(exc).__name__}: {exc}. Define the task at module level, and "
                           f"keep locks, connections and open files out of its globals") from exc


_by_value_lock = threading.Lock()


def _dumps_by_value(value: Any, task: Any) -> bytes:
    """cloudpickle ``value``, sending the task's own module by value when it is not an
    installed package (workers cannot import a project's scripts and test files)."""
    import cloudpickle

    module = sys.modules.get(getattr(task.fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or _is_installed(module):
        return cloudpickle.dumps(value)
    with _by_value_lock:
        registered = module.__name__ in cloudpickle.list_registry_pickle_by_value()
        if not registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(value)
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)


def _is_installed(module: Any) -> bool:
    path = getattr(module, "__file__", None) or ""
    top = module.__name__.split(".")[0]
    return (not path or "site-packages" in path or "dist-packages" in path
            or top in sys.stdlib_module_names or top in ("headwater", "headwater_dask"))


def _fail_unpicklable(execution: TaskExecution, future: Future, error: NotPicklable) -> None:
    """Record the run Failed, finish its future, and raise ``error`` to submit()'s caller."""
    run = execution.task_run
    state = states.Failed(message=f"Task run could not be sent to Dask: {error}", data=error)
    run.end_ts = state.ts
    transition(execution.flow_context, run, state)
    task_logger.error("%s", error, extra=task_extra(execution.context))
    future.set_state(state)
    future.observed = True  # raised to the caller of submit(): handled there
    raise error
