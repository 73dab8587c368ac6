"""What an op-checking process (node/op_checker.py) runs first: it lowers its priority below the
node's, and watches the node.

A module of its own, importing only the standard library: a checking process imports the module
of its start function, and node/op_checker.py imports trio and the store.

The watch: if the node dies without closing its checking processes (SIGKILL, a crash), each
exits within PARENT_CHECK_S instead of lingering with its memory.
"""

import contextlib
import os
import threading
import time

PARENT_CHECK_S = 1.0
# How much lower the checking processes run than the node (os.nice: 0 to 19, higher is lower).
CHECKER_NICENESS = 10


def start_checking_process(parent_pid: int) -> None:
    """In a checking process, first: run below the node's priority, and watch the node."""
    # Where lowering it is not allowed, check at the node's priority: only slower overall.
    with contextlib.suppress(OSError):
        os.nice(CHECKER_NICENESS)
    _watch_parent(parent_pid)


def _watch_parent(parent_pid: int) -> None:
    """Exit once `parent_pid` is no longer our parent (it died and we were re-parented), from a
    daemon thread that looks every PARENT_CHECK_S."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="vivim-parent-watch", daemon=True).start()
