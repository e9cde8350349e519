"""DaskTaskRunner: run a flow's submitted task runs on a Dask cluster.

The flow process stays the only writer of the run store. For each submitted run it
answers cache hits itself, then sends the task (pickled once per flow run) and the run
to Dask; the worker runs the attempt loop (retries, timeouts) and sends back one
package, which the flow process records in Dask's callback thread. Futures in arguments
become Dask dependencies, so Dask orders the work and moves the data. All of that is
``headwater.remote_runner.RemoteTaskRunner``; this module starts and reaches the cluster
and submits to it.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable

from headwater.errors import ConfigurationError, HeadwaterError
from headwater.main_guard import check_main_guard
from headwater.remote import FlowRunContext, TaskExecution, Work
from headwater.remote_runner import RemoteTaskRunner
from headwater.run_logging import flow_extra, flow_logger

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


class DaskTaskRunner(RemoteTaskRunner):
    """Runs submitted task runs on Dask.

    ``address``: a running scheduler (``"tcp://10.0.0.5:8786"``); the runner connects
    and never shuts that cluster down. Without it (and without ``HEADWATER_DASK_ADDRESS``)
    the runner starts ``cluster_class(**cluster_kwargs)`` (default
    ``distributed.LocalCluster``; a class or a ``"module.Class"`` string) for the flow
    run, adapts it with ``adapt_kwargs`` if given, and closes it when the flow run ends.
    ``client_kwargs`` go to ``distributed.Client``.
    """

    engine = "Dask"
    link = "Dask client"
    runner_error = DaskRunnerError
    installed = ("headwater", "headwater_dask")

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
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._client: Any = None
        self._cluster: Any = None  # set only for a cluster this runner started

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
        inflight = self.forget_inflight()
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

    # -- the engine's part of RemoteTaskRunner ------------------------------------------------

    def is_open(self) -> bool:
        return self._client is not None

    def call_remote(self, work: Work, token: str, shipped: Any, run_blob: bytes, deps: list[Any]) -> Any:
        from headwater_dask.worker import run_task

        return self._client.submit(run_task, token, shipped, run_blob, *deps,
                                   key=f"{work.task.name}-{work.run_obj.id}", pure=False)

    def when_finished(self, handle: Any, work: Work, execution: TaskExecution) -> None:
        # Recorded in Dask's callback thread.
        handle.add_done_callback(lambda done: self.record_done(work, execution, done))

    def result_of(self, done: Any) -> tuple[bytes | None, BaseException | None]:
        if done.status == "finished":
            return done.result(), None
        if done.status == "cancelled":
            return None, DaskRunnerError("the Dask future was cancelled")
        try:
            return None, done.exception() or DaskRunnerError(f"Dask future ended {done.status!r}")
        except BaseException as exc:
            return None, exc


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
