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


# The typed errors below are the catalogue of wire error codes raised by `protocols/`; each module
# re-exports the ones it raises, so callers can import them from either place.


class MalformedInput(RemoteProtocolError):
    """Bytes or text from outside cannot be parsed into the value they claim to be."""

    code = "malformed"


class InvalidDid(MalformedInput):
    """A string is not a `did:key` DID of an Ed25519 key; the message says which part is wrong.

    A subclass of `MalformedInput` so that a codec which meets a bad DID inside a record still
    raises "malformed input", while a caller that parses a DID alone can answer `invalid_did`.
    """

    code = "invalid_did"


class InvalidPeerId(MalformedInput):
    """A string is not the libp2p peer id of an Ed25519 key (`12D3KooW...`)."""

    code = "invalid_peer_id"


class BadSignature(RemoteProtocolError):
    """A signed record does not verify under the key it claims to be signed by."""

    code = "bad_signature"
