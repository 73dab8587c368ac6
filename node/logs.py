"""Logging: structlog, configured once at start-up.

Our own events and the stdlib `logging` records of py-libp2p (and hypercorn) go through one handler
on stderr, so they share one format: JSON lines when stderr is not a terminal (for machines and
log collectors), coloured key=value lines when it is (for people). stdout is kept for the node's
single `ready` line and for command output.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

# py-libp2p logs a great deal at INFO (every dial, every stream); below --log-level debug we only
# pass on its warnings and errors.
LIBRARY_LOGGERS = ("libp2p", "multiaddr", "hypercorn", "async_service")


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    stream = sys.stderr if stream is None else stream
    numeric = logging.getLevelName(level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if stream.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    library_level = numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_LibraryLevelFilter(library_level))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        # `import libp2p` sets propagate=False with no handler, which would lose its records.
        library_logger.propagate = True
        library_logger.handlers[:] = []
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class _LibraryLevelFilter(logging.Filter):
    """Drop library records below `level`; some libp2p modules set their own logger levels."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        return not record.name.startswith(LIBRARY_LOGGERS)
