"""Who writes the SQLite run store's batches: the ``Writer`` seam and its two writers.

The store's queue (``sqlite_queue``) hands each batch of entries to one ``Writer``, in
its writer thread. Two writers implement it:

* ``ThreadWriter`` writes the batch itself, in the writer thread (``BatchWriter``, one
  transaction per batch).
* ``ProcessWriter`` starts a writer process (``sqlite_writer_process``) and hands the
  batches to it, so writing them takes no time under the flow process's GIL. Until the
  child is ready, and for good if it cannot start or dies, its ``ThreadWriter`` writes
  (what the child did not confirm first).

``choose_writer`` picks one by the ``HEADWATER_STORE_WRITER`` setting (``WRITER_CHOICES``):

* ``auto`` (the default): the thread writes; a writer process starts once one batch
  holds ``PROCESS_AT`` entries (a flow making about a thousand task runs within one
  50 ms tick), where that is possible (POSIX, not a frozen application, a known
  interpreter). A small flow never starts one.
* ``thread``: the thread writes everything, whatever the pace.
* ``process``: a writer process starts with the first batch (where possible, else the
  thread writes, as under ``auto``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable, Protocol

from headwater.errors import ConfigurationError, StoreError

from .sqlite_tuning import BATCH_SECONDS, PROCESS_AT, PROCESS_TICK
from .sqlite_writer import BatchWriter, read_only
from .sqlite_writer_process import WriterProcess, spawning, start_writer_process

#: The values of ``HEADWATER_STORE_WRITER``; the first is the default.
WRITER_CHOICES = ("auto", "thread", "process")



class Writer(Protocol):
    """What the store's queue needs of whoever writes its batches.

    Every method is called by one thread only, the store's writer thread (``sqlite_queue.
    WriteQueue``), except ``forget``, which the store calls in a forked child, where that
    thread does not exist. So an implementation needs no lock of its own.
    """

    #: Seconds the writer thread waits between batches when nothing wakes it (the queue
    #: reads it before every wait, so a writer may change its pace).
    tick: float

    def write(self, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]], marks: list[Any]) -> None:
        """Write one batch of queue entries (``sqlite_rows``) and log rows, in queue order.

        ``marks`` are the flush markers queued after the batch: when there are any, the
        batch (and every batch before it) must be committed before this returns, since
        the queue then tells the waiting ``flush()`` calls it is. Raise what went wrong
        (``StoreError`` for what the user can act on): the queue keeps it for ``flush``
        and goes on with the next batch."""
        ...

    def close(self) -> None:
        """The writer thread stops (the store was closed): write or hand back everything
        accepted, and end what the writer started (a writer process). Errors are not
        raised: ``flush()`` before it reported them."""
        ...

    def forget(self) -> None:
        """In a forked child: what the parent's writer holds (a process, pipes) is the
        parent's; let go of it without touching it. The child's store makes a new writer."""
        ...


class ThreadWriter:
    """Writes each batch in the calling thread (the store's writer thread), one
    transaction per batch. Not thread-safe: one writer thread uses it.

    ``connection`` gives the calling thread's connection to the store;
    ``read_only_message`` says what to do about a store this process cannot write (a
    write refused as read-only is raised as ``StoreError`` with it)."""

    tick = BATCH_SECONDS

    def __init__(self, rows: BatchWriter, connection: Callable[[], sqlite3.Connection],
                 read_only_message: Callable[[], str]) -> None:
        self.rows = rows
        self._connection = connection
        self._read_only_message = read_only_message

    def write(self, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]], marks: list[Any]) -> None:
        if batch or logs:  # (a flush with nothing queued: nothing to write)
            try:
                self.rows.write(self._connection(), batch, logs)
            except sqlite3.OperationalError as exc:
                if read_only(exc):
                    raise StoreError(self._read_only_message()) from None
                raise

    def take_back(self, process: WriterProcess) -> None:
        """End ``process`` and write here what it did not confirm; raise what it reported."""
        process.close()
        self.rows.seq = max(self.rows.seq, process.seq)
        for old_batch, old_logs in process.unconfirmed(self._connection()):
            self.write(old_batch, old_logs, [])
        if process.error is not None:
            raise StoreError(f"the store's writer process could not write a batch: {process.error}")

    def close(self) -> None:
        pass  # everything was written as it came

    def forget(self) -> None:
        pass  # nothing of its own outlives the thread


class ProcessWriter:
    """Hands batches to a writer process (``sqlite_writer_process``) once one is
    started and ready; until then, and for good once it cannot start or dies, its
    ``ThreadWriter`` writes, first what the child did not confirm.

    ``at_once``: start the process with the first batch (``HEADWATER_STORE_WRITER=
    process``), not once a batch holds ``PROCESS_AT`` entries (``auto``). Not
    thread-safe: one writer thread uses it."""

    def __init__(self, path: Path, thread: ThreadWriter, at_once: bool = False) -> None:
        self.path = path
        self.thread = thread
        self.at_once = at_once
        #: The running writer process, if any.
        self.process: WriterProcess | None = None
        self._may_start = True  # False once one could not start or died: the thread writes from then on
        self.tick = BATCH_SECONDS

    def write(self, batch: list[tuple[Any, ...]], logs: list[tuple[Any, ...]], marks: list[Any]) -> None:
        process = self.process
        # PROCESS_AT is read here, as this module's name for it: a test may lower it.
        if process is None and self._may_start and (self.at_once or len(batch) + len(logs) >= PROCESS_AT):
            with spawning:  # no fork between starting the child and owning its pipes
                process = self.process = start_writer_process(self.path, self.thread.rows)
            self._may_start = process is not None
        if process is not None and process.is_ready():
            if process.send(batch, logs, marks):
                # Smaller batches: the child writes while the flow runs, and the last
                # batch, which the flow's final flush waits for, stays short.
                self.tick = PROCESS_TICK
                return
            # The process is gone: what it did not confirm (this batch too) is written
            # here, and so is everything after.
            self._stop_process()
            self.thread.take_back(process)
            return
        if process is not None and not process.alive:  # it never started
            self._stop_process()
            process.close()
        self.thread.write(batch, logs, marks)

    def _stop_process(self) -> None:
        self.process = None
        self._may_start = False
        self.tick = BATCH_SECONDS

    def close(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            try:
                self.thread.take_back(process)
            except Exception:  # noqa: S110 - flush() before close() reported errors already
                pass

    def forget(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.forget()


def check_writer_choice(value: str, described: str | None = None) -> str:
    """``value`` as one of ``WRITER_CHOICES`` (any case, spaces around ignored), else a
    one-line ``ConfigurationError`` naming it (as ``described``, e.g.
    ``HEADWATER_STORE_WRITER='fast'``) and the choices."""
    choice = value.strip().lower() if isinstance(value, str) else value
    if choice not in WRITER_CHOICES:
        shown = described or f"HEADWATER_STORE_WRITER={value!r}"
        raise ConfigurationError(f"{shown} is not a store writer; expected one of {', '.join(WRITER_CHOICES)}")
    return choice


def choose_writer(choice: str, path: Path, thread: ThreadWriter) -> Writer:
    """The writer for ``HEADWATER_STORE_WRITER=choice`` (see the module docstring)."""
    choice = check_writer_choice(choice)
    if choice == "thread":
        return thread
    return ProcessWriter(path, thread, at_once=choice == "process")
