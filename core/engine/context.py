"""A flow run's shared state (:class:`FlowRunContext`), and the active flow run and
task run, held in context variables.

Context variables (not thread-locals) so that async tasks, and worker threads started
with a copy of the context, see the run that started them. The task run variable holds
the run's :class:`~headwater.policy.TaskRunContext`.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

from ..active import flow_run_ctx, task_run_ctx  # noqa: F401 - the engine imports both from here
from ..errors import ConfigurationError, UnknownComponentError
from ..policy import StatePolicy, WrappingPolicy
from ..results import unknown_serializer

if TYPE_CHECKING:
    from ..bindings import FlowBindings
    from ..flows import Flow
    from ..results import ResultStore
    from ..runs import FlowRun
    from ..session import Session
    from ..stores import RunStore
    from ..tasks import Task
    from .futures import Future

#: How many locks guard the runs' state changes (a run's lock is picked by its id).
RUN_LOCKS = 16


class FlowRunContext:
    """Everything a flow run's tasks share, made once per flow run."""

    def __init__(self, flow: Flow | None, flow_run: FlowRun | None, session: Session,
                 bindings: FlowBindings, result_store: ResultStore | None = None,
                 run_locks: tuple[threading.Lock, ...] | None = None) -> None:
        self.flow = flow
        self.flow_run = flow_run
        self.session = session
        self.bindings = bindings
        self.store: RunStore = session.store
        self.task_runner: Any = None
        self.label = f"Flow run {flow_run.name!r}" if flow_run is not None else ""
        self._result_store = result_store  # else made on first use
        self._policies: dict[int, StatePolicy] = {}
        self._counters: dict[str, itertools.count] = {}
        self._lock = threading.Lock()
        # A run's state changes under one of these (picked by its id): one lock for all
        # runs had the flow's worker threads queueing on it, each wait a GIL hand-over.
        # A caller making many short-lived contexts (a worker's detached runs) passes a
        # set it shares between them.
        self.run_locks = run_locks or tuple(threading.Lock() for _ in range(RUN_LOCKS))
        # Submitted futures not yet finished, and failures nobody looked at.
        self.pending: set[Future] = set()
        self.failures: list[Future] = []
        self.submitted = 0
        self.crashed = False
        # Threads still running a body after a flow timeout gave up on them: they may not
        # start new task runs or subflows (timeouts.call_in_thread).
        self.abandoned: set[int] = set()
        # Unfinished task runs that tasks called (by run id), for crash() to end.
        self.nested: dict[str, Any] = {}
        # (task execution, exception, thread id) of runs whose end could not be recorded
        # where it happened (engine.end_unfinished): mostly empty.
        self.unfinished: list[Any] = []
        #: In a retried flow run, what its new attempt may reuse (``headwater.reuse``).
        self.reuse: Any = None

    @classmethod
    def get(cls) -> FlowRunContext | None:
        """The active flow run's context (inside its tasks too), or ``None`` outside any
        flow run: ``FlowRunContext.get()``, as Prefect code writes it."""
        context = flow_run_ctx.get()
        return context if context is not None and context.flow_run is not None else None

    @property
    def parameters(self) -> dict[str, Any]:
        """The flow run's parameters (``FlowRunContext.get().parameters``, as in Prefect)."""
        return self.flow_run.parameters if self.flow_run is not None else {}

    @property
    def result_store(self) -> ResultStore:
        if self._result_store is None:
            make = self.bindings.make_result_store
            store = make(flow=self.flow, session=self.session) if make else None
            if store is None:
                raise ConfigurationError("no plugin made a result store (is local_results disabled?)")
            self._result_store = store
        return self._result_store

    def policy_for(self, task: Task) -> StatePolicy:
        policy = self._policies.get(id(task))
        if policy is None:
            if task.spec.result_serializer is not None:
                self._check_serializer(task)
            make = self.bindings.make_state_policy
            policy = make(task=task, session=self.session) if make else None
            if policy is None:
                policy = StatePolicy()
            elif not isinstance(policy, StatePolicy):
                # A policy with only some of the methods: the rest answer as the
                # do-nothing policy does.
                policy = WrappingPolicy(policy)
            if self.reuse is not None:  # a retried flow run: earlier runs answer first
                policy = self.reuse.wrap(policy)
            self._policies[id(task)] = policy
        return policy

    def _check_serializer(self, task: Task) -> None:
        # Checked before the task's first run in this flow run: an unknown name found only
        # when the result is written would waste the work of the body.
        known = self.session.registry.names("serializer")
        name = task.spec.result_serializer
        if known and name not in known:
            raise UnknownComponentError(f"task {task.name!r} was not run: "
                                        f"{unknown_serializer(name, known)}")

    def next_index(self, task_key: str) -> int:
        counter = self._counters.get(task_key)
        if counter is None:
            with self._lock:
                counter = self._counters.setdefault(task_key, itertools.count())
        return next(counter)

    def track(self, future: Future) -> None:
        with self._lock:
            self.pending.add(future)
            self.submitted += 1

    def finished(self, future: Future) -> None:
        # No lock: list.append and set.discard are single steps under the GIL, and every
        # reader copies (list(self.pending)) in one step too. A failure is counted before
        # the future leaves ``pending``: the flow run, once it sees nothing pending,
        # must find every failure.
        state = future.final_state
        if state is not None and not state.is_completed():
            self.failures.append(future)
        self.pending.discard(future)

    def unobserved_failures(self) -> list[Future]:
        return [f for f in self.failures if not f.observed]
