"""The state policy contract: what a policy sees, what it may answer, and the checks.

The engine proposes; the policy answers. It is the one place where retries, cache hits
and timeouts are decided, so a plugin can change any of them by returning its own
policy from ``headwater_make_state_policy`` (task runs) or
``headwater_make_flow_state_policy`` (flow runs), or by wrapping the default one.

Three parts, each usable without the engine (a policy is tested with a fake context):

* :class:`TaskRunContext` and :class:`FlowRunAttempts`: what a policy may read;
* :class:`StatePolicy`: the three questions and their do-nothing answers;
* :func:`check_running_answer`, :func:`check_failed_answer` and
  :func:`check_completed_answer`: the answers the engine can act on. Anything else
  raises :class:`PolicyAnswerError`, which the engine turns into a ``Failed`` run
  naming the policy (a run left Scheduled or Running would look alive forever).
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

from .active import task_run_ctx
from .errors import ConfigurationError
from .states import FINAL_TYPES, State, StateType

if TYPE_CHECKING:
    from .results import ResultStore
    from .runs import FlowRun, TaskRun
    from .stores import RunStore


def delay_for(delays: float | list[float], retry_index: int, jitter: float | None) -> float:
    """The delay in seconds before retry number ``retry_index`` (0-based): ``delays`` is
    a number or a list (one per retry, the last repeats); ``jitter`` spreads it by up to
    that fraction, never below zero."""
    if isinstance(delays, list):
        base = float(delays[min(retry_index, len(delays) - 1)]) if delays else 0.0
    else:
        base = float(delays)
    if jitter:
        base = max(0.0, base + random.uniform(-jitter * base, jitter * base))
    return base


# -- what a policy reads ---------------------------------------------------------------------


class RunResources(Protocol):
    """What a run's context offers besides the run: the flow run's shared resources."""

    @property
    def store(self) -> RunStore: ...

    @property
    def result_store(self) -> ResultStore: ...

    @property
    def session(self) -> Any: ...


class TaskRunContext:
    """One task run as a state policy (and other plugins) see it: the ``ctx`` of a
    :class:`StatePolicy`'s methods, and what ``headwater.runtime.task_run`` reads.

    All a policy may rely on:

    - ``task``: the :class:`~headwater.tasks.Task` (its options on ``task.spec``),
    - ``task_run``: the :class:`~headwater.runs.TaskRun` (``name``, ``state``,
      ``cache_key``, ``run_count``, ...),
    - ``parameters``: the run's arguments by parameter name (futures resolved),
    - ``retries_done``: how many retries were scheduled for this run so far (0 during
      the first attempt, 1 during the first retry, ...),
    - ``nesting``: how many task runs enclose this one (0 for a task its flow called),
    - ``flow_run``: the :class:`~headwater.runs.FlowRun` it belongs to, or ``None``
      (a task called outside a flow),
    - ``flow``: the :class:`~headwater.flows.Flow` of that flow run, or ``None``,
    - ``store``, ``result_store``, ``session``: the run store, the result store (made
      on first use) and the session.

    The engine makes one per task run and keeps it up to date; it never subclasses it.
    A policy is testable with this class itself (``resources`` may be any object with
    ``store``, ``result_store`` and ``session``, or ``None`` when the policy reads none
    of them) or with any object with the attributes the policy reads.
    """

    __slots__ = ("task", "task_run", "parameters", "retries_done", "nesting", "flow_run", "resources")

    def __init__(self, task: Any, task_run: TaskRun, parameters: dict[str, Any],
                 resources: RunResources | None = None, flow_run: FlowRun | None = None,
                 retries_done: int = 0, nesting: int = 0) -> None:
        self.task = task
        self.task_run = task_run
        self.parameters = parameters
        self.retries_done = retries_done
        self.nesting = nesting
        self.flow_run = flow_run
        #: The flow run's shared resources (the engine's flow run context).
        self.resources = resources

    @classmethod
    def get(cls) -> TaskRunContext | None:
        """The active task run's context, or ``None`` outside a task run
        (``TaskRunContext.get()``, as Prefect code writes it)."""
        return task_run_ctx.get()

    @property
    def flow(self) -> Any:
        """The :class:`~headwater.flows.Flow` the run belongs to, or ``None``."""
        return getattr(self.resources, "flow", None)

    @property
    def store(self) -> RunStore:
        return self._resources().store

    @property
    def result_store(self) -> ResultStore:
        return self._resources().result_store

    @property
    def session(self) -> Any:
        return self._resources().session

    def _resources(self) -> RunResources:
        if self.resources is None:
            raise AttributeError("this TaskRunContext was made without resources (store, result "
                                 "store, session)")
        return self.resources

    def __repr__(self) -> str:
        return (f"TaskRunContext(task_run={getattr(self.task_run, 'name', None)!r}, "
                f"retries_done={self.retries_done})")


class FlowRunAttempts:
    """One flow run as a state policy sees it (the ``ctx`` of a flow policy's
    ``propose_failed``): ``flow``, ``flow_run``, ``parameters`` and ``retries_done``."""

    __slots__ = ("flow", "flow_run", "parameters", "retries_done")

    def __init__(self, flow: Any, flow_run: FlowRun, retries_done: int = 0) -> None:
        self.flow = flow
        self.flow_run = flow_run
        self.parameters = flow_run.parameters
        self.retries_done = retries_done


# -- what a policy answers ------------------------------------------------------------------

#: ``propose_running``: ``None`` (run the attempt) or a final state (e.g. ``Cached``).
RunningAnswer = Optional[State]
#: ``propose_failed``: a final state (ends the run), or a retry (see :func:`is_retry`).
FailedAnswer = State
#: ``propose_completed``: a final state (the proposed ``Completed``, or e.g. ``Failed``).
CompletedAnswer = State
#: Any of the three.
Answer = Union[RunningAnswer, FailedAnswer, CompletedAnswer]


class StatePolicy:
    """The do-nothing policy: run once, no cache, no timeout, results not persisted.
    The in-memory double of the policy interface.

    Subclass it, or wrap another policy (:class:`WrappingPolicy`) and delegate to it.
    Every method receives the run's context (:class:`TaskRunContext` for task runs,
    :class:`FlowRunAttempts` for flow runs, which are asked ``propose_failed`` only).
    """

    #: Seconds a single attempt may take, or None.
    timeout_seconds: float | None = None
    #: Whether the engine must compute a cache key (and persist results).
    uses_cache: bool = False

    def propose_running(self, ctx: TaskRunContext) -> RunningAnswer:
        """Before an attempt: return a final state (e.g. ``Cached``) to skip the call,
        or ``None`` to run it. ``ctx.task_run.cache_key`` is set when the task has a key.
        Any other answer ends the run ``Failed`` naming the policy's class."""
        return None

    def propose_failed(self, ctx: Any, exc: BaseException, state: State) -> FailedAnswer:
        """After a failed attempt: return ``state`` (or another final state) to end the
        run, or a retry: ``AwaitingRetry`` (with ``scheduled_time``; without one: at
        once) or any SCHEDULED state with a ``scheduled_time``. Only a SCHEDULED answer
        retries. A ``Completed`` answer accepts the failure: the run is recorded
        completed (with a warning in its log). Anything else (``Scheduled()`` without a
        time, ``Pending``, ``Running``, ``None``, not a state) ends the run ``Failed``
        naming the policy's class."""
        return state

    def propose_completed(self, ctx: TaskRunContext, state: State) -> CompletedAnswer:
        """After a successful attempt: return the final state (``state``, or e.g. a
        ``Failed`` one to reject the result). A caching policy records the result under
        the run's cache key here. A non-final answer ends the run ``Failed`` naming the
        policy's class."""
        return state

    def result_key(self, ctx: TaskRunContext) -> str | None:
        """After a successful attempt, before ``propose_completed``: the key under which
        the result store keeps the result, or ``None`` to keep it in memory only. The
        ``caching`` plugin answers ``cache-<cache key>`` for a run with a cache key, the
        ``local_results`` plugin ``run-<run id>`` for a run whose task (or flow) has
        ``persist_result=True``."""
        return None


class WrappingPolicy(StatePolicy):
    """A policy that adds to another one; every method delegates unless overridden, and
    ``timeout_seconds`` and ``uses_cache`` are the inner policy's unless the wrapper's
    class sets them. ``inner`` is fixed once the wrapper is made."""

    def __init__(self, inner: StatePolicy) -> None:
        self.inner = inner
        cls = type(self)
        # The inner policy's settings, unless this wrapper's class sets its own.
        if cls.timeout_seconds is StatePolicy.timeout_seconds:
            self.timeout_seconds = getattr(inner, "timeout_seconds", None)
        if cls.uses_cache is StatePolicy.uses_cache:
            self.uses_cache = getattr(inner, "uses_cache", False)
        # A method this wrapper does not change is the inner policy's own, bound here:
        # the engine asks several questions per task run, and a frame of delegation per
        # question and per wrapper showed in the per-task cost. (So ``inner`` is fixed
        # once made.) An inner policy that is not a StatePolicy and lacks a question
        # gets the do-nothing answer.
        for name in _QUESTIONS:
            if getattr(cls, name) is getattr(WrappingPolicy, name):
                method = getattr(inner, name, None)
                setattr(self, name, method if method is not None else getattr(StatePolicy(), name))

    def propose_running(self, ctx: TaskRunContext) -> RunningAnswer:
        return self.inner.propose_running(ctx)

    def propose_failed(self, ctx: Any, exc: BaseException, state: State) -> FailedAnswer:
        return self.inner.propose_failed(ctx, exc, state)

    def propose_completed(self, ctx: TaskRunContext, state: State) -> CompletedAnswer:
        return self.inner.propose_completed(ctx, state)

    def result_key(self, ctx: TaskRunContext) -> str | None:
        return self.inner.result_key(ctx)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (unpickling, copying): no endless recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


#: The methods a wrapper delegates unless it overrides them.
_QUESTIONS = ("propose_running", "propose_failed", "propose_completed", "result_key")


# -- checking the answers --------------------------------------------------------------------


class PolicyAnswerError(ConfigurationError):
    """A state policy answered what the engine cannot act on. The message names the
    policy, the method, the answer and what was expected."""


def policy_name(policy: Any) -> str:
    """``module.Class`` of a policy, as the engine's messages name it."""
    cls = type(policy)
    return f"{cls.__module__}.{cls.__qualname__}"


def is_retry(answer: State) -> bool:
    """Whether a ``propose_failed`` answer is a retry: a SCHEDULED state that says when
    (``AwaitingRetry``, whose missing time means at once, or any ``scheduled_time``),
    and says it as a ``datetime`` (seconds are a mistake the engine cannot act on)."""
    if answer.type is not StateType.SCHEDULED:
        return False
    when = answer.state_details.scheduled_time
    if when is None:
        return answer.name == "AwaitingRetry"
    return isinstance(when, _dt.datetime)


def answering_policy(policy: Any, method: str) -> Any:
    """The policy in a chain of wrappers whose own ``method`` gave the answer: wrappers
    that only delegate it (:class:`WrappingPolicy`'s) are looked through, so an error
    names the policy to fix, not the plugin that wrapped it."""
    while isinstance(policy, WrappingPolicy) and \
            getattr(type(policy), method, None) is getattr(WrappingPolicy, method):
        policy = policy.inner
    return policy


def _refuse(policy: Any, method: str, answer: Any, expected: str, subject: str) -> PolicyAnswerError:
    policy = answering_policy(policy, method)
    shown = repr(answer)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    about = f" for {subject}" if subject else ""
    return PolicyAnswerError(f"State policy {policy_name(policy)} answered {method}() with {shown}"
                             f"{about}; expected {expected}")


def check_running_answer(policy: Any, answer: Any, subject: str = "") -> RunningAnswer:
    """``answer`` if it is ``None`` or a final state; else :class:`PolicyAnswerError`
    (its message names ``subject``, e.g. ``"task run 'load-0'"``, when given)."""
    if answer is None or (isinstance(answer, State) and answer.type in FINAL_TYPES):
        return answer
    raise _refuse(policy, "propose_running", answer, "None (to run the attempt) or a final state "
                  "such as Cached", subject)


def check_failed_answer(policy: Any, answer: Any, subject: str = "") -> FailedAnswer:
    """``answer`` if it is a final state or a retry (:func:`is_retry`); else
    :class:`PolicyAnswerError`."""
    if isinstance(answer, State) and (answer.type in FINAL_TYPES or is_retry(answer)):
        return answer
    raise _refuse(policy, "propose_failed", answer, "the proposed Failed state, another final "
                  "state, or AwaitingRetry (with its scheduled_time, a datetime) to retry", subject)


def check_completed_answer(policy: Any, answer: Any, subject: str = "") -> CompletedAnswer:
    """``answer`` if it is a final state; else :class:`PolicyAnswerError`."""
    if isinstance(answer, State) and answer.type in FINAL_TYPES:
        return answer
    raise _refuse(policy, "propose_completed", answer, "a final state (the proposed Completed, or "
                  "Failed to reject the result)", subject)


def check_result_key(policy: Any, answer: Any, subject: str = "") -> str | None:
    """``answer`` if it is ``None`` or a non-empty string; else :class:`PolicyAnswerError`."""
    if answer is None or (isinstance(answer, str) and answer):
        return answer
    raise _refuse(policy, "result_key", answer, "a non-empty string (the result store's key) or None",
                  subject)
