"""A progress line on stderr for long work, only when stderr is a terminal.

`\r`-rewritten, at most ten times a second; nothing at all when stderr is a file or a pipe, so
logs and CI output stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_INTERVAL_S = 0.1
BAR_WIDTH = 30


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self._drawn_at = 0.0

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn_at < REDRAW_INTERVAL_S and done < self.total:
            return
        self._drawn_at = now
        filled = int(BAR_WIDTH * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        elapsed = now - self.started
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{self.total} {detail} ({elapsed:.0f} s)\x1b[K"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
