"""The trio side of the vault database: the one path by which trio code reaches SQLite.

SQLite calls block, so they run on threads this module owns, and trio tasks await them:

- one writer thread runs every write, in the order they were submitted, so the node has exactly
  one writer (our writes never wait on each other's locks, and keep their order);
- `READER_THREADS` reader threads run reads, which in WAL mode see the last committed snapshot
  while the writer writes. Reader connections are `PRAGMA query_only`, so a write cannot slip
  past the single writer by way of `read()`.

`write(fn, *args)` and `read(fn, *args)` call `fn(db, *args)` on such a thread, where `db` is the
`peewee.SqliteDatabase`; the store functions take `db` first, so a call reads
`await database.write(record_peer_seen, peer_id, addrs, now_ms)`. The trio side never holds `db`,
so it cannot call SQLite on the event loop by mistake. A write runs in one transaction taken with
the write lock (BEGIN IMMEDIATE); a read runs in one (deferred) transaction, so all its queries
see the same snapshot.

Why threads of our own rather than `trio.to_thread.run_sync(limiter=CapacityLimiter(1))`: trio's
thread cache hands each call to any idle thread, so a limiter gives one writer at a time but not
one writer thread, and peewee's per-thread connections would be opened on cached threads and
never closed. Owning the threads lets each one close its own connection at shutdown (an sqlite3
connection may only be used, and closed, on the thread that opened it).

How an await works: the task puts a job on the pool's queue and parks in
`trio.lowlevel.wait_task_rescheduled`; the thread runs the job and hands the outcome back with
`TrioToken.run_sync_soon(trio.lowlevel.reschedule, ...)`, which never blocks the thread on the
event loop.

Cancellation: a job still queued when its task is cancelled is dropped and never runs. A job
already running has its connection interrupted (sqlite3's interrupt is safe from any thread): its
statement stops, its transaction rolls back, and the task sees `Cancelled` (a statement that
finishes before the interrupt lands just completes, and the task sees `Cancelled` at its next
checkpoint). Either way a job has not run at all, or has run to its end, or was rolled back whole;
a write is one transaction, and its caller, being cancelled, never acknowledged it. This is what
keeps a shutdown under 3 s while a long verify or import batch runs.

Shutdown: `aclose()` refuses new jobs, lets queued ones finish, then each thread closes its own
connection and exits. It is shielded from cancellation: it is bounded by the jobs already queued,
and leaving connections (and the WAL) open is worse than waiting for them.
"""

import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, TypeVarTuple, cast

import outcome
import trio
from peewee import SqliteDatabase

from store.database import open_database, write_transaction
from store.sql import execute_sql
from store.vault_sql import connection

# Readers in WAL mode run in parallel with the writer and with each other. A personal node reads
# little at a time (sync batches, API lookups); two threads keep one slow read from stalling the
# rest while keeping per-connection page caches (up to ~2 MB each) within the node's RSS budget.
READER_THREADS: Final = 2
# A reader's page cache (KiB; SQLite's negative cache_size). The writer keeps the store's 64 MiB
# (store.database), which an import fills; readers mostly scan (a peer catching up reads the
# whole log once), and three connections at 64 MiB each pushed a node serving a 100k-op sync to
# ~300 MB of RSS (scripts/bench_sync.py).
READER_CACHE_KIB: Final = 16 * 1024

# How long aclose waits for running jobs before interrupting them (shutdown must stay < 3 s).
CLOSE_TIMEOUT_S = 1.0

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


# The job the current pool thread is running (for the call to register its on_cancel).
_current = threading.local()


def _interrupt_on_cancel(conn: sqlite3.Connection) -> None:
    job: _Job | None = getattr(_current, "job", None)
    if job is not None:
        job.on_cancel = conn.interrupt


class _Job:
    """One call to run on a pool thread, and the trio task waiting for its outcome."""

    __slots__ = (
        "_cancelled",
        "_fn",
        "_lock",
        "_started",
        "_task",
        "_token",
        "cancel_requested",
        "last",
        "on_cancel",
    )

    def __init__(self, fn: Callable[[], object], *, last: bool = False) -> None:
        self._fn = fn
        self._lock = threading.Lock()  # orders "start running" against "cancel before start"
        self._started = False
        self._cancelled = False
        self._task = trio.lowlevel.current_task()
        self._token = trio.lowlevel.current_trio_token()
        self.last = last  # the thread exits after running it
        # Set by the call once it runs (Database sets its connection's interrupt): what to do
        # when the waiting task is cancelled mid-run.
        self.on_cancel: Callable[[], None] | None = None
        self.cancel_requested = False

    def run(self) -> None:
        """On the pool thread: run the call unless cancelled first, and wake the task."""
        with self._lock:
            if self._cancelled:
                return
            self._started = True
        _current.job = self
        try:
            result = outcome.capture(self._fn)
        finally:
            _current.job = None
        # The run can only have finished if it crashed while the task waited; nobody to wake.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(trio.lowlevel.reschedule, self._task, result)

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        """On the trio thread, when the waiting task is cancelled: drop the job if not started."""
        with self._lock:
            if self._started:
                # Stop the statement (a shutdown must not wait for a long verify or import);
                # run() will reschedule the task with the statement's error, which `run` below
                # turns back into the cancellation.
                self.cancel_requested = True
                if self.on_cancel is not None:
                    self.on_cancel()
                return trio.lowlevel.Abort.FAILED
            self._cancelled = True
            return trio.lowlevel.Abort.SUCCEEDED


class _ThreadPool:
    """`size` threads running jobs from one queue, in order; each exits after a `last` job."""

    def __init__(self, name: str, size: int) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        # Daemon threads: a node that dies without aclose() must still be able to exit. The
        # transaction in flight, if any, is then rolled back by SQLite on the next open.
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            job.run()
            if job.last:
                return

    async def run(self, fn: Callable[[], T], *, last: bool = False) -> T:
        job = _Job(fn, last=last)
        self._jobs.put(job)
        try:
            return cast(T, await trio.lowlevel.wait_task_rescheduled(job.abort))
        except BaseException:
            if job.cancel_requested:
                # Interrupted because we were cancelled: report the cancellation, not the
                # "interrupted" error (the checkpoint raises trio.Cancelled).
                await trio.lowlevel.checkpoint()
            raise

    async def stop(self, last: Callable[[], object]) -> None:
        """Run `last` once on every thread, after the jobs already queued, then join them.

        Each thread takes exactly one `last` job and exits, so `size` of them reach every thread.
        Not cancellable.
        """
        with trio.CancelScope(shield=True):
            for _ in self._threads:
                await self.run(last, last=True)
            for thread in self._threads:
                await trio.to_thread.run_sync(thread.join)


class Database(trio.abc.AsyncResource):
    """The vault database, reached from trio: one writer thread and a few reader threads.

    Open with `async with await Database.open(path) as database:` (like `trio.open_file`).
    """

    def __init__(self, db: SqliteDatabase, writer: _ThreadPool, readers: _ThreadPool) -> None:
        """Use `Database.open`."""
        self._db = db
        self._writer = writer
        self._readers = readers
        self._closed = False
        # Every thread's sqlite3 connection, so that `interrupt` can reach a running statement.
        self._connections: set[sqlite3.Connection] = set()

    @classmethod
    async def open(cls, path: Path, *, reader_threads: int = READER_THREADS) -> "Database":
        """Open (creating and migrating as needed) the database at `path`.

        Raises what `store.database.open_database` raises (`SchemaTooNew`, `DatabaseCorrupt`,
        `DatabaseUnavailable`), after stopping the thread it opened it on.
        """
        writer = _ThreadPool("vivim-db-writer", 1)
        try:
            # On the writer thread, whose connection stays open for the writes that follow.
            db = await writer.run(functools.partial(open_database, path))
        except BaseException:
            await writer.stop(last=_nothing)  # open_database closed its connection already
            raise
        readers = _ThreadPool("vivim-db-reader", reader_threads)
        return cls(db, writer, readers)

    async def write(self, fn: Callable[[SqliteDatabase, *Ts], T], *args: *Ts) -> T:
        """Run `fn(db, *args)` on the writer thread, in one write transaction; return its result.

        Writes run one at a time, in the order submitted. See the module docstring for what
        cancellation does.
        """
        self._check_open()
        db = self._db

        def job() -> T:
            conn = connection(db)
            self._connections.add(conn)
            _interrupt_on_cancel(conn)
            with write_transaction(db):
                return fn(db, *args)

        return await self._writer.run(job)

    async def read(self, fn: Callable[[SqliteDatabase, *Ts], T], *args: *Ts) -> T:
        """Run `fn(db, *args)` on a reader thread, in one read transaction; return its result.

        `fn` must not write: reader connections are query-only, so a write raises
        `peewee.OperationalError`.
        """
        self._check_open()
        db = self._db

        def job() -> T:
            if db.is_closed():  # this thread's first read
                db.connect()
                execute_sql(db, "PRAGMA query_only = 1")
                execute_sql(db, f"PRAGMA cache_size = -{READER_CACHE_KIB:d}")
                self._connections.add(connection(db))
            _interrupt_on_cancel(connection(db))
            with db.atomic():
                return fn(db, *args)

        return await self._readers.run(job)

    def interrupt(self) -> None:
        """Abort the statements running now (sqlite3's interrupt is safe from any thread).

        For shutdown: a long read (verify) or write (an import batch) would otherwise hold the
        process for as long as it runs. An interrupted write rolls back whole, and its caller,
        being cancelled, never acknowledged it, so nothing acknowledged is lost.
        """
        for conn in list(self._connections):
            conn.interrupt()

    async def aclose(self) -> None:
        """Finish the queued jobs, close every thread's connection and stop the threads.

        Idempotent; shielded from cancellation (see the module docstring). Waits at most
        CLOSE_TIMEOUT_S for the threads: if a job still runs then, it is interrupted; the threads
        are daemons, so a thread that still does not finish cannot keep the process alive.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        db = self._db
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            await self._readers.stop(last=db.close)
            await self._writer.stop(last=db.close)
        if scope.cancelled_caught:
            self.interrupt()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the database is closed")


def _nothing() -> None:
    pass
