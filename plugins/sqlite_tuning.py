"""Every tuning constant of the SQLite run store, with the measurement or reason that set it.

The store's modules read their numbers from here (``from .sqlite_tuning import ...``), so
a change of pace is made, and reviewed, in one place. Figures are from the benchmarks
(``benchmarks/``, ``docs/performance.md``) on the project's 2-core test machine;
``git log -S NAME`` finds the commit that set or last changed each one.
"""

from __future__ import annotations

# -- the write queue and its thread (sqlite_queue) -------------------------------------------

#: Seconds the writer thread waits between batches when nothing wakes it. One batch is one
#: transaction: 50 ms turns a busy flow's states into a few hundred-row transactions
#: (cheaper per row than many small ones) while an idle flow's last states still reach
#: the file within a twentieth of a second; ``flush()`` never waits for a tick.
BATCH_SECONDS = 0.05

#: Queued entries (about 5,000 task runs) before a recording thread waits for the writer.
#: Without a bound the writer fell far behind a sequential flow (224,000 queued writes at
#: 100,000 tasks, 154 MB peak); with it, ``bench_memory`` stays flat (65 MB at 100,000
#: tasks, 1.2x of 10,000). The thread waits until the queue is within half of this.
MAX_PENDING = 20_000

#: Queued entries that wake the writer before its next tick: a quarter of MAX_PENDING, so
#: a fast flow's batches stay a few thousand entries and it rarely meets back-pressure.
WAKE_AT = 5_000

# -- the batch writer (sqlite_writer) ---------------------------------------------------------

#: Rows per INSERT statement (fewer when SQLite allows fewer variables). ``executemany``
#: gives up the GIL and takes it back around every row, and waits for it while the flow's
#: threads run Python; binding 500 rows and stepping once waits once per statement.
#: (Set with the plain-value queue entries: ``seq`` 26 -> 23 us per task.)
ROWS_PER_STATEMENT = 500

#: Seconds a connection waits for another process's write lock before SQLite says
#: "database is locked" (the busy timeout).
BUSY_TIMEOUT_SECONDS = 30.0

#: Seconds ``retry_busy`` goes on retrying a write refused as busy or locked (back-off
#: from 10 ms to 0.5 s): four processes writing one file at full speed
#: (``tests/reliability/test_concurrent_writers.py``) never see the error.
BUSY_RETRY_SECONDS = 120.0

# -- the writer process (sqlite_writer_process, sqlite_writers) -------------------------------

#: Entries in one batch that start the writer process under ``HEADWATER_STORE_WRITER=auto``:
#: about a thousand task runs made within one writer tick (50 ms), a pace at which the
#: writer thread's SQLite work slowed the flow's own threads (``submit`` went from about
#: 52 to 25-29 us per task with the process); a smaller flow never pays for starting one.
PROCESS_AT = 3_000

#: Seconds between batches while the writer process writes them: smaller batches keep
#: the child busy while the flow runs, so the batch a flow's final flush waits for is
#: short (that wait fell from 25-90 ms to 10-25 ms at the end of a 10,000-task flow).
PROCESS_TICK = 0.01

#: Seconds without any answer from a child that has batches to confirm before it is
#: taken for stuck: it is killed and the thread writes what it did not confirm. Longer
#: than the child's own wait for another process's write lock (BUSY_RETRY_SECONDS).
ANSWER_TIMEOUT = 300.0

#: Bytes of the child's stdin pipe where the system allows (Linux; 64 KB by default): a
#: batch goes into the pipe at once while the child writes the one before, instead of
#: holding the writer thread, and the child finds the waiting batches together.
PIPE_BYTES = 1 << 20

#: Pages (4 KB) of write-ahead log at which SQLite checkpoints inside a commit of the
#: child (its default is 1,000). The child checkpoints on its own once the flow is idle,
#: so a batch's answer rarely waits for a checkpoint's fsync; SQLite's own stays on, at
#: this larger size, so a never-idle flow or four processes on one file keep the log
#: bounded (about 16 MB).
AUTOCHECKPOINT_PAGES = 4_000

#: Bytes the write-ahead log file is cut back to after a checkpoint (with
#: AUTOCHECKPOINT_PAGES, the log on disk stays about 16 MB).
JOURNAL_LIMIT = 16 << 20

#: Entries beyond which the child stops adding batches already waiting in its pipe to the
#: transaction it is about to write. Larger transactions cost less per row (12.6 us per
#: task run in batches of 6,000 entries against 16.7 in batches of 1,500), so a child that
#: fell behind catches up; the bound keeps one transaction's memory and time small.
MERGE_AT = 6_000

#: Milliseconds without a new batch after which the child takes the flow for idle and
#: checkpoints (batches come every PROCESS_TICK while a flow is busy).
IDLE_MS = 30

# -- crash detection (sqlite_liveness) ---------------------------------------------------------

#: Seconds between two heartbeats of a flow process's store writer: one small UPDATE of
#: its unfinished flow runs, nothing per task run.
HEARTBEAT_SECONDS = 10.0

#: Another host's unfinished run whose process sent no heartbeat for this long is shown
#: Crashed: six missed heartbeats, room for a busy machine and clocks a little apart.
STALE_SECONDS = 60.0

#: A reader that finds dead runs of this host marks them in the store at most this often,
#: so a dashboard polling every second does not write on every read.
MARK_SECONDS = 5.0

# -- values (sqlite_values) ------------------------------------------------------------------------

#: A parameter value whose JSON is longer than this is stored as a short summary, so a
#: flow called with a million-item list keeps a run row of a few hundred bytes.
MAX_PARAMETER_CHARS = 10_000

#: Characters of ``repr()`` kept for a parameter value JSON cannot encode.
MAX_REPR_CHARS = 2_000
