"""The pairing protocol: the code's text, the messages' codecs, the two sessions run in pairs."""

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import nacl.public
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import did_from_ed25519_public_key
from protocols.errors import (
    InvalidPeerId,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
)
from protocols.framing import FrameTooLarge, TruncatedFrame, encode_frame, encode_varint
from protocols.pairing import (
    MAX_CODE_TEXT_LENGTH,
    MAX_FRAME,
    NEED_DATA,
    PROTOCOL_ID,
    TERMINAL_STATES,
    TRANSITIONS,
    ApproverProven,
    ApproverSession,
    Challenge,
    ClosedEarly,
    Event,
    Hello,
    HelloReceived,
    InvalidPairingCode,
    JoinerProven,
    JoinerSession,
    Message,
    NeedData,
    PairingApproverNotProven,
    PairingCode,
    PairingProofWrong,
    PairingWelcomeMismatch,
    Proof,
    Refusal,
    Refused,
    Role,
    State,
    UnexpectedMessage,
    Welcome,
    decode_message,
)
from protocols.peer_id import peer_id_from_ed25519_public_key


def peer_id(seed: int) -> str:
    return peer_id_from_ed25519_public_key(
        bytes(nacl.signing.SigningKey(bytes([seed]) * 32).verify_key)
    )


DID = did_from_ed25519_public_key(bytes(nacl.signing.SigningKey(bytes(32)).verify_key))
OTHER_DID = did_from_ed25519_public_key(bytes(nacl.signing.SigningKey(b"\x09" * 32).verify_key))
APPROVER = peer_id(1)
JOINER = peer_id(2)
INTRUDER = peer_id(3)
SECRET = b"\x11" * 32
OTHER_SECRET = b"\x12" * 32
JOINER_NONCE = b"\x21" * 32
APPROVER_NONCE = b"\x31" * 32
BOX_PUBLIC_KEY = bytes(nacl.public.PrivateKey(b"\x41" * 32).public_key)
CODE = PairingCode(
    did=DID,
    approver=APPROVER,
    addrs=("/ip4/192.0.2.1/tcp/4001", "/ip6/2001:db8::1/udp/4001/quic-v1"),
    code_id=b"\x51" * 8,
    secret=SECRET,
    expires_at_ms=1_700_000_600_000,
)
WELCOME = Welcome(
    did=DID,
    identity_rotations=(),
    encryption_key_binding=b"binding wire bytes",
    certificate=b"certificate wire bytes",
    chain=(b"approver certificate wire bytes",),
    sealed_encryption_key=b"sealed key",
)
REFUSAL = Refusal(code="pairing_code_used", message="this code was used already: ask for a new one")


def new_joiner(code: PairingCode = CODE, joiner: str = JOINER) -> JoinerSession:
    return JoinerSession(code, joiner, JOINER_NONCE, BOX_PUBLIC_KEY)


def new_approver(joiner: str = JOINER) -> ApproverSession:
    return ApproverSession(APPROVER, joiner)


def events_after(
    session: JoinerSession | ApproverSession, data: bytes, chunk: int = 0
) -> list[Event]:
    """Feed `data` (in pieces of `chunk` bytes, 0 for whole), draining events after each piece."""
    events: list[Event] = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        session.receive_data(data[start : start + step])
        while not isinstance(event := session.next_event(), NeedData):
            events.append(event)
    return events


def expected_mac(secret: bytes, role: str, *, joiner: str = JOINER) -> bytes:
    """The MAC computed from the protocol's definition, independently of the sessions."""
    transcript = {
        "type": "vivim.pair.mac.v1",
        "role": role,
        "code_id": CODE.code_id,
        "approver": APPROVER,
        "joiner": joiner,
        "joiner_nonce": JOINER_NONCE,
        "approver_nonce": APPROVER_NONCE,
        "box_public_key": BOX_PUBLIC_KEY,
    }
    return hmac.new(secret, canonical_encode(transcript), hashlib.sha256).digest()


def framed(message: Message) -> bytes:
    return encode_frame(message.to_wire(), MAX_FRAME)


HELLO = Hello(code_id=CODE.code_id, joiner_nonce=JOINER_NONCE, box_public_key=BOX_PUBLIC_KEY)
CHALLENGE = Challenge(approver_nonce=APPROVER_NONCE, mac=expected_mac(SECRET, "approver"))
PROOF = Proof(mac=expected_mac(SECRET, "joiner"))


# --- the pairing code -----------------------------------------------------------------------------


def code_text_of(fields: object) -> str:
    """A code's text for any CBOR value, with a correct checksum: to reach the field checks."""
    cbor = canonical_encode(fields)
    data = cbor + hashlib.sha256(cbor).digest()[:4]
    return "vivim-pair:" + base64.b32encode(data).decode().rstrip("=").lower()


def code_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "type": "vivim.pair.code.v1",
        "did": CODE.did,
        "approver": CODE.approver,
        "addrs": list(CODE.addrs),
        "code_id": CODE.code_id,
        "secret": CODE.secret,
        "expires_at_ms": CODE.expires_at_ms,
    }
    fields.update(changes)
    return {name: value for name, value in fields.items() if value is not None}


def test_code_text_round_trip() -> None:
    text = CODE.to_text()
    assert text.startswith("vivim-pair:")
    assert text == text.lower()
    assert PairingCode.from_text(text) == CODE
    assert code_text_of(code_fields()) == text


def test_code_text_is_accepted_with_surrounding_whitespace_and_in_upper_case() -> None:
    text = CODE.to_text()
    assert PairingCode.from_text(f"  \n{text}\t ") == CODE
    assert PairingCode.from_text(text.upper()) == CODE


addrs = st.lists(st.from_regex(r"/[!-~]{0,255}", fullmatch=True), min_size=1, max_size=8)
codes = st.builds(
    PairingCode,
    did=st.binary(min_size=32, max_size=32).map(did_from_ed25519_public_key),
    approver=st.binary(min_size=32, max_size=32).map(peer_id_from_ed25519_public_key),
    addrs=addrs.map(tuple),
    code_id=st.binary(min_size=8, max_size=8),
    secret=st.binary(min_size=32, max_size=32),
    expires_at_ms=st.integers(min_value=0, max_value=2**63 - 1),
)


@given(codes)
def test_code_text_round_trip_of_any_code(code: PairingCode) -> None:
    assert PairingCode.from_text(code.to_text()) == code


def test_the_longest_code_fits_the_text_limit() -> None:
    longest = dataclasses.replace(CODE, addrs=("/" + "x" * 255,) * 8, expires_at_ms=2**63 - 1)
    assert len(longest.to_text()) <= MAX_CODE_TEXT_LENGTH
    assert PairingCode.from_text(longest.to_text()) == longest


def test_the_secret_stays_out_of_the_repr() -> None:
    assert SECRET.hex() not in repr(CODE)
    assert repr(SECRET) not in repr(CODE)


def test_expiry() -> None:
    assert not CODE.is_expired(CODE.expires_at_ms - 1)
    assert CODE.is_expired(CODE.expires_at_ms)


def one_character_changed(text: str) -> str:
    at = len(text) // 2
    return text[:at] + ("a" if text[at] != "a" else "b") + text[at + 1 :]


MALFORMED_CODES: list[tuple[str, str]] = [
    ("", "must start with vivim-pair:"),
    ("vivim-pear:" + CODE.to_text()[11:], "must start with vivim-pair:"),
    ("https://example.com/" + CODE.to_text(), "must start with vivim-pair:"),
    ("vivim-pair:" + "a" * MAX_CODE_TEXT_LENGTH, "longer than"),
    (CODE.to_text() + "1", "damaged"),  # not a base32 character
    (CODE.to_text()[:20] + " " + CODE.to_text()[20:], "damaged"),
    (CODE.to_text() + "=", "damaged"),
    (CODE.to_text()[:-1], "damaged"),  # cut short
    ("vivim-pair:", "damaged"),
    ("vivim-pair:aaaaaaaa", "checksum does not match"),
    (one_character_changed(CODE.to_text()), "checksum does not match"),
    (code_text_of([1, 2]), "not valid"),
    (code_text_of(code_fields(type="vivim.pair.code.v2")), "not valid"),
    (code_text_of(code_fields(type=None)), "not valid"),
    (code_text_of(code_fields(secret=None)), "missing"),
    (code_text_of(code_fields(extra=1)), "unexpected"),
    (code_text_of(code_fields(did="did:key:z6Mkbad")), "not valid"),
    (code_text_of(code_fields(did=7)), "did is a int"),
    (code_text_of(code_fields(approver=DID)), "not valid"),
    (code_text_of(code_fields(addrs=[])), "expected 1 to 8"),
    (code_text_of(code_fields(addrs=["/ip4/192.0.2.1/tcp/1"] * 9)), "expected 1 to 8"),
    (code_text_of(code_fields(addrs="/ip4/192.0.2.1/tcp/1")), "expected a list"),
    (code_text_of(code_fields(addrs=["ip4/192.0.2.1"])), "not a multiaddr"),
    (code_text_of(code_fields(addrs=["/dns/" + "x" * 252])), "more than 256"),
    (code_text_of(code_fields(addrs=["/dns/with space"])), "not a multiaddr"),
    (code_text_of(code_fields(addrs=[b"/ip4"])), "expected str"),
    (code_text_of(code_fields(code_id=b"\x00" * 7)), "code_id is 7 bytes"),
    (code_text_of(code_fields(secret="secret")), "secret is a str"),
    (code_text_of(code_fields(expires_at_ms=-1)), "expires_at_ms is -1"),
    (code_text_of(code_fields(expires_at_ms=True)), "expires_at_ms is a bool"),
    (code_text_of(code_fields(expires_at_ms=2**63)), "expires_at_ms is"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED_CODES)
def test_malformed_codes_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidPairingCode, match=message) as info:
        PairingCode.from_text(text)
    assert info.value.code == "pairing_code_invalid"
    assert isinstance(info.value, MalformedInput)


def test_non_zero_padding_bits_are_refused() -> None:
    text = CODE.to_text()
    body = text[len("vivim-pair:") :]
    assert len(body) % 8 != 0  # so the last character carries unused bits
    last = "abcdefghijklmnopqrstuvwxyz234567".index(body[-1])
    tampered = text[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last | 1]
    assert tampered != text
    with pytest.raises(InvalidPairingCode, match="damaged"):
        PairingCode.from_text(tampered)


def test_a_code_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidPairingCode, match="not a vivim pairing code"):
        PairingCode.from_text(b"vivim-pair:" + CODE.to_text().encode())  # type: ignore[arg-type]


def test_constructing_a_bad_code_is_refused() -> None:
    with pytest.raises(InvalidPairingCode, match="addrs is a list"):
        dataclasses.replace(CODE, addrs=list(CODE.addrs))  # type: ignore[arg-type]


# --- message codecs -------------------------------------------------------------------------------

MESSAGES: list[Message] = [HELLO, CHALLENGE, PROOF, WELCOME, REFUSAL]
MESSAGE_IDS = ["hello", "challenge", "proof", "welcome", "refusal"]


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
def test_wire_is_the_type_and_every_field(message: Message) -> None:
    fields = canonical_decode(message.to_wire())
    assert isinstance(fields, dict)
    assert fields.pop("type") == f"vivim.pair.{type(message).__name__.lower()}.v1"
    assert fields.keys() == {field.name for field in dataclasses.fields(message)}
    assert decode_message(message.to_wire()) == message
    assert type(message).from_wire(message.to_wire()) == message


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
def test_every_truncation_and_trailing_bytes_are_refused(message: Message) -> None:
    wire = message.to_wire()
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            decode_message(wire[:length])
    for trailing in (b"\x00", wire):
        with pytest.raises(MalformedInput, match="trailing"):
            decode_message(wire + trailing)


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
def test_from_wire_of_another_message_type_is_refused(message: Message) -> None:
    for other in MESSAGES:
        if type(other) is not type(message):
            with pytest.raises(MalformedInput, match="expected a"):
                type(message).from_wire(other.to_wire())


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
def test_missing_and_extra_fields_are_refused(message: Message) -> None:
    fields = canonical_decode(message.to_wire())
    assert isinstance(fields, dict)
    for name in fields:
        if name != "type":
            with pytest.raises(MalformedInput, match="missing"):
                decode_message(canonical_encode({k: v for k, v in fields.items() if k != name}))
    with pytest.raises(MalformedInput, match="unexpected"):
        decode_message(canonical_encode({**fields, "extra": 1}))


@pytest.mark.parametrize("value", [[], 1, "hello", None, {"type": 1}, {"type": "vivim.pair.x.v1"}])
def test_values_that_are_not_messages_are_refused(value: object) -> None:
    with pytest.raises(MalformedInput, match="not a pairing message"):
        decode_message(canonical_encode(value))


def wire_with(original: Message, **changes: object) -> bytes:
    fields = canonical_decode(original.to_wire())
    assert isinstance(fields, dict)
    return canonical_encode({**fields, **changes})


WRONG_FIELDS: list[tuple[Message, dict[str, Any], str]] = [
    (HELLO, {"code_id": b"\x00" * 9}, "code_id is 9 bytes"),
    (HELLO, {"joiner_nonce": "nonce"}, "joiner_nonce is a str"),
    (HELLO, {"box_public_key": b"\x00" * 31}, "box_public_key is 31 bytes"),
    (HELLO, {"box_public_key": b"\x00" * 32}, "low-order point"),
    (HELLO, {"box_public_key": b"\x01" + b"\x00" * 31}, "low-order point"),
    (CHALLENGE, {"approver_nonce": b""}, "approver_nonce is 0 bytes"),
    (CHALLENGE, {"mac": [b"\x00" * 32]}, "mac is a tuple"),
    (PROOF, {"mac": b"\x00" * 16}, "mac is 16 bytes"),
    (WELCOME, {"did": "did:key:z6Mkbad"}, "multicodec|base58|key"),
    (WELCOME, {"did": 5}, "did is a int"),
    (WELCOME, {"identity_rotations": b"record"}, "expected a list"),
    (WELCOME, {"identity_rotations": ["record"]}, "holds a str, expected bytes"),
    (WELCOME, {"encryption_key_binding": b""}, "empty byte string"),
    (WELCOME, {"certificate": None}, "holds a NoneType"),
    (WELCOME, {"chain": [b"certificate"] * 17}, "more than 16"),
    (WELCOME, {"chain": [b""]}, "empty byte string"),
    (WELCOME, {"sealed_encryption_key": "key"}, "holds a str"),
    (REFUSAL, {"code": "Pairing Code Used"}, "not like"),
    (REFUSAL, {"code": "x" * 65}, "more than 64"),
    (REFUSAL, {"code": ""}, "not like"),
    (REFUSAL, {"message": "x" * 1001}, "more than 1000"),
    (REFUSAL, {"message": b"bytes"}, "message is a bytes"),
]


@pytest.mark.parametrize(("message", "changes", "match"), WRONG_FIELDS)
def test_wrong_field_values_are_refused(
    message: Message, changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(MalformedInput, match=match):
        decode_message(wire_with(message, **changes))


def exactly(length: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=length, max_size=length)


blobs = st.binary(min_size=1, max_size=40)
messages = st.one_of(
    st.builds(
        Hello,
        code_id=exactly(8),
        joiner_nonce=exactly(32),
        box_public_key=exactly(32).map(lambda seed: bytes(nacl.public.PrivateKey(seed).public_key)),
    ),
    st.builds(Challenge, approver_nonce=exactly(32), mac=exactly(32)),
    st.builds(Proof, mac=exactly(32)),
    st.builds(
        Welcome,
        did=exactly(32).map(did_from_ed25519_public_key),
        identity_rotations=st.lists(blobs, max_size=4).map(tuple),
        encryption_key_binding=blobs,
        certificate=blobs,
        chain=st.lists(blobs, max_size=16).map(tuple),
        sealed_encryption_key=blobs,
    ),
    st.builds(
        Refusal,
        code=st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
        message=st.text(max_size=1000),
    ),
)


@given(messages)
def test_message_round_trip(message: Message) -> None:
    wire = message.to_wire()
    assert decode_message(wire) == message
    assert canonical_encode(canonical_decode(wire)) == wire


# --- the two sessions joined by an in-memory link -------------------------------------------------


def test_protocol_id() -> None:
    assert PROTOCOL_ID == "/vivim/pair/1.0.0"


@pytest.mark.parametrize("chunk", [0, 1, 7], ids=["whole", "byte_by_byte", "chunks_of_7"])
def test_a_full_pairing(chunk: int) -> None:
    joiner, approver = new_joiner(), new_approver()
    assert joiner.state is approver.state is State.AWAIT_HELLO

    assert events_after(approver, joiner.start(), chunk) == [HelloReceived(hello=HELLO)]
    assert joiner.state is approver.state is State.AWAIT_CHALLENGE

    challenge = approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE)
    assert challenge == framed(CHALLENGE)  # the MAC is the protocol's, computed independently
    assert events_after(joiner, challenge, chunk) == [ApproverProven()]
    assert joiner.state is approver.state is State.AWAIT_PROOF

    proof = joiner.proof()
    assert proof == framed(PROOF)
    assert events_after(approver, proof, chunk) == [JoinerProven()]
    assert joiner.state is approver.state is State.AWAIT_WELCOME

    assert events_after(joiner, approver.send(WELCOME), chunk) == [WELCOME]
    assert joiner.state is approver.state is State.DONE

    for session in (joiner, approver):  # each closes its side: a clean end
        session.receive_data(b"")
        assert session.next_event() is NEED_DATA


def test_an_approver_with_another_secret_is_not_proven_to_the_joiner() -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    challenge = approver.challenge(secret=OTHER_SECRET, approver_nonce=APPROVER_NONCE)
    with pytest.raises(PairingApproverNotProven) as info:
        events_after(joiner, challenge)
    assert info.value.code == "pairing_approver_not_proven"
    assert joiner.state is State.AWAIT_CHALLENGE
    with pytest.raises(PairingApproverNotProven):  # and so it stays
        joiner.next_event()
    with pytest.raises(LocalProtocolError):
        joiner.proof()
    # The joiner may still say why it stops.
    refusal = joiner.send(Refusal(code=info.value.code, message=str(info.value)))
    assert joiner.state is State.REFUSED
    assert events_after(approver, refusal) == [
        Refused(code=info.value.code, message=str(info.value))
    ]
    assert approver.state is State.REFUSED


def test_a_joiner_with_a_wrong_secret_is_refused_by_the_approver() -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    events_after(joiner, approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE))
    wrong_proof = framed(Proof(mac=expected_mac(OTHER_SECRET, "joiner")))
    with pytest.raises(PairingProofWrong) as info:
        events_after(approver, wrong_proof)
    assert info.value.code == "pairing_proof_wrong"
    assert approver.state is State.AWAIT_PROOF
    refusal = approver.send(Refusal(code=info.value.code, message="wrong code"))
    assert events_after(joiner, refusal) == [
        Refused(code="pairing_proof_wrong", message="wrong code")
    ]
    assert joiner.state is approver.state is State.REFUSED


def test_a_joiner_whose_code_has_another_secret_detects_it_first() -> None:
    joiner = new_joiner(dataclasses.replace(CODE, secret=OTHER_SECRET))
    approver = new_approver()
    events_after(approver, joiner.start())
    with pytest.raises(PairingApproverNotProven):
        events_after(joiner, approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE))


def test_the_approvers_mac_reflected_back_is_not_a_proof() -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    events_after(joiner, approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE))
    with pytest.raises(PairingProofWrong):
        events_after(approver, framed(Proof(mac=CHALLENGE.mac)))


def test_a_challenge_relayed_for_another_joiner_does_not_prove_the_approver() -> None:
    # The approver talks to an intruder, who forwards the joiner's Hello and the approver's
    # Challenge: that Challenge's MAC names the intruder, so the joiner refuses it.
    joiner, approver = new_joiner(), new_approver(joiner=INTRUDER)
    events_after(approver, joiner.start())
    challenge = approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE)
    with pytest.raises(PairingApproverNotProven):
        events_after(joiner, challenge)


@pytest.mark.parametrize(
    "code", ["pairing_code_unknown", "pairing_code_expired", "pairing_code_used"]
)
def test_the_approver_refuses_a_code(code: str) -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    refusal = approver.send(Refusal(code=code, message="ask for a new code"))
    assert approver.state is State.REFUSED
    assert events_after(joiner, refusal) == [Refused(code=code, message="ask for a new code")]
    assert joiner.state is State.REFUSED
    joiner.receive_data(b"")
    assert joiner.next_event() is NEED_DATA


def test_the_approver_may_refuse_a_proven_joiner() -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    events_after(joiner, approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE))
    events_after(approver, joiner.proof())
    assert events_after(joiner, approver.send(REFUSAL)) == [
        Refused(code=REFUSAL.code, message=REFUSAL.message)
    ]


def test_a_welcome_into_another_identity_is_refused() -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    events_after(joiner, approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE))
    events_after(approver, joiner.proof())
    with pytest.raises(PairingWelcomeMismatch) as info:
        events_after(joiner, approver.send(dataclasses.replace(WELCOME, did=OTHER_DID)))
    assert info.value.code == "pairing_welcome_mismatch"
    assert joiner.state is State.AWAIT_WELCOME


def test_sending_out_of_turn_is_a_local_error_and_changes_nothing() -> None:
    joiner, approver = new_joiner(), new_approver()
    with pytest.raises(LocalProtocolError, match="not proven yet"):
        joiner.proof()
    with pytest.raises(LocalProtocolError, match="no Hello"):
        approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE)
    with pytest.raises(LocalProtocolError, match="may not send"):
        approver.send(WELCOME)
    with pytest.raises(LocalProtocolError, match="may not send"):
        joiner.send(WELCOME)
    with pytest.raises(LocalProtocolError, match="session method"):
        joiner.send(HELLO)  # type: ignore[arg-type]
    assert joiner.state is approver.state is State.AWAIT_HELLO
    joiner.start()
    with pytest.raises(LocalProtocolError, match="may not send"):
        joiner.start()
    assert joiner.state is State.AWAIT_CHALLENGE


def test_a_welcome_too_large_for_a_frame_is_a_local_error() -> None:
    joiner, approver = new_joiner(), new_approver()
    events_after(approver, joiner.start())
    events_after(joiner, approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE))
    events_after(approver, joiner.proof())
    with pytest.raises(LocalProtocolError, match="over the limit"):
        approver.send(dataclasses.replace(WELCOME, certificate=bytes(MAX_FRAME)))
    assert approver.state is State.AWAIT_WELCOME


@pytest.mark.parametrize(
    "make",
    [
        lambda: JoinerSession(CODE, JOINER, b"short", BOX_PUBLIC_KEY),
        lambda: JoinerSession(CODE, JOINER, JOINER_NONCE, b""),
        lambda: JoinerSession(CODE, JOINER, JOINER_NONCE, bytes(32)),  # a low-order point
        lambda: JoinerSession(CODE, "not a peer id", JOINER_NONCE, BOX_PUBLIC_KEY),
        lambda: JoinerSession(CODE, APPROVER, JOINER_NONCE, BOX_PUBLIC_KEY),
        lambda: JoinerSession(CODE.to_text(), JOINER, JOINER_NONCE, BOX_PUBLIC_KEY),
        lambda: ApproverSession("not a peer id", JOINER),
        lambda: ApproverSession(APPROVER, APPROVER),
    ],
)
def test_impossible_arguments_are_a_local_error(make: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError):
        make()


def test_challenge_arguments_are_checked() -> None:
    approver = new_approver()
    events_after(approver, new_joiner().start())
    with pytest.raises(LocalProtocolError, match="secret must be 32 bytes"):
        approver.challenge(secret=b"short", approver_nonce=APPROVER_NONCE)
    assert approver.state is State.AWAIT_CHALLENGE


def test_a_joiner_peer_id_that_is_not_ed25519_is_a_remote_error() -> None:
    # The remote peer id comes from Noise: a peer with an RSA key is input from outside.
    with pytest.raises(InvalidPeerId):
        ApproverSession(APPROVER, "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")


# --- every (state, input) pair --------------------------------------------------------------------

EOF = b""
FRAMES = {
    "hello": framed(HELLO),
    "challenge": framed(CHALLENGE),
    "proof": framed(PROOF),
    "welcome": framed(WELCOME),
    "refusal": framed(REFUSAL),
}
MESSAGE_OF = dict(zip(FRAMES, MESSAGES, strict=True))
# (bytes fed, then EOF or not) that are no message at all.
OTHER_INPUTS: dict[str, tuple[bytes, bool]] = {
    "garbage_frame": (encode_frame(b"\xffgarbage", MAX_FRAME), False),
    "unknown_type": (encode_frame(canonical_encode({"type": "vivim.pair.x.v1"}), MAX_FRAME), False),
    "non_minimal_prefix": (b"\x80\x00", False),
    "oversized_frame": (encode_varint(MAX_FRAME + 1), False),
    "truncated_frame": (framed(HELLO)[:10], True),
    "eof": (EOF, True),
}


def joiner_in(state: State) -> JoinerSession:
    joiner = new_joiner()
    steps: dict[State, list[Callable[[], object]]] = {
        State.AWAIT_HELLO: [],
        State.AWAIT_CHALLENGE: [joiner.start],
        State.AWAIT_PROOF: [joiner.start, lambda: events_after(joiner, FRAMES["challenge"])],
        State.AWAIT_WELCOME: [
            joiner.start,
            lambda: events_after(joiner, FRAMES["challenge"]),
            joiner.proof,
        ],
        State.DONE: [
            joiner.start,
            lambda: events_after(joiner, FRAMES["challenge"]),
            joiner.proof,
            lambda: events_after(joiner, FRAMES["welcome"]),
        ],
        State.REFUSED: [joiner.start, lambda: events_after(joiner, FRAMES["refusal"])],
    }
    for step in steps[state]:
        step()
    assert joiner.state is state
    return joiner


def approver_in(state: State) -> ApproverSession:
    approver = new_approver()

    def challenge() -> bytes:
        return approver.challenge(secret=SECRET, approver_nonce=APPROVER_NONCE)

    steps: dict[State, list[Callable[[], object]]] = {
        State.AWAIT_HELLO: [],
        State.AWAIT_CHALLENGE: [lambda: events_after(approver, FRAMES["hello"])],
        State.AWAIT_PROOF: [lambda: events_after(approver, FRAMES["hello"]), challenge],
        State.AWAIT_WELCOME: [
            lambda: events_after(approver, FRAMES["hello"]),
            challenge,
            lambda: events_after(approver, FRAMES["proof"]),
        ],
        State.DONE: [
            lambda: events_after(approver, FRAMES["hello"]),
            challenge,
            lambda: events_after(approver, FRAMES["proof"]),
            lambda: approver.send(WELCOME),
        ],
        State.REFUSED: [
            lambda: events_after(approver, FRAMES["hello"]),
            lambda: approver.send(REFUSAL),
        ],
    }
    for step in steps[state]:
        step()
    assert approver.state is state
    return approver


SESSIONS: dict[Role, Callable[[State], JoinerSession | ApproverSession]] = {
    Role.JOINER: joiner_in,
    Role.APPROVER: approver_in,
}
PEER = {Role.JOINER: Role.APPROVER, Role.APPROVER: Role.JOINER}


def assert_refused_without_change(session: JoinerSession | ApproverSession, state: State) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        session.next_event()
    assert session.state is state
    with pytest.raises(type(info.value)):  # the same error from then on
        session.next_event()
    assert session.state is state


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", list(FRAMES))
def test_every_message_in_every_state_follows_the_table(
    role: Role, state: State, name: str
) -> None:
    session = SESSIONS[role](state)
    session.receive_data(FRAMES[name])
    new_state = TRANSITIONS.get((state, PEER[role], MESSAGE_OF[name].TYPE))
    if new_state is None:
        assert_refused_without_change(session, state)
        return
    event = session.next_event()
    assert not isinstance(event, NeedData)
    assert session.state is new_state
    assert session.next_event() is NEED_DATA


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", list(OTHER_INPUTS))
def test_every_other_input_in_every_state_is_a_remote_error(
    role: Role, state: State, name: str
) -> None:
    session = SESSIONS[role](state)
    data, eof = OTHER_INPUTS[name]
    session.receive_data(data)
    if eof:
        session.receive_data(EOF)
    if name == "eof" and state in TERMINAL_STATES:
        assert session.next_event() is NEED_DATA  # the peer closed after the end: nothing more
        assert session.state is state
        return
    assert_refused_without_change(session, state)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("garbage_frame", MalformedInput),
        ("oversized_frame", FrameTooLarge),
        ("truncated_frame", TruncatedFrame),
        ("eof", ClosedEarly),
    ],
)
def test_other_inputs_raise_their_own_errors(name: str, error: type[RemoteProtocolError]) -> None:
    approver = approver_in(State.AWAIT_HELLO)
    data, eof = OTHER_INPUTS[name]
    approver.receive_data(data)
    if eof:
        approver.receive_data(EOF)
    with pytest.raises(error):
        approver.next_event()


def test_messages_out_of_turn_and_after_the_end_are_unexpected() -> None:
    approver = approver_in(State.AWAIT_CHALLENGE)
    approver.receive_data(FRAMES["proof"])  # the joiner did not wait for the Challenge
    with pytest.raises(UnexpectedMessage):
        approver.next_event()
    joiner = joiner_in(State.DONE)
    joiner.receive_data(b"\x00")
    with pytest.raises(UnexpectedMessage, match="after the pairing ended"):
        joiner.next_event()


def test_every_table_row_is_reached_by_the_pairs() -> None:
    # A row no honest run takes would be a row no test above checks the sessions against.
    assert {state for state, _, _ in TRANSITIONS} == set(State) - TERMINAL_STATES
    assert set(TRANSITIONS.values()) == set(State) - {State.AWAIT_HELLO}


@given(
    state=st.sampled_from(list(State)),
    role=st.sampled_from(list(Role)),
    data=st.binary(max_size=80),
)
def test_any_bytes_in_any_state_give_events_or_a_remote_error(
    state: State, role: Role, data: bytes
) -> None:
    session = SESSIONS[role](state)
    session.receive_data(data)
    session.receive_data(EOF)
    try:
        while not isinstance(session.next_event(), NeedData):
            pass
    except RemoteProtocolError:
        assert session.state is state or session.state in TERMINAL_STATES
