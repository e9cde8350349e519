"""The SQLite run store's write queue, and the thread that writes it.

Appending to the queue takes no lock. ``flush()`` queues a marker (in a queue of its
own, read before the entries) and waits until the writer has committed everything
queued before it. A flow more than ``MAX_PENDING`` entries ahead of the writer waits
until it is within half of that, so memory does not grow with the number of task runs.
What an entry holds is ``sqlite_rows``; who writes a batch of them (the thread itself,
or a writer process) is the queue's ``Writer`` (``sqlite_writers``).
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable

from headwater.errors import StoreError

from .sqlite_rows import FLOW, TASK_HEADER, TASK_STATE, describe_entry
from .sqlite_tuning import MAX_PENDING, WAKE_AT

if TYPE_CHECKING:  # the protocol only: sqlite_writers imports the writer process's module
    from .sqlite_writers import Writer


def _drain(queue: collections.deque[Any]) -> list[Any]:
    """Everything in ``queue`` now, oldest first (appends meanwhile stay for the next)."""
    popleft = queue.popleft
    return [popleft() for _ in range(len(queue))]


class WriteQueue:
    """One store's queue of writes in one process, and the thread that writes it.

    Recording threads ``put`` entries and log rows (no lock taken) and ``flush``. The
    writer thread, started by the first ``put``, hands each batch to ``writer``
    (``Writer.write``) with the flush markers queued after it (each an ``Event``, set
    once it returns, also when it raised: the error is reported by ``flush``), every
    ``writer.tick`` seconds or sooner when woken. When it stops after ``close`` it
    calls ``writer.close()``, then ``on_exit()`` (the store closes its connection).
    """

    def __init__(self, label: str, writer: Writer, on_exit: Callable[[], None]) -> None:
        self.label = label
        #: Who writes the batches; the store replaces it in a forked child.
        self.writer = writer
        self._on_exit = on_exit
        self._entries: collections.deque[tuple[Any, ...]] = collections.deque()
        self._logs: collections.deque[tuple[Any, ...]] = collections.deque()
        self._marks: collections.deque[threading.Event] = collections.deque()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._start_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        #: Called by the writer thread after each pass (the store's heartbeat); keeps its own pace.
        self.on_idle: Callable[[], None] | None = None
        self.closed = False
        self._finished = False  # the writer made its last pass: nothing more is written

    # -- the recording threads' side (no lock taken) ---------------------------------------

    def put(self, entry: tuple[Any, ...]) -> None:
        if self._writer is None:
            self._start()
        if self.closed:
            self._refuse(entry)
        entries = self._entries
        entries.append(entry)
        if self._finished:  # closed while appending: the writer may have gone already
            self._refuse(entry)
        if len(entries) > WAKE_AT:
            if len(entries) > MAX_PENDING:
                self._wait_for_writer()
            elif not self._wake.is_set():
                self._wake.set()

    def put_logs(self, rows: Iterable[tuple[Any, ...]]) -> None:
        if self._writer is None:
            self._start()
        if self.closed:
            self._refuse(None)
        self._logs.extend(rows)
        if self._finished:
            self._refuse(None)

    def _wait_for_writer(self) -> None:
        # Back-pressure: a flow that makes states faster than they are written waits
        # here, so the queue stays bounded and memory does not grow with the run count.
        with self._progress:
            while len(self._entries) > MAX_PENDING // 2 and self._writer is not None and self._writer.is_alive():
                self._wake.set()
                self._progress.wait(0.1)

    def _refuse(self, entry: tuple[Any, ...] | None) -> None:
        # Raised, not dropped: the writer has exited, so a write accepted now would never
        # reach the file. Shutdown stays quiet: run_logs swallows store errors, and the
        # session closes its store only after its flows returned.
        what = ""
        if entry is not None and entry[0] in (TASK_HEADER, TASK_STATE, FLOW):
            what = f" ({describe_entry(entry)})"
        raise StoreError(f"the run store {self.label} is closed; nothing more can be written "
                         f"to it{what}: open a new Session")

    def _start(self) -> None:
        with self._start_lock:
            if self.closed or self._writer is not None:
                return  # closed: the caller refuses; no writer to start
            writer = threading.Thread(target=self._loop, name="headwater-store-writer", daemon=True)
            writer.start()
            self._writer = writer

    # -- the writer thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.writer.tick)
            self._wake.clear()
            closing = self.closed
            self._write_now()
            if self.on_idle is not None and not closing:
                self.on_idle()
            if closing:
                # close() set ``closed`` before waking us: after this pass nothing is
                # accepted, and whatever was appended meanwhile is written now.
                self._finished = True
                self._write_now()
                try:
                    self.writer.close()
                finally:
                    self._on_exit()
                return

    def _write_now(self) -> None:
        # Markers first: everything queued before a marker is then in this batch.
        marks = _drain(self._marks)
        batch, lines = _drain(self._entries), _drain(self._logs)
        if not batch and not lines and not marks:
            return
        try:
            self.writer.write(batch, lines, marks)
        except BaseException as exc:  # reported by flush(); the thread goes on
            self._error = exc
        finally:
            for mark in marks:
                mark.set()
            with self._progress:
                self._progress.notify_all()

    # -- flush and close -----------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until everything queued so far is committed; raise what writing it raised."""
        writer = self._writer
        if writer is None:
            return
        done = threading.Event()
        self._marks.append(done)
        self._wake.set()
        while not done.wait(0.1):
            if not writer.is_alive():
                break
        error, self._error = self._error, None
        if isinstance(error, StoreError):  # says what is wrong already, in one line
            raise StoreError(str(error)) from None
        if error is not None:
            raise StoreError(f"writing to the run store {self.label} failed: {error}") from error

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.closed = True
            self._wake.set()
            writer = self._writer
            if writer is not None and writer is not threading.current_thread():
                writer.join(30)  # it writes what is left, closes its connection and ends
