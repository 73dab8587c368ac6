"""A second process that checks received ops (for sync, and letters from relays for the
mailbox): the checks that need no vault.

Decoding an op, checking its signature by its device's key and its payload rules
(store.op_checks.check_wires) are about half of what applying a received op costs. They are
pure CPU, so they run here, on the other core, ahead of the writer that applies (node/sync.py,
node/mailbox.py): measured with scripts/bench_sync.py, 2.8k -> 4.7k ops/s. A thread would not
do: the GIL keeps Python code to one core.

Sync uses one checking process per core (`sync_checking_processes`, at most MAX_PROCESSES), at
a lower priority (CHECKER_NICENESS). The writer applying the checked batches is the one serial
stage: at normal priority it gets a core whenever it can go on, and the checkers fill what is
left, ahead of it. Measured with bench_sync on this 2-core machine, alternating runs: one
checker kept 1.72-1.76 cores busy, two at the same priority as the node 1.62 (the writer
starved), two at niceness 10 1.86-1.87. They start on first use; each imports only what
the checks need (node/checking_process.py, store/op_checks.py), ~38 MB resident, and exits if
the node dies without closing it.
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar, TypeVarTuple

import trio

from node.checking_process import start_checking_process
from node.errors import NodeError
from store import op_checks

# More checkers than this would wait for the one writer anyway, and each holds ~38 MB.
MAX_PROCESSES = 4

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class CheckerDied(NodeError):
    """The checking process ended; the sync that needed it fails and the next starts another."""


def sync_checking_processes() -> int:
    """How many checking processes sync uses: one per core this process may run on (its CPU
    affinity, which a container's cpuset narrows, where the platform tells it), at most
    MAX_PROCESSES."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, min(MAX_PROCESSES, cores))


class OpChecker:
    """The checking processes (`processes` of them, at CHECKER_NICENESS), started on first use
    ("spawn": a fresh interpreter, whatever threads this one has) and again after one died.
    Batches submitted together are checked in parallel; each future answers for its own."""

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError(f"a checker needs at least one process, got {processes}")
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        # The pool each waiting call went to: a call of a pool that broke must not make us let go
        # of the pool started since (several syncs share a checker).
        self._pool_of_call: weakref.WeakKeyDictionary[Future[Any], ProcessPoolExecutor] = (
            weakref.WeakKeyDictionary()
        )

    def submit(self, wires: tuple[bytes, ...]) -> Future[op_checks.CheckedBatch]:
        return self.submit_call(op_checks.check_wires, wires)

    def submit_call(self, fn: Callable[[*Ts], T], *args: *Ts) -> Future[T]:
        """Start `fn(*args)` in the checking process (a pure, picklable function and arguments);
        `result` waits for it. `CheckerDied` if a process of the pool died before (the pool is
        broken): the next call starts another."""
        pool = self._pool_of()
        try:
            future = pool.submit(fn, *args)
        except BrokenProcessPool as err:
            raise self._died(pool) from err
        self._pool_of_call[future] = pool
        return future

    def _pool_of(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_checking_process,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def result(self, future: Future[T]) -> T:
        try:
            # trio-typing's stubs predate abandon_on_cancel (trio >= 0.23 has it).
            return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)  # type: ignore[call-arg]
        except BrokenProcessPool as err:
            raise self._died(self._pool_of_call.get(future)) from err

    def _died(self, pool: ProcessPoolExecutor | None) -> CheckerDied:
        """Let go of `pool`, broken, if it is still ours (its other processes are ended by the
        pool itself)."""
        if pool is self._pool:
            self._pool = None
        return CheckerDied("an op-checking process died; the next sync starts another")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
