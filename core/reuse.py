"""What a retried flow run reuses: its attempts, and the earlier task runs and subflow
runs that answer a new attempt's calls (``headwater runs retry``; docs/concepts.md,
"Retrying a flow run from where it failed").

* :func:`attempts_of` splits a flow run's history into attempts: each ``Running`` or
  ``Retrying`` state of the flow run starts one, and a task run belongs to the attempt
  it started in.
* :class:`ReusePlan` is built from the earlier attempts before a new one starts. A task
  call of the new attempt is answered by an earlier task run that completed with a
  persisted result when the task's key, the hash of its inputs and its order among the
  attempt's calls with that key and those inputs are the same; so a loop that calls a
  task three times with the same inputs matches three earlier runs, one each.
* :class:`ReusingPolicy` asks the plan before each task run's first attempt and ends a
  matched run ``Cached`` with the earlier result, naming the earlier run.

Only runs whose result was persisted can be reused (``persist_result=True`` on the flow
or task, or ``HEADWATER_PERSIST_RESULTS``): the engine records the inputs' hash of a
task run when it persists its result (``local_results``).
"""

from __future__ import annotations

import bisect
import inspect
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import states
from .policy import StatePolicy, WrappingPolicy
from .results import ResultMissing, read_result
from .run_logging import task_extra

if TYPE_CHECKING:
    from .flows import Flow
    from .runs import FlowRun, TaskRun
    from .stores import RunReader

__all__ = ["Attempt", "ReusePlan", "ReusingPolicy", "attempts_of", "entry_point_of", "inputs_hash"]

logger = logging.getLogger("headwater.task_runs")


def inputs_hash(parameters: dict[str, Any], task: Any = None) -> str | None:
    """A hash of a run's arguments that is the same in every process (``task_input_hash``'s
    rules), or ``None`` when one of them cannot be hashed (such a call is never matched to
    an earlier run: it runs again). Given the ``task``, the hash covers the task's
    definition too (where it is, its source from its ``def`` line), so a task edited
    since is not matched."""
    # layering: the canonical hash is the input_hash plugin's, the one cache keys use
    from headwater.plugins import input_hash

    if task is not None:
        return input_hash.call_hash(task, parameters)
    try:
        return input_hash.stable_hash(parameters, "parameters")
    except (input_hash.Unhashable, RecursionError, ValueError):
        return None


# -- where a flow is defined -------------------------------------------------------------------

def entry_point_of(flow: Flow) -> str | None:
    """The flow's entry point as JSON (the directory it runs in included), or ``None``
    for a flow that could not be loaded again (defined inside a function, or typed at an
    interactive prompt)."""
    base = flow.__dict__.get("_entry_point", "")
    if base == "":  # worked out once per flow object
        base = flow.__dict__["_entry_point"] = _entry_point(flow)
    if base is None:
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed under the process
        cwd = None
    return base[:-1] + f', "run_cwd": {json.dumps(cwd)}}}'


def _entry_point(flow: Flow) -> str | None:
    fn = flow.fn
    qualname = getattr(fn, "__qualname__", "")
    if not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return None
    try:
        file = inspect.getsourcefile(fn)
    except (TypeError, OSError):
        file = None
    if file is not None:
        if not os.path.isfile(file):
            file = None  # <stdin>, a notebook cell
        else:
            file = os.path.abspath(file)
    module = getattr(fn, "__module__", None) or "__main__"
    if module == "__main__":
        # `python -m pkg.flows`: the module's real name, so a retry imports it as a module
        # of its package (its relative imports work), not as a loose file.
        main = sys.modules.get("__main__")
        name = getattr(getattr(main, "__spec__", None), "name", None)
        if name and name != "__main__" and file and _same_file(getattr(main, "__file__", "") or "", file):
            module = name
    if file is None and module == "__main__":
        return None
    return json.dumps({"module": module, "qualname": qualname, "file": file, "flow_name": flow.name},
                      sort_keys=True)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# -- attempts ---------------------------------------------------------------------------------


def _began(run: Any) -> float:
    """When a run began, as far as its row tells: its first Running state, else (a run
    that never ran: Cached, NotReady) when it ended, else its state's time."""
    if run.start_ts is not None:
        return run.start_ts
    if run.end_ts is not None:
        return run.end_ts
    return run.state.ts if run.state is not None else 0.0


@dataclass
class Attempt:
    """One attempt of a flow run: its number (1, 2, ...), when it started and ended, the
    state it ended in (``None`` while it runs), and the task runs created in it."""

    number: int
    started: float
    ended: float | None = None
    state: states.State | None = None
    task_runs: list[TaskRun] = field(default_factory=list)

    @property
    def reused(self) -> list[TaskRun]:
        """The task runs of this attempt that reused an earlier attempt's result."""
        return [run for run in self.task_runs if run.state is not None and run.state.name == "Cached"
                and run.state.message is not None and run.state.message.startswith(REUSED)]


#: How the message of a reused task run's ``Cached`` state begins.
REUSED = "Reused the result of task run"


def attempts_of(flow_states: list[states.State], task_runs: list[TaskRun]) -> list[Attempt]:
    """The attempts of a flow run from its state history (oldest first) and its task runs
    (in creation order). A flow run that never started has none."""
    attempts: list[Attempt] = []
    for state in flow_states:
        if state.type is states.StateType.RUNNING:
            if attempts and attempts[-1].ended is None:
                attempts[-1].ended = state.ts
            attempts.append(Attempt(len(attempts) + 1, state.ts))
        elif attempts:
            current = attempts[-1]
            if state.is_final() or current.state is None or not current.state.is_final():
                current.state = state  # the final state wins over a later AwaitingRetry
            if state.is_final():
                current.ended = state.ts
    if not attempts:
        return attempts
    starts = [attempt.started for attempt in attempts]
    for run in task_runs:
        index = max(0, bisect.bisect_right(starts, _began(run)) - 1)
        attempts[index].task_runs.append(run)
    return attempts


# -- the plan ----------------------------------------------------------------------------------


def _reusable(run: TaskRun) -> bool:
    state = run.state
    return (state is not None and state.type is states.StateType.COMPLETED and run.result_location is not None
            and run.inputs_hash is not None and bool(run.task_key))


class ReusePlan:
    """Which earlier runs answer the calls of a retried flow run's new attempt.

    ``tasks`` maps ``(task key, inputs hash, order)`` to an earlier task run that
    completed with a persisted result and the number of its attempt; ``subflows`` maps
    ``(flow name, inputs hash, order)`` to an earlier subflow run. ``lost`` lists the
    task runs that completed before but cannot be reused (no persisted result, or inputs
    that cannot be hashed): they run again. Counting the order of calls starts anew with
    each attempt (:meth:`next_attempt`).
    """

    def __init__(self, tasks: dict[tuple[str, str, int], tuple[TaskRun, int]],
                 subflows: dict[tuple[str, str, int], FlowRun], lost: list[TaskRun] | None = None) -> None:
        self.tasks = tasks
        self.subflows = subflows
        self.lost = lost or []
        self._seen: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    @classmethod
    def build(cls, store: RunReader, flow_run: FlowRun) -> ReusePlan:
        """The plan for a new attempt of ``flow_run`` from what ``store`` recorded of it."""
        attempts = attempts_of(store.read_states(flow_run.id), store.read_task_runs(flow_run_id=flow_run.id))
        tasks: dict[tuple[str, str, int], tuple[TaskRun, int]] = {}
        lost_by_attempt: list[list[TaskRun]] = [[]]
        for attempt in attempts:  # oldest first: a later attempt's run of the same call wins
            seen: dict[tuple[str, str], int] = {}
            lost: list[TaskRun] = []
            for run in attempt.task_runs:
                if run.inputs_hash is None:
                    if run.state is not None and run.state.type is states.StateType.COMPLETED:
                        lost.append(run)
                    continue
                group = (run.task_key, run.inputs_hash)
                order = seen.get(group, 0)
                seen[group] = order + 1
                if _reusable(run):
                    tasks[(run.task_key, run.inputs_hash, order)] = (run, attempt.number)
            lost_by_attempt.append(lost)
        subflows: dict[tuple[str, str, int], FlowRun] = {}
        children = store.read_flow_runs(limit=2**31, parent_flow_run_id=flow_run.id)
        children.sort(key=_began)
        seen_flows: dict[tuple[str, str], int] = {}
        for child in children:
            if child.inputs_hash is None:
                continue
            group = (child.flow_name, child.inputs_hash)
            order = seen_flows.get(group, 0)
            seen_flows[group] = order + 1
            subflows[(child.flow_name, child.inputs_hash, order)] = child
        return cls(tasks, subflows, max(lost_by_attempt, key=len))

    def describe_lost(self) -> str:
        """What runs again of what completed before, and why, for the retry's warning."""
        unpersisted = [run for run in self.lost if run.result_location is None]
        unhashable = [run for run in self.lost if run.result_location is not None]
        parts = []
        if unpersisted:
            parts.append(f"{_names(unpersisted)} kept no result (persist_result=True on the flow or the task, "
                         f"or HEADWATER_PERSIST_RESULTS=true, keeps them)")
        if unhashable:
            parts.append(f"{_names(unhashable)} had inputs that cannot be hashed (task_input_hash's rules)")
        return (f"{len(self.lost)} task run(s) that completed in an earlier attempt run again: "
                + "; ".join(parts))

    def wrap(self, policy: StatePolicy) -> StatePolicy:
        """``policy`` (a task's, for this flow run) asking this plan first."""
        return ReusingPolicy(policy, self)

    def next_attempt(self) -> None:
        """A new attempt begins: its calls are counted from the first again."""
        with self._lock:
            self._seen.clear()

    def _order(self, kind: str, key: str, digest: str) -> int:
        group = (kind, key, digest)
        with self._lock:
            order = self._seen.get(group, 0)
            self._seen[group] = order + 1
        return order

    def match_task(self, task_key: str, digest: str) -> tuple[TaskRun, int] | None:
        """The earlier task run (and its attempt) that answers this call, if any; each
        call counts, so call it once per task run."""
        return self.tasks.get((task_key, digest, self._order("task", task_key, digest)))

    def match_subflow(self, flow_name: str, digest: str) -> FlowRun | None:
        """The earlier subflow run this call of a subflow stands for, if any."""
        return self.subflows.get((flow_name, digest, self._order("flow", flow_name, digest)))


def _names(runs: list[TaskRun], shown: int = 3) -> str:
    names = ", ".join(repr(run.name) for run in runs[:shown])
    return names + (f" and {len(runs) - shown} more" if len(runs) > shown else "")


class ReusingPolicy(WrappingPolicy):
    """A task's policy in a retried flow run: before a task run's first attempt, an
    earlier run of the same call (:class:`ReusePlan`) answers it ``Cached`` with its
    persisted result; everything else is the inner policy's."""

    #: Asked before the run leaves the flow process (an out-of-process runner's
    #: ``check_cache``), where the run store and the result store are.
    uses_cache = True

    def __init__(self, inner: StatePolicy, plan: ReusePlan) -> None:
        super().__init__(inner)
        self.plan = plan

    def propose_running(self, ctx: Any) -> states.State | None:
        if ctx.retries_done == 0:  # the first attempt only: each call is counted once
            run = ctx.task_run
            digest = inputs_hash(ctx.parameters, ctx.task)
            match = self.plan.match_task(run.task_key, digest) if digest is not None else None
            if match is not None:
                earlier, attempt = match
                try:
                    value = read_result(ctx.result_store, earlier.result_location, None)
                except ResultMissing as exc:
                    logger.warning("The result of task run %r (attempt %d) cannot be read (%s); running "
                                   "the task again", earlier.name, attempt, exc, extra=task_extra(ctx))
                else:
                    run.result_location = earlier.result_location
                    run.inputs_hash = digest
                    state = states.Cached(message=f"{REUSED} {earlier.name!r} (attempt {attempt})",
                                          data=value)
                    state.state_details.reused_from = earlier.id
                    return state
        return self.inner.propose_running(ctx)

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to a worker with its task run, it is its inner policy: the plan stays here,
        # where the match was made.
        return (_itself, (self.inner,))


def _itself(policy: StatePolicy) -> StatePolicy:
    return policy
