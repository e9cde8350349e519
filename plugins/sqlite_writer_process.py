"""A writer process for busy flows: the run store's batches written outside the GIL.

A flow's threads and the store's writer thread share one GIL, so in a flow making
thousands of task runs a second the writer's work (binding values, SQLite's own work
between the GIL hand-overs) slowed the flow down. Once a batch is large
(``PROCESS_AT`` entries, see ``sqlite_writers``: under ``HEADWATER_STORE_WRITER=auto``;
at once under ``process``), the writer thread starts this module as a child process
(``python -m headwater.plugins.sqlite_writer_process``) and, once the child says it is
ready, only pickles each batch (plain tuples) into its stdin. The child writes each batch in one
transaction, as the thread would, and answers one line per batch. Batches that piled up
in the pipe while it wrote are written together, in one transaction (cheaper per row,
so a child that fell behind catches up). It copies the write-ahead log into the
database (a checkpoint) after answering, once the flow is idle, so an answer rarely
waits for one.

What does not change: every row names the flow process (host, pid, start time), so
crash detection is the same; ``flush()`` returns only once the child has confirmed every
batch queued before it; the child ignores Ctrl-C (the flow process decides what an
interrupt means and records it) and ends when its stdin closes, also when the flow
process was killed, after writing every batch it received whole. If the child cannot
start or dies, the thread writes what the child did not confirm, and everything after,
itself.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .sqlite_tuning import ANSWER_TIMEOUT, AUTOCHECKPOINT_PAGES, IDLE_MS, JOURNAL_LIMIT, MERGE_AT, PIPE_BYTES

#: Bytes of the length before each pickled batch (the pipe's framing, not a tuning).
_LENGTH = 8

# Held while a writer process is started and handed to its store, and across os.fork():
# a process forked in between would keep the child's stdin open without knowing it.
spawning = threading.Lock()
# Writer processes of a parent, seen from a forked child: kept, never finalized here.
_forgotten: list[Any] = []


#: Which batches a writer process committed, so none is written twice when it dies
#: between committing one and saying so. Created by the writer process when missing.
BATCHES_TABLE = ("CREATE TABLE IF NOT EXISTS writer_batches (writer TEXT NOT NULL, number INTEGER NOT NULL, "
                 "PRIMARY KEY (writer, number)) WITHOUT ROWID")


def writer_id(host: str, flow_pid: int, writer_pid: int, token: str = "") -> str:
    """How a writer process names itself in ``writer_batches``: with a token its flow
    process made up for it, so a later child that gets the same pid is a new name."""
    return f"{host}:{flow_pid}:{writer_pid}:{token}"


class WriterProcess:
    """The flow process's end of one writer process."""

    def __init__(self, proc: subprocess.Popen[bytes], rows: Any, token: str = "") -> None:
        self._proc = proc
        self._token = token
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._stdin_fd = proc.stdin.fileno() if proc.stdin is not None else -1
        self._stdout_fd = proc.stdout.fileno() if proc.stdout is not None else -1
        # Both ends non-blocking: while the stdin pipe is full we read answers (see _write).
        os.set_blocking(self._stdin_fd, False)
        os.set_blocking(self._stdout_fd, False)
        self._heard = time.monotonic()  # the last time the child answered
        self._buffer = b""
        self._next = 0
        self._unconfirmed: dict[int, tuple[list[Any], list[Any]]] = {}
        self._rows = rows  # the thread's BatchWriter: it may write batches before the child's
        self.seq = rows.seq  # the last task run order number the child gave out
        self.error: str | None = None
        self.alive = True
        self.ready = False  # the child has started and opened the store

    def is_ready(self) -> bool:
        """True once the child says it is ready; until then (about 50 ms) the thread
        goes on writing itself, so the flow never waits for the child to start."""
        if not self.ready and self.alive:
            self._read_answers()
        return self.ready

    # -- sending ----------------------------------------------------------------------------

    def send(self, batch: list[Any], logs: list[Any], marks: list[Any]) -> bool:
        """Hand one batch to the child; with flush markers waiting on it (``marks``), wait
        until the child has written it (and so everything sent before it).
        False: the child is gone (see ``unconfirmed``). A write error the child reports
        is raised (the writer thread keeps it for ``flush``)."""
        number = self._next
        self._next += 1
        try:
            data = pickle.dumps((number, self._rows.seq, batch, logs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - a value that cannot be pickled (a message that is not text)
            from .sqlite_values import plain_values

            # Every value made plain (text, numbers), as the child would store them anyway.
            batch, logs = [plain_values(entry) for entry in batch], [plain_values(line) for line in logs]
            data = pickle.dumps((number, self._rows.seq, batch, logs), protocol=pickle.HIGHEST_PROTOCOL)
        self._unconfirmed[number] = (batch, logs)
        try:
            self._write(len(data).to_bytes(_LENGTH, "little"), data)
        except (OSError, ValueError):  # the child is gone (EPIPE: SIGPIPE is blocked here) or stuck
            self.alive = False
            return False
        # Answers are read after every batch (without waiting unless a flush does): a
        # confirmed batch's entries are let go at once, so memory stays bounded by the
        # store's queue, not by how often we look.
        self._read_answers(wait_for=number if marks else None)
        if not self.alive:
            return False
        self._raise_error()
        return True

    def unconfirmed(self, conn: Any = None) -> list[tuple[list[Any], list[Any]]]:
        """Batches sent but not confirmed written, oldest first (after the child died).
        With ``conn``, those the child committed before it died are left out."""
        numbers = sorted(self._unconfirmed)
        if conn is not None:
            host, pid, _ = self._rows.process
            writer = writer_id(host, pid, self._proc.pid, self._token)
            done: set[int] = set()
            if numbers:
                try:
                    done = {number for (number,) in conn.execute("SELECT number FROM writer_batches WHERE writer = ?",
                                                        (writer,))}
                except Exception:  # noqa: BLE001 - no table: it never wrote one
                    pass
            try:  # also when all were confirmed: a child killed after answering leaves rows
                conn.execute("DELETE FROM writer_batches WHERE writer = ?", (writer,))
            except Exception:  # noqa: S110 - a few stale rows under a name never used again
                pass
            numbers = [number for number in numbers if number not in done]
        return [self._unconfirmed[number] for number in numbers]

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"the store's writer process: {error}")

    def _write(self, head: bytes, data: bytes) -> None:
        """``head`` then ``data`` into the child's stdin (in one system call when the pipe
        takes them whole: one GIL hand-over instead of two). While the pipe is full, the
        child's answers are read: a child that fell behind may itself be waiting for us
        to read its answers before it reads more. Raises ``OSError`` once the child is
        gone, or has neither read nor answered for ``ANSWER_TIMEOUT`` (it is killed)."""
        done = _write_some(self._stdin_fd, [head, data])
        if done == len(head) + len(data):
            return
        view = memoryview(head + data)[done:]
        poller = select.poll()  # not select(): it fails for descriptors above 1023
        poller.register(self._stdin_fd, select.POLLOUT)
        poller.register(self._stdout_fd, select.POLLIN)
        moved = time.monotonic()
        while view:
            written = _write_some(self._stdin_fd, [view])
            if written:
                view = view[written:]
                moved = time.monotonic()
                continue
            self._read_answers()
            if not self.alive:
                raise BrokenPipeError("the store's writer process ended")
            if time.monotonic() - max(moved, self._heard) > ANSWER_TIMEOUT:
                self._kill()
                raise BrokenPipeError("the store's writer process stopped reading")
            poller.poll(1000)

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self.alive = False

    # -- answers ------------------------------------------------------------------------------

    def _read_answers(self, wait_for: int | None = None, until_end: bool = False) -> None:
        """Read every answer available now; with ``wait_for``, until that batch's is in;
        with ``until_end``, until the child closes its end. A child silent for
        ``ANSWER_TIMEOUT`` while it owes answers is killed (then ``alive`` is False)."""
        poller = None
        last = time.monotonic()
        while True:
            try:
                chunk = os.read(self._stdout_fd, 65536)
            except BlockingIOError:
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":  # the child ended
                self.alive = False
                return
            if chunk:
                last = self._heard = time.monotonic()
                self._buffer += chunk
                self._take_lines()
            waiting = until_end or (wait_for is not None and wait_for in self._unconfirmed)
            if not waiting:
                return
            if chunk is None:
                if time.monotonic() - last > ANSWER_TIMEOUT:
                    self._kill()
                    return
                if poller is None:
                    poller = select.poll()  # not select(): it fails for descriptors above 1023
                    poller.register(self._stdout_fd, select.POLLIN)
                poller.poll(1000)

    def _take_lines(self) -> None:
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line == b"ready":
                self.ready = True
                continue
            try:  # anything else the child printed (a sitecustomize, say) is not ours
                number, status, rest = line.decode().split(" ", 2)
                batch_number = int(number)
                value = int(rest) if status == "ok" else json.loads(rest)
            except ValueError:
                continue
            self._unconfirmed.pop(batch_number, None)
            if status == "ok":
                self.seq = value
            else:
                self.error = value

    # -- ending ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the child's stdin and read its answers until it ends (it writes what
        it has first). What it did not confirm stays in ``unconfirmed()``, and an error
        it reported in ``error``."""
        try:
            self._stdin.close()
        except OSError:
            pass
        if self.alive:
            self._read_answers(until_end=True)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stdout.close()
        self.alive = False

    def forget(self) -> None:
        """In a forked child of the flow process: close our copies of the pipes (else the
        writer process would never see its stdin end) without touching the process."""
        for stream in (self._stdin, self._stdout):
            try:
                stream.close()
            except OSError:
                pass
        _forgotten.append(self._proc)  # its finalizer would wait for a process not ours
        self.alive = False


def _write_some(fd: int, parts: list[bytes]) -> int:
    """As much of ``parts`` as the pipe takes now, in one system call where possible."""
    try:
        if hasattr(os, "writev"):
            return os.writev(fd, parts)
        return os.write(fd, parts[0])
    except BlockingIOError:
        return 0


def start_writer_process(path: Path, rows: Any) -> WriterProcess | None:
    """Start a writer process for the store file ``path`` (rows named as ``rows`` names
    them); None where none can be started (the thread then goes on writing itself):
    not on Windows, not in a frozen application (whose executable is the application),
    not without a known interpreter."""
    if os.name != "posix" or getattr(sys, "frozen", False) or not sys.executable:
        return None
    host, pid, pid_start = rows.process
    token = os.urandom(4).hex()
    command = [sys.executable, "-m", "headwater.plugins.sqlite_writer_process", str(path), host, str(pid),
               pid_start or "", token]
    if hasattr(signal, "pthread_sigmask"):
        # In the writer thread: a child that died must show as EPIPE on write, not as a
        # SIGPIPE that kills a flow process which restored the default handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
    try:
        # Its own session: Ctrl-C in the terminal goes to the flow process only, which
        # decides what it means and still sends what it records about it.
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, bufsize=0, close_fds=True, start_new_session=True)
    except Exception:  # noqa: BLE001 - any reason at all: the thread writes instead
        return None
    _widen(proc.stdin)
    return WriterProcess(proc, rows, token)


def _widen(stream: Any) -> None:
    """Let the child's stdin hold 1 MB (Linux; 64 KB is the default): a batch then goes
    into the pipe at once while the child still writes the one before, and the child
    finds the batches that piled up waiting together (see ``_receive``)."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except Exception:  # noqa: S110 - not Linux, or above the system's limit: the default pipe works
        pass


# -- the child --------------------------------------------------------------------------------


def _read_exactly(stream: Any, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            return b""  # the flow process closed our stdin (or ended) mid-batch: nothing half-written
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def main(argv: list[str]) -> int:
    # Started in its own session, so a terminal's Ctrl-C does not reach it; ignored all
    # the same (a kill -INT of the group): the flow process decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .sqlite_writer import BatchWriter, connect, retry_busy, write_transaction

    path, host, pid, pid_start = argv[:4]
    token = argv[4] if len(argv) > 4 else ""
    rows = BatchWriter(host, int(pid), pid_start or None)
    conn = connect(path)
    # SQLite copies the write-ahead log into the database (a checkpoint, with an fsync)
    # inside the commit that fills it, so some batch's answer, maybe the one a flow's
    # final flush waits for, waits for it too. The child checkpoints after answering,
    # once no batch came for IDLE_MS; SQLite's own checkpoint stays on, at a larger
    # size (AUTOCHECKPOINT_PAGES), so a flow that is never idle, or several processes
    # writing the file at once, still keep the log bounded, and the log file is cut
    # back after a checkpoint (JOURNAL_LIMIT).
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_LIMIT}")
    writer = writer_id(host, int(pid), os.getpid(), token)
    retry_busy(lambda: conn.execute(BATCHES_TABLE))
    # Unbuffered: whether a batch is waiting is then a question for the pipe alone.
    stdin, stdout = sys.stdin.buffer.raw, sys.stdout.buffer
    waiting = select.poll()
    waiting.register(stdin.fileno(), select.POLLIN)
    unchecked = 0  # batches written since the last checkpoint
    answering = _answer(stdout, b"ready\n")
    while True:
        received = _receive(stdin, waiting)
        if not received:
            break
        answers = _write_group(conn, rows, writer, received)
        if answering:
            answering = _answer(stdout, "".join(answers).encode())
        unchecked += len(received)
        if unchecked and not waiting.poll(IDLE_MS):
            _checkpoint(conn)
            unchecked = 0
    try:  # a clean end: no batch of ours is in doubt
        write_transaction(conn, lambda connection: connection.execute("DELETE FROM writer_batches WHERE writer = ?", (writer,)))
    except Exception:  # noqa: S110 - left for the flow process's next take-back, harmless
        pass
    conn.close()
    return 0


def _receive(stdin: Any, waiting: Any) -> list[tuple[Any, ...]]:
    """The next batch (waiting for it), and every whole batch already in the pipe after
    it, up to MERGE_AT entries; empty once the flow process closed our stdin."""
    received: list[tuple[Any, ...]] = []
    entries = 0
    while not received or (entries < MERGE_AT and waiting.poll(0)):
        head = _read_exactly(stdin, _LENGTH)
        data = _read_exactly(stdin, int.from_bytes(head, "little")) if head else b""
        if not data:
            break  # our stdin ended: what was received whole is still written
        received.append(pickle.loads(data))  # noqa: S301 - from our own parent, through a pipe
        entries += len(received[-1][2]) + len(received[-1][3])
    return received


def _write_group(conn: Any, rows: Any, writer: str, group: list[tuple[Any, ...]]) -> list[str]:
    """Write batches received together in one transaction, and answer each: a flow that
    outpaced us is caught up with fewer, larger transactions (cheaper per row, and a
    run whose states were split between batches is written once). A row that cannot be
    written takes no other row with it (``BatchWriter.write``); it is reported in the
    answers, and the batches count as written (the flow process does not write them
    again)."""
    from .sqlite_writer import RecordsNotWritten

    rows.seq = max([rows.seq] + [seq for _, seq, _, _ in group])  # the thread may have written some first
    numbers = [number for number, _, _, _ in group]
    batch = [entry for _, _, entries, _ in group for entry in entries]
    logs = [line for _, _, _, lines in group for line in lines]

    def mark(conn: Any) -> None:
        # In the same transaction as the batches' rows (also when they had to be written
        # in parts): if we die before answering, the flow process sees these batches
        # were written and does not write them twice.
        conn.executemany("INSERT OR REPLACE INTO writer_batches (writer, number) VALUES (?, ?)",
                         [(writer, number) for number in numbers])

    try:
        rows.write(conn, batch, logs, also=mark)
    except RecordsNotWritten as exc:
        # Everything else is written: only the batches holding what was not are
        # answered with the error.
        failed: dict[int, str] = {}
        for (kind, position, error), name in zip(exc.lost, exc.names):
            for number, _, entries, lines in group:
                size = len(entries) if kind == "entry" else len(lines)
                if position < size:
                    failed.setdefault(number, json.dumps(f"{name} could not be written: "
                                                         f"{type(error).__name__}: {error}"))
                    break
                position -= size
        return [f"{number} error {failed[number]}\n" if number in failed else f"{number} ok {rows.seq}\n"
                for number in numbers]
    except Exception as exc:
        # A store locked past every retry, a full disk: each batch alone would fail the
        # same way, minutes later; every batch is answered with the error now.
        error = json.dumps(f"{type(exc).__name__}: {exc}")
        return [f"{number} error {error}\n" for number in numbers]
    return [f"{number} ok {rows.seq}\n" for number in numbers]


def _checkpoint(conn: Any) -> None:
    try:  # PASSIVE: never waits for readers; what it cannot copy now, a later one does
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception:  # noqa: S110 - the store is busy: the next checkpoint catches up
        pass


def _answer(stdout: Any, line: bytes) -> bool:
    """Answer the flow process; False once it no longer reads (it ended): the batches
    still in the pipe are written all the same."""
    try:
        stdout.write(line)
        stdout.flush()
        return True
    except OSError:
        return False


def _before_fork() -> None:
    spawning.acquire()


def _after_fork() -> None:
    spawning.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
