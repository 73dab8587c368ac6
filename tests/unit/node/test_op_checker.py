"""The checking process: it works, and it does not outlive a node killed without closing it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from node.op_checker import PARENT_CHECK_S, OpChecker

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
