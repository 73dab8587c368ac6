"""The checking process: it works, and it does not outlive a node killed without closing it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from node.checking_process import CHECKER_NICENESS, PARENT_CHECK_S
from node.op_checker import MAX_PROCESSES, CheckerDied, OpChecker, sync_checking_processes

# A node stand-in: starts the checking process, prints its pid, then waits to be killed.
_PARENT = """
import os, sys, time
import trio
from node.op_checker import OpChecker

async def main():
    checker = OpChecker()
    pid = await checker.result(checker.submit_call(os.getpid))
    print(pid, flush=True)
    time.sleep(60)

trio.run(main)
"""


async def test_a_call_runs_in_another_process() -> None:
    checker = OpChecker()
    try:
        assert await checker.result(checker.submit_call(os.getpid)) != os.getpid()
        assert await checker.result(checker.submit_call(pow, 3, 4)) == 81
    finally:
        checker.close()


async def test_the_checking_process_runs_below_the_node_priority() -> None:
    checker = OpChecker()
    try:
        # os.nice(0) answers the caller's niceness; the kernel caps it at 19.
        expected = min(19, os.nice(0) + CHECKER_NICENESS)
        assert await checker.result(checker.submit_call(os.nice, 0)) == expected
    finally:
        checker.close()


async def test_batches_submitted_together_are_answered_each_by_its_future() -> None:
    checker = OpChecker(processes=2)
    try:
        futures = [checker.submit_call(pow, n, 2) for n in range(20)]
        assert [await checker.result(f) for f in futures] == [n * n for n in range(20)]
    finally:
        checker.close()


async def test_a_killed_checking_process_fails_the_calls_then_another_starts() -> None:
    checker = OpChecker(processes=2)
    try:
        pid = await checker.result(checker.submit_call(os.getpid))
        os.kill(pid, signal.SIGKILL)
        # Whether the pool finds out before the next call (then `submit_call` says so) or
        # during it (then `result` does), the caller gets CheckerDied.
        with pytest.raises(CheckerDied):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await checker.result(checker.submit_call(time.sleep, 0.05))
        assert await checker.result(checker.submit_call(pow, 2, 10)) == 1024
    finally:
        checker.close()


async def test_a_call_of_a_broken_pool_does_not_drop_the_pool_started_since() -> None:
    checker = OpChecker()
    try:
        pid = await checker.result(checker.submit_call(os.getpid))
        stale = checker.submit_call(time.sleep, 5)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(CheckerDied):
            await checker.result(stale)
        # Found broken when called, or when waited for: either way the next call gets a pool.
        try:
            fresh = await checker.result(checker.submit_call(os.getpid))
        except CheckerDied:
            fresh = await checker.result(checker.submit_call(os.getpid))
        with pytest.raises(CheckerDied):
            await checker.result(stale)  # the old pool's call, waited for again
        assert await checker.result(checker.submit_call(os.getpid)) == fresh  # same pool
    finally:
        checker.close()


def test_sync_uses_a_checking_process_per_core_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cores, expected in ((1, 1), (2, 2), (3, 3), (64, MAX_PROCESSES)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, cores=cores: set(range(cores)))
        assert sync_checking_processes() == expected
    monkeypatch.delattr(os, "sched_getaffinity")
    for count, expected in ((None, 1), (2, 2), (64, MAX_PROCESSES)):
        monkeypatch.setattr(os, "cpu_count", lambda count=count: count)
        assert sync_checking_processes() == expected
    with pytest.raises(ValueError, match="at least one process"):
        OpChecker(processes=0)


def test_the_checking_process_exits_when_its_node_is_killed() -> None:
    with subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            os.kill(child, 0)  # it runs
        finally:
            parent.send_signal(signal.SIGKILL)
            parent.wait()
    deadline = time.monotonic() + PARENT_CHECK_S * 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError(f"the checking process {child} outlived its killed parent")


def test_a_checking_process_imports_no_database_nor_network_code() -> None:
    # What a checking process imports to start and to check (node/checking_process.py,
    # store/op_checks.py), in a fresh interpreter: each such import is memory in every one.
    probe = (
        "import sys, node.checking_process, store.op_checks;"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('peewee', 'sqlite3', 'trio', 'structlog', 'libp2p'))))"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    assert answer.stdout.decode().split() == []
