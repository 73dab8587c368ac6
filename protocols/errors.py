"""Errors raised by the pure protocol layer.

A `RemoteProtocolError` means the peer (or a file, or a record from elsewhere) sent something wrong;
a `LocalProtocolError` means our own code asked for something impossible. Each carries the wire
error code it is answered with, so the edge can reply without a lookup table of its own.
"""


class ProtocolError(Exception):
    """Base of every error raised by `protocols/`."""

    code: str = "protocol_error"


class RemoteProtocolError(ProtocolError):
    """Input from outside (a peer, a file, a stored record) is malformed or invalid."""

    code = "bad_request"


class LocalProtocolError(ProtocolError):
    """Our side tried to do something the protocol does not allow (a bug of ours)."""

    code = "internal_error"
