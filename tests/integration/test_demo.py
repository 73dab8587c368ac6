"""scripts/demo.py end to end: it runs its five real nodes through the whole story, exits 0, and
its summary says that every step happened."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
# The demo takes well under a minute on two idle cores; each of its steps gives up after
# --timeout seconds on its own. This bound only catches a demo that hangs outright.
RUN_TIMEOUT_S = 600
STEPS = ("paired", "synced", "friends", "mailed", "received", "published")


def test_the_demo_tells_the_whole_story(tmp_path: Path) -> None:
    # --keep with TMPDIR under tmp_path: a failed run leaves the nodes' logs with the test's.
    result = subprocess.run(
        [sys.executable, str(DEMO), "--keep", "--timeout", "90"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        cwd=DEMO.parents[1],
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = result.stdout.split("\nSummary\n", 1)[1]
    for step in STEPS:
        assert re.search(rf"^  ok +[\d.]+ s  {step} ", summary, re.MULTILINE), output
    assert "every step happened" in summary, output
    assert "FAILED" not in output
