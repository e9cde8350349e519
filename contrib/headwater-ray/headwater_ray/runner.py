"""RayTaskRunner: run a flow's submitted task runs as Ray remote functions.

The flow process stays the only writer of the run store. For each submitted run it
answers cache hits itself, then sends the run to Ray with the task (pickled once per
flow run, sent with each call; a large one goes to Ray's object store once); the worker
runs the attempt loop (retries, timeouts) and returns one package, which the flow
process records. Futures in arguments become the
object refs of their runs, which Ray resolves on the worker: the upstream result goes
from worker to worker, and Ray orders the work. All of that is
``headwater.remote_runner.RemoteTaskRunner``; this module starts and reaches Ray
(``connection``) and calls the remote function.

Outcomes are recorded by one thread of the runner's own, which finds finished runs with
``ray.wait`` (see ``_record_loop``) and fetches their packages together.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Any

from headwater.errors import ConfigurationError
from headwater.main_guard import check_main_guard
from headwater.remote import FlowRunContext, TaskExecution, Work
from headwater.remote_runner import RemoteTaskRunner
from headwater.run_logging import flow_extra, flow_logger

from .connection import Connection, RayRunnerError, check_init_kwargs, connect, disconnect, host_and_port

__all__ = ["RayTaskRunner", "RayRunnerError"]

_STOP = object()

#: A pickled task up to this size travels with each of its runs (Ray's own limit for
#: arguments it sends inline); a larger one is put in Ray's object store once.
INLINE_TASK_BYTES = 100 * 1024
#: Unfinished runs the recorder asks Ray about each round: the oldest this many, and as
#: many of the others in turn (so a run that finishes out of order is found within a few
#: rounds). Then how long a round waits for them before the recorder looks for new runs
#: to watch (doubling, up to the idle wait, while none finishes).
WINDOW = 100
HARVEST_SECONDS = 0.005
IDLE_HARVEST_SECONDS = 0.1


class Fetched:
    """A finished run's bytes, already fetched from Ray (with others, in one call)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value


class RayTaskRunner(RemoteTaskRunner):
    """Runs submitted task runs as Ray remote functions.

    ``address``: a running cluster (``"ray://head:10001"``, ``"head:6379"`` or
    ``"auto"``); the runner connects and never shuts that cluster down. Without it (and
    without ``HEADWATER_RAY_ADDRESS`` or ``RAY_ADDRESS``) the runner starts a local Ray for
    the flow run (``num_cpus`` from ``init_kwargs``, default at most 4) and stops it when
    the flow run ends. ``init_kwargs`` go to ``ray.init``.
    """

    engine = "Ray"
    link = "Ray connection"
    runner_error = RayRunnerError
    installed = ("headwater", "headwater_ray")

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise ConfigurationError(f"RayTaskRunner(address={address!r}): expected a cluster address "
                                     f"such as 'ray://127.0.0.1:10001' or 'auto'")
        if address is not None and address != "auto":
            host_and_port(address)  # a malformed address is an error here, not at flow start
        self.address = address
        self.init_kwargs = check_init_kwargs(address, init_kwargs)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._connection: Connection | None = None
        self._remote: Any = None
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._recorder: threading.Thread | None = None

    def duplicate(self) -> RayTaskRunner:
        return RayTaskRunner(self.address, self.init_kwargs or None)

    def __reduce__(self) -> tuple[Any, ...]:
        # A template pickles as its options, never its connection (per flow run), so a
        # flow's runner can go to another process (a script the conformance suite starts).
        return RayTaskRunner, (self.address, self.init_kwargs or None)

    def __repr__(self) -> str:
        if self.address:
            return f"RayTaskRunner(address={self.address!r})"
        return f"RayTaskRunner(init_kwargs={self.init_kwargs!r})"

    @property
    def where(self) -> str:
        """The cluster in messages: its address."""
        connection = self._connection
        if connection is None:
            return repr(self.address) if self.address else "a local Ray"
        return f"{'the local Ray at ' if connection.local else ''}{connection.address!r}"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, context: FlowRunContext | None = None) -> None:
        import ray

        from headwater_ray.worker import run_task

        self._context = context
        # Ray's workers never import the script, so a script without a main guard works;
        # but a process that imports it again (multiprocessing's spawn) starts no Ray.
        check_main_guard(context.flow_run.flow_name if context and context.flow_run else "?", None)
        self._connection = connect(self.address, self.init_kwargs)
        # Ray would run a task again when its worker dies; headwater's retries are the
        # task's own, so a lost worker ends the run Crashed instead.
        self._remote = ray.remote(max_retries=0)(run_task)
        self._recorder = threading.Thread(target=self._record_loop, name="headwater-ray-recorder", daemon=True)
        self._recorder.start()
        if context is not None and context.flow_run is not None and flow_logger.isEnabledFor(logging.INFO):
            kind = "local Ray started for this flow run" if self._connection.local else "Ray cluster"
            flow_logger.info("%s at %s", kind, self._connection.address, extra=flow_extra(context))

    def shutdown(self, wait: bool = True) -> None:
        connection, recorder = self._connection, self._recorder
        self._connection = self._recorder = None
        inflight = self.forget_inflight()
        try:
            if not wait and connection is not None and inflight:
                import ray

                for ref in inflight:
                    try:
                        ray.cancel(ref)
                    except Exception:
                        pass
        finally:
            if recorder is not None:
                self._done.put(_STOP)
                if wait:
                    recorder.join()
            if connection is not None:
                disconnect(connection)

    # -- the engine's part of RemoteTaskRunner ------------------------------------------------

    def is_open(self) -> bool:
        return self._connection is not None

    def ship_task(self, task: Any, blob: bytes) -> Any:
        # Named after the task, so Ray's dashboard and errors say which task it is.
        remote = self._remote.options(name=task.name)
        if len(blob) <= INLINE_TASK_BYTES:
            # Sent with each run: cheaper than an object ref argument, which Ray would
            # resolve (a trip to its object store) before every run, cached or not.
            return blob, remote
        import ray

        # A large task (one that closes over data) goes to the object store once; a ref
        # inside a list is not resolved by Ray, and a worker fetches it only on its first run.
        return [ray.put(blob)], remote

    def call_remote(self, work: Work, token: str, shipped: Any, run_blob: bytes, deps: list[Any]) -> Any:
        task, remote = shipped
        return remote.remote(token, task, run_blob, *deps)

    def when_finished(self, handle: Any, work: Work, execution: TaskExecution) -> None:
        # Watched by the recorder thread with ray.wait, many at a time: a future with a
        # callback per run cost the flow process more (Ray's event loop wakes the
        # interpreter once per run).
        self._done.put((handle, work, execution))

    def result_of(self, done: Any) -> tuple[bytes | None, BaseException | None]:
        if isinstance(done, Fetched):
            return done.value, None
        import ray

        try:
            return ray.get(done), None
        except Exception as error:  # the worker's bytes carry the task's own errors: this is Ray's
            return None, error

    def lost_reason(self) -> str:
        return f"was lost by Ray (cluster at {self.where})"

    # -- results ----------------------------------------------------------------------------

    def _record_loop(self) -> None:
        """The runner's recorder thread: record each outcome as its run finishes, found
        with ``ray.wait`` over the oldest ``WINDOW`` unfinished runs and ``WINDOW`` others
        in turn."""
        import ray

        watched: dict[Any, tuple[Work, TaskExecution]] = {}  # in the order submitted
        wait = HARVEST_SECONDS
        turn = WINDOW  # where the next round's other runs start, in ``watched``
        while True:
            # New runs to watch: wait for one only when nothing is watched yet. At _STOP
            # the runner is shut down: runs not recorded by then are the engine's to settle.
            try:
                while True:
                    item = self._done.get(block=not watched)
                    if item is _STOP:
                        return
                    watched[item[0]] = item[1:]
            except queue.Empty:
                pass
            # ray.wait costs the flow process in proportion to the runs it is asked about
            # (asked about a thousand at a time, it was the recorder's largest cost), and
            # runs mostly finish in the order they were sent: so the oldest, plus a turn
            # of the others, never all of them.
            refs = list(itertools.islice(watched, WINDOW))
            if len(watched) > WINDOW:
                if turn >= len(watched):
                    turn = WINDOW
                refs.extend(itertools.islice(watched, turn, turn + WINDOW))
                turn += WINDOW
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait, fetch_local=True)
            # Long runs: ask less often (up to IDLE_HARVEST_SECONDS), so waiting on them
            # costs the flow process next to nothing; short ones: every HARVEST_SECONDS.
            wait = HARVEST_SECONDS if ready else min(wait * 2, IDLE_HARVEST_SECONDS)
            try:
                # One call for all of them (a third of the cost of one call each); a lost
                # run among them makes each be asked on its own (result_of).
                done: list[Any] = [Fetched(value) for value in ray.get(ready)] if ready else []
            except Exception:
                done = list(ready)
            for ref, outcome in zip(ready, done):
                work, execution = watched.pop(ref)
                self.record_done(work, execution, outcome)
