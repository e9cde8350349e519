"""The writer part of the run stores that queue their writes (SQLite, and PostgreSQL in
``headwater-postgres``): each write becomes a plain queue entry (``sqlite_rows``) that the
store's writer thread writes in batches (``sqlite_queue``), so a task run pays a queue
append, not a round trip to the database.

A mixin: the store gives it ``_queue`` (a ``WriteQueue``) and the sets it keeps (see
:meth:`QueuedWrites.start_writes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from headwater.runs import FlowRun, TaskRun
from headwater.states import FINAL_TYPES, State
from headwater.stores import active_flow_info

from .sqlite_queue import WriteQueue
from .sqlite_rows import flow_entry, flow_info_entry, task_header, task_state


class QueuedWrites:
    """``create_flow_run``, ``create_task_run``, ``record_state``, ``record_logs`` and
    ``flush`` of the run store interface, through a write queue."""

    _queue: WriteQueue
    #: Runs a forked child must not write: its parent's (see ``SQLiteRunStore._forget_parent``).
    _inherited: frozenset[str] = frozenset()

    def start_writes(self, queue: WriteQueue) -> None:
        """Write through ``queue`` from now on (a new store, or a forked child's own)."""
        self._queue = queue
        self._open_runs: set[str] = set()  # task runs whose row the queue has: no header again
        self._open_flows: set[str] = set()  # flow runs created here, not yet final
        self._created: dict[str, tuple[Any, ...]] = {}  # headers waiting for their run's first state

    def create_flow_run(self, run: FlowRun) -> None:
        self._open_flows.add(run.id)
        self._queue.put(flow_entry(run, None))
        info = active_flow_info(run)
        if info is not None:
            self._queue.put(flow_info_entry(info))

    def create_task_run(self, run: TaskRun) -> None:
        # Held until the run's first state (the engine records Pending right after),
        # then queued with it: one queue entry fewer per task run.
        self._created[run.id] = task_header(run)
        self._open_runs.add(run.id)

    def record_state(self, run: FlowRun | TaskRun, state: State) -> None:
        if run.kind == "task":
            run_id = run.id
            open_runs = self._open_runs
            if run_id not in open_runs:  # recorded without create_task_run first
                if run_id in self._inherited:
                    return  # a forked child: the parent's run (see _forget_parent)
                self.create_task_run(run)
            # The header leaves the held ones only once queued: an interrupt (Ctrl-C) in
            # between must not leave a run whose row has no name and no flow run.
            header = self._created.get(run_id)
            entry = task_state(run, state)
            if header is None:
                self._queue.put(entry)
            else:
                self._queue.put(header + entry)
                self._created.pop(run_id, None)
            if state.type in FINAL_TYPES:
                open_runs.discard(run_id)  # the set holds unfinished runs only
        else:
            if run.id in self._inherited:
                return  # a forked child: the parent's run (see _forget_parent)
            if state.type in FINAL_TYPES:
                self._open_flows.discard(run.id)
            self._queue.put(flow_entry(run, state))

    def record_logs(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self._queue.put_logs(rows)

    def flush(self) -> None:
        for run_id in list(self._created):  # runs created but given no state: rows all the same
            header = self._created.get(run_id)
            if header is not None:
                # Queued before it is taken: a first state recorded meanwhile by another
                # thread then finds it still held, or follows it in the queue. (Queued
                # twice is harmless: the same row.)
                self._queue.put(header)
                self._created.pop(run_id, None)
        self._queue.flush()

