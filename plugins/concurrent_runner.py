"""The concurrent task runner (the default): sync tasks on a bounded pool of worker
threads, async tasks on one anyio event loop in a thread of its own. Also under
Prefect 3's name, ``ThreadPoolTaskRunner`` (registered as ``"threadpool"``).

Also the default ``headwater_make_task_runner``: the flow's ``task_runner`` option (an
instance, a class, or a registered name), else ``HEADWATER_TASK_RUNNER``.

Worker threads are daemons, so an interrupted flow lets the process exit instead of
waiting for every running task. A task that waits on a task it submitted runs it
itself if no worker has started it yet, so nested submits cannot deadlock the pool.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from typing import Any

from headwater.errors import ConfigurationError, UnknownComponentError
from headwater.plugin_manager import hookimpl
from headwater.futures import Work
from headwater.task_runners import TaskRunner


class ConcurrentTaskRunner(TaskRunner):
    """Sync tasks on up to ``max_workers`` worker threads (started as needed; default
    ``min(32, cpus + 4)``), async tasks on one event loop in a thread of its own."""

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (not isinstance(max_workers, int) or isinstance(max_workers, bool)
                                        or max_workers < 1):
            raise ConfigurationError(f"{type(self).__name__}(max_workers={max_workers!r}): expected "
                                     f"a whole number of at least 1, or None for the default")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._portal_cm: Any = None
        self._portal: Any = None
        self._loop_thread: int | None = None
        self._loop: Any = None
        self._loop_tasks: set[Any] = set()

    def duplicate(self) -> ConcurrentTaskRunner:
        return type(self)(self.max_workers)

    def __reduce__(self) -> tuple[Any, ...]:
        # A template pickles as its option (its queue and threads are per flow run), so a
        # flow's runner can go to another process, as the runner conformance suite sends it.
        return type(self), (self.max_workers,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"

    def submit(self, work: Work) -> None:
        context = contextvars.copy_context()
        if work.is_async:
            loop = self._loop  # no lock once the loop runs: set once, under the lock
            if loop is None:
                loop = self._ensure_loop()
            if threading.get_ident() == self._loop_thread:
                self._spawn(context, work)  # a nested submit, on the loop already
            else:
                # Never blocks: the loop may be busy (an async task waiting on a future).
                loop.call_soon_threadsafe(self._spawn, context, work)
            return
        work.context = context  # on the work: no (context, work) pair per submitted run
        self._queue.put(work)
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                return
            if len(self._threads) >= self.max_workers:
                return
            thread = threading.Thread(target=self._worker, daemon=True,
                                      name=f"headwater-worker-{len(self._threads)}")
            self._threads.append(thread)
        thread.start()

    def _worker(self) -> None:
        get = self._queue.get
        while True:
            work = get()
            if work is None:
                return
            context, work.context = work.context, None
            try:
                context.run(work.run)
            except BaseException:  # noqa: S110 - already recorded as the run's Crashed state
                pass  # a task's SystemExit must not shrink the pool
            work = context = None  # keep no finished run alive while idle
            with self._lock:
                self._idle += 1

    def _ensure_loop(self) -> Any:
        """The event loop for async tasks: anyio's, in a thread of its own, started once."""
        with self._lock:
            if self._portal is None:
                import asyncio

                from anyio.from_thread import start_blocking_portal

                self._portal_cm = start_blocking_portal(name="headwater-event-loop")
                self._portal = self._portal_cm.__enter__()
                self._loop_thread = self._portal.call(threading.get_ident)
                self._loop = self._portal.call(asyncio.get_running_loop)
            return self._loop

    def _spawn(self, context: contextvars.Context, work: Work) -> None:
        # In the loop thread. Tasks are kept until done: the loop holds only weak ones.
        task = self._loop.create_task(_run_async(context, work))
        self._loop_tasks.add(task)
        task.add_done_callback(self._loop_tasks.discard)

    def _cancel_loop_tasks(self) -> None:
        for task in list(self._loop_tasks):
            task.cancel()

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            threads = list(self._threads)
            portal_cm, portal = self._portal_cm, self._portal
            # _loop stays: nested submits may still reach _spawn while the loop drains.
            self._portal_cm = self._portal = None
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
        if portal_cm is not None:
            if wait:
                portal_cm.__exit__(None, None, None)
            else:
                # A crash or an interrupt: cancel the async tasks still running (each
                # ends Crashed) instead of waiting for them.
                try:
                    portal.call(self._cancel_loop_tasks)
                    portal.call(portal.stop, True)
                except Exception:  # noqa: S110 - the loop is gone already
                    pass
                try:
                    portal_cm.__exit__(None, None, None)
                except Exception:  # noqa: S110
                    pass


class ThreadPoolTaskRunner(ConcurrentTaskRunner):
    """Prefect 3's name for :class:`ConcurrentTaskRunner`, which it is in all but name:
    sync tasks on up to ``max_workers`` worker threads, async tasks on one event loop.
    Registered as ``"threadpool"`` too."""


async def _run_async(context: contextvars.Context, work: Work) -> None:
    # Context variables of the submitting flow, inside the portal's event loop.
    for var, value in context.items():
        var.set(value)
    await work.arun()


def resolve_task_runner(value: Any, session: Any, flow_name: str) -> TaskRunner:
    """An instance (copied), a class (instantiated) or a registered name → a runner.

    ``None`` means the default: ``HEADWATER_TASK_RUNNER`` (``"concurrent"`` unless set).
    """
    source = f"task_runner={value!r} of flow {flow_name!r}"
    if value is None:
        value = session.settings.task_runner
        source = f"{session.settings.describe('TASK_RUNNER', value)} (the default for flow {flow_name!r})"
    expected = ("expected a TaskRunner instance, a TaskRunner class, or a registered name: "
                + ", ".join(repr(n) for n in session.registry.names("task_runner")))
    if isinstance(value, str):
        if value not in session.registry.names("task_runner"):
            raise UnknownComponentError(f"{source}: no task runner is registered under that name; "
                                        f"{expected}")
        runner = session.registry.get("task_runner", value)()
    elif isinstance(value, type):
        if not issubclass(value, TaskRunner):
            raise ConfigurationError(f"{source}: {value.__name__} is not a TaskRunner subclass; {expected}")
        runner = value()
    elif isinstance(value, TaskRunner):
        runner = value.duplicate()
    else:
        raise ConfigurationError(f"{source}: {expected}")
    if not isinstance(runner, TaskRunner):
        raise ConfigurationError(f"{source} made {runner!r}, which is not a TaskRunner")
    return runner


@hookimpl
def headwater_register_components(registry: Any) -> None:
    registry.add_task_runner("concurrent", ConcurrentTaskRunner, source="concurrent_runner")
    registry.add_task_runner("threadpool", ThreadPoolTaskRunner, source="concurrent_runner")


@hookimpl(trylast=True)
def headwater_make_task_runner(flow: Any, session: Any) -> TaskRunner:
    return resolve_task_runner(flow.spec.task_runner, session, flow.name)
