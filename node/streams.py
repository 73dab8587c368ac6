"""The edge of our protocols on py-libp2p streams: reading until EOF, and leaving a stream
without caring whether the other side is still there.

Every protocol session is sans-I/O (protocols/); these are the few awaits that feed it. A
stream's `read` raises `StreamEOF` at the end rather than returning b"" (py-libp2p 0.8.1), which
`read_some` turns back into the b"" the sessions take as EOF.
"""

from __future__ import annotations

import contextlib

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamError

# Leaving a stream (a last refusal, a close, a reset) is bounded: a peer that stopped reading
# must not hold up the handler that is done with it.
LEAVE_TIMEOUT_S = 2.0


async def read_some(stream: INetStream, size: int) -> bytes:
    """Up to `size` bytes from `stream`; b"" at its end."""
    try:
        return await stream.read(size)
    except StreamEOF:
        return b""


async def write_quietly(stream: INetStream, data: bytes) -> None:
    """Best effort: the other side may be gone (a last error frame, for instance)."""
    with trio.move_on_after(LEAVE_TIMEOUT_S), contextlib.suppress(StreamError):
        await stream.write(data)


async def close_quietly(stream: INetStream) -> None:
    with trio.move_on_after(LEAVE_TIMEOUT_S), contextlib.suppress(StreamError):
        await stream.close()


async def reset_quietly(stream: INetStream) -> None:
    with trio.move_on_after(LEAVE_TIMEOUT_S), contextlib.suppress(StreamError):
        await stream.reset()
