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


# --- the vault: hybrid logical clock and the signed op log ----------------------------------------


class ClockDrift(RemoteProtocolError):
    """A remote hybrid-clock stamp is further ahead of our wall clock than the drift we allow.

    Adopting it would drag our clock (and every stamp we issue after it) into the future, so it is
    refused, never adopted; the clock is left as it was.
    """

    code = "clock_drift"


class CounterOverflow(LocalProtocolError):
    """The hybrid clock's 16-bit counter would pass 0xFFFF within one millisecond.

    An error, not a wrap: a wrapped counter would issue a stamp at or below one already issued. The
    clock is left as it was; it can issue again once the wall clock has moved past its last stamp.
    """

    code = "hlc_overflow"


class UnknownDevice(RemoteProtocolError):
    """An op is signed by a device with no valid certificate (unknown, uncertified or revoked)."""

    code = "unknown_device"


class ChainBreak(RemoteProtocolError):
    """An op does not extend its device's hash chain: a taken sequence number or a wrong `prev`.

    A second, different op at a position already taken is equivocation by the device (or a fork
    of its log after a restore from an old backup); either way it is refused, not merged.
    """

    code = "chain_break"


class SequenceGap(RemoteProtocolError):
    """An op's sequence number is past the next one expected from its device: ops are missing.

    Not a misbehaviour in itself (ops can arrive out of order); the caller parks the op until the
    gap is filled. `expected` is the next sequence number the caller expected, `got` the op's.
    """

    code = "sequence_gap"

    def __init__(self, expected: int, got: int) -> None:
        # The arguments are the exception's args, so it pickles and copies like any other.
        super().__init__(expected, got)
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        return f"sequence gap: expected seq {self.expected}, got {self.got}"


# --- streams: length-prefixed frames and the turn-taking of a session -----------------------------


class FrameTooLarge(MalformedInput):
    """A frame's length prefix says more than the stream allows; refused before its body is kept.

    Raised as soon as the prefix (even a partly received one) passes the limit, so a peer cannot
    make us hold a body we would refuse anyway.
    """

    code = "frame_too_large"


class TruncatedFrame(MalformedInput):
    """The stream ended in the middle of a frame (its length prefix or its body)."""

    code = "truncated"


class UnexpectedMessage(RemoteProtocolError):
    """The peer sent a message the protocol does not allow now: out of turn, or after the end."""

    code = "unexpected_message"


class ClosedEarly(RemoteProtocolError):
    """The peer closed the stream before the protocol reached an end."""

    code = "closed_early"


# --- pairing a new device to an identity ---------------------------------------------------------


class InvalidPairingCode(MalformedInput):
    """Text is not a usable pairing code; the message tells the person what to do about it.

    A pairing code is typed or pasted by a person, so unlike the other errors here its message is
    written for them ("copy it again", "ask for a new code"), not for a developer.
    """

    code = "pairing_code_invalid"


class PairingApproverNotProven(RemoteProtocolError):
    """The approver's MAC is wrong: whoever answered at that address does not know the code.

    Raised on the joining device, before it has proven anything or revealed any key; nothing is
    sent to a peer that fails this check except, at most, a refusal.
    """

    code = "pairing_approver_not_proven"


class PairingProofWrong(RemoteProtocolError):
    """The joining device's MAC is wrong: it does not know the pairing code's secret."""

    code = "pairing_proof_wrong"


class PairingWelcomeMismatch(RemoteProtocolError):
    """The approver welcomed the joining device into an identity other than the code's DID."""

    code = "pairing_welcome_mismatch"


# --- sync: pulling a device's missing ops --------------------------------------------------------


class BatchTooLarge(MalformedInput):
    """A sync Batch holds more ops, or more bytes of ops, than the Pull it answers asked for.

    A subclass of `MalformedInput` (like `FrameTooLarge`) so a codec that meets a Batch over the
    protocol's absolute limits still raises "malformed input", while the client answers
    `too_large`. The client refuses the whole Batch, applying none of it: a server that ignores
    the limits would otherwise make it verify and store more than it chose to hold at once.
    """

    code = "too_large"


# --- mailboxes: sealed envelopes held by relays --------------------------------------------------


class EnvelopeUnreadable(RemoteProtocolError):
    """An envelope does not open into a letter signed for us, whatever the reason.

    One error for every failure (not addressed to this DID, a ciphertext altered or sealed to
    another key, a letter that does not decode or whose signature does not verify) so that
    the recipient answers them all alike; the cause is chained for the log.
    """

    code = "envelope_unreadable"


class EnvelopeTooLarge(MalformedInput):
    """An envelope's ciphertext is over `MAX_ENVELOPE_BYTES`.

    A subclass of `MalformedInput` (like `BatchTooLarge`) so that a codec meeting one still
    raises "malformed input", while the relay answers `too_large`.
    """

    code = "too_large"


class MismatchedAnswer(RemoteProtocolError):
    """A relay's answer does not fit the request it answers: a Stored for another id, more ids
    listed than asked for, envelopes fetched that were not asked for, more acked than sent."""

    code = "mismatched_answer"
