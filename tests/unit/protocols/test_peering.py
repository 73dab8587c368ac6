"""Peering: the invite code, the signed ConnectionRequest / ConnectionAcceptance (round trips,
tampering, every check), and the /vivim/peering/1.0.0 sessions in pairs and out of turn."""

import base64
import dataclasses
from dataclasses import dataclass

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import did_from_ed25519_public_key
from protocols.errors import (
    BadSignature,
    ClosedEarly,
    FrameTooLarge,
    LocalProtocolError,
    MalformedInput,
    MismatchedAnswer,
    UnexpectedMessage,
)
from protocols.framing import encode_frame, encode_varint
from protocols.identity_records import DeviceCertificate, EncryptionKeyBinding
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.peering import (
    INVITE_PREFIX,
    ConnectionAcceptance,
    ConnectionRequest,
    Credentials,
    InvalidInvite,
    InviteCode,
    NotForUs,
    UntrustedSender,
    _checksum,
    decode_record,
)
from protocols.peering_session import (
    MAX_FRAME,
    NEED_DATA,
    TRANSITIONS,
    AcceptanceTaken,
    PeeringClient,
    PeeringError,
    PeeringServer,
    Received,
    SendAcceptance,
    SendRequest,
    State,
    StreamEnded,
    decode_message,
)

NOW = 1_700_000_000_000
TOKEN = bytes(range(16))


@dataclass(frozen=True)
class Person:
    identity: nacl.signing.SigningKey
    device: nacl.signing.SigningKey
    certificate: bytes
    binding: bytes

    @property
    def did(self) -> str:
        return did_from_ed25519_public_key(bytes(self.identity.verify_key))

    @property
    def peer_id(self) -> str:
        return peer_id_from_ed25519_public_key(bytes(self.device.verify_key))

    @property
    def credentials(self) -> Credentials:
        return Credentials(certificate=self.certificate, chain=(), rotations=())

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/4001/p2p/{self.peer_id}"


def person(seed: int) -> Person:
    identity = nacl.signing.SigningKey(bytes([seed]) * 32)
    device = nacl.signing.SigningKey(bytes([seed + 100]) * 32)
    did = did_from_ed25519_public_key(bytes(identity.verify_key))
    certificate = DeviceCertificate.create(
        signing_key=identity,
        did=did,
        device_public_key=bytes(device.verify_key),
        approver=did,
        issued_at_ms=NOW - 10,
    ).to_wire()
    binding = EncryptionKeyBinding.create(
        signing_key=identity,
        did=did,
        encryption_public_key=bytes([seed + 50]) * 32,
        key_version=1,
        issued_at_ms=NOW - 10,
    ).to_wire()
    return Person(identity, device, certificate, binding)


ALICE, BOB, MALLORY = person(1), person(2), person(3)
RELAY = "/ip4/127.0.0.1/tcp/9/p2p/" + peer_id_from_ed25519_public_key(b"\x09" * 32)


def invite(**changes: object) -> InviteCode:
    fields: dict[str, object] = {
        "did": ALICE.did,
        "encryption_binding": ALICE.binding,
        "addrs": (ALICE.addr,),
        "relays": (RELAY,),
        "token": TOKEN,
        "expires_at_ms": NOW + 1000,
    }
    return InviteCode(**{**fields, **changes})  # type: ignore[arg-type]


def request(sender: Person = BOB, target: Person = ALICE, **changes: object) -> ConnectionRequest:
    arguments: dict[str, object] = {
        "signing_key": sender.device,
        "from_did": sender.did,
        "to_did": target.did,
        "credentials": sender.credentials,
        "encryption_binding": sender.binding,
        "addrs": (sender.addr,),
        "relays": (),
        "token": TOKEN,
        "message": "hi, it's Bob",
        "created_at_ms": NOW,
    }
    return ConnectionRequest.create(**{**arguments, **changes})  # type: ignore[arg-type]


def acceptance(of: ConnectionRequest | None = None) -> ConnectionAcceptance:
    return ConnectionAcceptance.create(
        signing_key=ALICE.device,
        request=of or request(),
        credentials=ALICE.credentials,
        encryption_binding=ALICE.binding,
        addrs=(ALICE.addr,),
        relays=(RELAY,),
        created_at_ms=NOW + 5,
    )


# --- invite code --------------------------------------------------------------------------------


def test_invite_round_trip_and_binding() -> None:
    code = invite()
    text = code.to_text()
    assert text.startswith(INVITE_PREFIX)
    assert InviteCode.from_text(text) == code
    assert InviteCode.from_text("  " + text.upper() + "\n") == code
    assert code.binding().encryption_public_key == bytes([51]) * 32
    assert TOKEN.hex() not in repr(code)
    assert not code.is_expired(NOW + 999) and code.is_expired(NOW + 1000)


def test_invite_without_relays() -> None:
    code = invite(relays=())
    assert InviteCode.from_text(code.to_text()).relays == ()


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "vivim-pair:abcd",
        INVITE_PREFIX,
        INVITE_PREFIX + "!!!!",
        INVITE_PREFIX + "a",
        INVITE_PREFIX + "a" * 9000,
    ],
)
def test_invite_text_that_is_not_a_code(text: str) -> None:
    with pytest.raises(InvalidInvite):
        InviteCode.from_text(text)


def test_every_mistyped_character_is_caught() -> None:
    text = invite().to_text()
    body = text[len(INVITE_PREFIX) :]
    for index in range(0, len(body), 7):
        replacement = "a" if body[index] != "a" else "b"
        damaged = INVITE_PREFIX + body[:index] + replacement + body[index + 1 :]
        with pytest.raises(InvalidInvite):
            InviteCode.from_text(damaged)


@pytest.mark.parametrize(
    "changes",
    [
        {"did": "did:key:nope"},
        {"encryption_binding": b""},
        {"addrs": ()},
        {"addrs": ("not a multiaddr",)},
        {"addrs": ("/ip4/127.0.0.1",) * 9},
        {"relays": ("/ip4/127.0.0.1/tcp/1",)},
        {"relays": (RELAY,) * 9},
        {"token": b"short"},
        {"expires_at_ms": -1},
        {"expires_at_ms": True},
    ],
)
def test_invite_field_checks(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInvite):
        invite(**changes)


def test_invite_with_another_persons_binding_is_refused() -> None:
    with pytest.raises(InvalidInvite, match="binding"):
        invite(encryption_binding=BOB.binding).binding()


def test_invite_wire_with_an_extra_field_is_refused() -> None:
    code = invite()
    cbor = canonical_encode({**code._map(), "extra": 1})
    body = base64.b32encode(cbor + _checksum(cbor)).decode().rstrip("=").lower()
    with pytest.raises(InvalidInvite, match="fields wrong"):
        InviteCode.from_text(INVITE_PREFIX + body)


# --- records ------------------------------------------------------------------------------------


def test_request_round_trip_and_check() -> None:
    sent = request()
    wire = sent.to_wire()
    assert ConnectionRequest.from_wire(wire) == sent
    assert decode_record(wire) == sent
    assert sent.id == ConnectionRequest.from_wire(wire).id
    assert sent.id.startswith("bafyrei")
    binding = sent.check(ALICE.did)
    assert binding.did == BOB.did


def test_request_without_token() -> None:
    sent = request(token=None)
    assert ConnectionRequest.from_wire(sent.to_wire()) == sent
    sent.check(ALICE.did)


def test_acceptance_round_trip_and_check() -> None:
    sent = request()
    accepted = acceptance(sent)
    assert ConnectionAcceptance.from_wire(accepted.to_wire()) == accepted
    assert decode_record(accepted.to_wire()) == accepted
    assert accepted.request_id == sent.id
    assert accepted.check_answers(sent, BOB.did).did == ALICE.did


def test_record_types_are_kept_apart() -> None:
    with pytest.raises(MalformedInput, match="record type"):
        ConnectionAcceptance.from_wire(request().to_wire())
    with pytest.raises(MalformedInput, match="record type"):
        ConnectionRequest.from_wire(acceptance().to_wire())
    with pytest.raises(MalformedInput):
        decode_record(canonical_encode({"type": "vivim.other"}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("to_did", MALLORY.did),
        ("token", b"\x01" * 16),
        ("token", None),
        ("message", "hello"),
        ("addrs", ("/ip4/10.0.0.1/tcp/1",)),
        ("relays", (RELAY,)),
        ("created_at_ms", NOW + 1),
        ("encryption_binding", MALLORY.binding),
        ("certificate", MALLORY.certificate),
        ("chain", (MALLORY.certificate,)),
    ],
)
def test_a_tampered_request_does_not_verify(name: str, value: object) -> None:
    tampered = dataclasses.replace(request(), **{name: value})  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        tampered.verify()
    assert tampered.id != request().id


def test_a_forged_signature_is_refused() -> None:
    forged = dataclasses.replace(request(), signature=b"\x00" * 64)
    with pytest.raises(BadSignature):
        forged.check(ALICE.did)


def test_a_request_for_someone_else_is_refused() -> None:
    with pytest.raises(NotForUs):
        request().check(MALLORY.did)


def test_a_request_signed_by_a_device_of_another_did_is_refused() -> None:
    # Mallory's device signs, claiming to be Bob, with Mallory's certificate.
    forged = request(signing_key=MALLORY.device, credentials=MALLORY.credentials)
    with pytest.raises(UntrustedSender, match="certificate"):
        forged.check(ALICE.did)


def test_a_device_certified_by_another_identity_is_refused() -> None:
    did = BOB.did
    rogue = DeviceCertificate.create(
        signing_key=MALLORY.identity,  # not Bob's identity key
        did=did,
        device_public_key=bytes(MALLORY.device.verify_key),
        approver=did,
        issued_at_ms=NOW,
    ).to_wire()
    forged = request(
        signing_key=MALLORY.device,
        credentials=Credentials(certificate=rogue, chain=(), rotations=()),
    )
    with pytest.raises(UntrustedSender, match="do not make"):
        forged.check(ALICE.did)


def test_undecodable_credentials_are_refused() -> None:
    forged = request(credentials=Credentials(certificate=b"\x01junk", chain=(), rotations=()))
    with pytest.raises(UntrustedSender, match="decode"):
        forged.check(ALICE.did)


def test_another_persons_binding_is_refused() -> None:
    with pytest.raises(UntrustedSender, match="binding"):
        request(encryption_binding=MALLORY.binding).check(ALICE.did)


def test_a_binding_not_signed_by_the_identity_is_refused() -> None:
    forged = EncryptionKeyBinding.create(
        signing_key=MALLORY.identity,
        did=BOB.did,
        encryption_public_key=b"\x01" * 32,
        key_version=1,
        issued_at_ms=NOW,
    ).to_wire()
    with pytest.raises(UntrustedSender, match="signature"):
        request(encryption_binding=forged).check(ALICE.did)


def test_an_acceptance_of_another_request_is_refused() -> None:
    accepted = acceptance(request(message="another"))
    with pytest.raises(NotForUs):
        accepted.check_answers(request(), BOB.did)


@pytest.mark.parametrize(
    "changes",
    [
        {"to_did": BOB.did},  # to oneself
        {"token": b"short"},
        {"message": "x" * 501},
        {"addrs": ("nope",)},
        {"relays": ("/ip4/1.2.3.4/tcp/1",)},
        {"created_at_ms": -5},
        {"encryption_binding": b""},
    ],
)
def test_request_field_checks(changes: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        request(**changes)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("from_did", 7),
        ("from_device", "not a peer id"),
        ("token", "text"),
        ("chain", b"x"),
        ("chain", [b""]),
        ("signature", b"\x00" * 10),
        ("created_at_ms", True),
    ],
)
def test_request_wire_field_checks(name: str, value: object) -> None:
    fields = canonical_decode(request().to_wire())
    assert isinstance(fields, dict)
    with pytest.raises(MalformedInput):
        ConnectionRequest.from_wire(canonical_encode({**fields, name: value}))


def test_request_wire_missing_or_extra_field() -> None:
    fields = canonical_decode(request().to_wire())
    assert isinstance(fields, dict)
    with pytest.raises(MalformedInput, match="fields wrong"):
        ConnectionRequest.from_wire(canonical_encode({**fields, "extra": 1}))
    del fields["message"]
    with pytest.raises(MalformedInput, match="fields wrong"):
        ConnectionRequest.from_wire(canonical_encode(fields))
    with pytest.raises(MalformedInput):
        ConnectionRequest.from_wire(b"\xff")


def test_acceptance_wire_field_checks() -> None:
    fields = canonical_decode(acceptance().to_wire())
    assert isinstance(fields, dict)
    for value in ("", 5):
        with pytest.raises(MalformedInput):
            ConnectionAcceptance.from_wire(canonical_encode({**fields, "request_id": value}))


# --- sessions -----------------------------------------------------------------------------------


def feed(session: PeeringClient | PeeringServer, data: bytes) -> object:
    session.receive_data(data)
    return session.next_event()


def test_a_request_and_its_answer() -> None:
    client, server = PeeringClient(), PeeringServer()
    sent = request()
    event = feed(server, client.send_request(sent))
    assert event == SendRequest(request=sent)
    assert (client.state, server.state) == (State.AWAIT_RECEIVED, State.AWAIT_RECEIVED)
    answer = feed(client, server.received())
    assert answer == Received(request_id=sent.id, acceptance=None)
    assert (client.state, server.state) == (State.IDLE, State.IDLE)
    # a retry of a request accepted already carries the acceptance back
    accepted = acceptance(sent)
    feed(server, client.send_request(sent))
    assert feed(client, server.received(accepted)) == Received(
        request_id=sent.id, acceptance=accepted
    )
    client.finish()
    server.receive_data(b"")
    assert server.next_event() == StreamEnded()
    assert server.state is State.CLOSED


def test_an_acceptance_and_its_answer() -> None:
    client, server = PeeringClient(), PeeringServer()
    accepted = acceptance()
    assert feed(server, client.send_acceptance(accepted)) == SendAcceptance(acceptance=accepted)
    assert feed(client, server.acceptance_taken()) == AcceptanceTaken(
        request_id=accepted.request_id
    )


def test_a_refusal_answers_and_the_stream_goes_on() -> None:
    client, server = PeeringClient(), PeeringServer()
    feed(server, client.send_request(request()))
    answer = feed(client, server.refuse("token_refused", "the invite was used already"))
    assert answer == PeeringError(code="token_refused", message="the invite was used already")
    assert client.state is State.IDLE
    feed(server, client.send_acceptance(acceptance()))


def test_a_dropped_request_is_read_as_closed_early() -> None:
    client, server = PeeringClient(), PeeringServer()
    feed(server, client.send_request(request()))
    server.drop()
    assert server.state is State.CLOSED
    client.receive_data(b"")
    with pytest.raises(ClosedEarly):
        client.next_event()
    with pytest.raises(ClosedEarly):  # sticky
        client.next_event()


def test_an_answer_naming_another_request_is_refused() -> None:
    client = PeeringClient()
    client.send_request(request())
    other = Received(request_id=request(message="x").id, acceptance=None)
    with pytest.raises(MismatchedAnswer):
        feed(client, encode_frame(other.to_wire(), MAX_FRAME))
    client2 = PeeringClient()
    client2.send_acceptance(acceptance())
    with pytest.raises(MismatchedAnswer):
        feed(client2, encode_frame(AcceptanceTaken(request_id="bafyother").to_wire(), MAX_FRAME))


def test_a_received_with_an_acceptance_of_another_request_is_refused() -> None:
    client = PeeringClient()
    sent = request()
    client.send_request(sent)
    wrong = Received(request_id=sent.id, acceptance=acceptance(request(message="x")))
    with pytest.raises(MismatchedAnswer):
        feed(client, encode_frame(wrong.to_wire(), MAX_FRAME))


def test_out_of_turn_sends_are_local_errors() -> None:
    client, server = PeeringClient(), PeeringServer()
    with pytest.raises(LocalProtocolError):
        server.received()
    with pytest.raises(LocalProtocolError):
        server.acceptance_taken()
    with pytest.raises(LocalProtocolError):
        server.refuse("rate_limited", "no")
    with pytest.raises(LocalProtocolError):
        server.drop()
    client.send_request(request())
    with pytest.raises(LocalProtocolError):
        client.send_request(request())
    with pytest.raises(LocalProtocolError):
        client.finish()


def test_the_server_fails_a_stream_with_an_error_the_client_reads() -> None:
    client, server = PeeringClient(), PeeringServer()
    client.send_request(request())
    server.receive_data(b"\x05hello")
    with pytest.raises(MalformedInput):
        server.next_event()
    frame = server.fail("malformed", "not a peering message")
    assert server.state is State.CLOSED
    assert feed(client, frame) == PeeringError(code="malformed", message="not a peering message")
    idle, server2 = PeeringClient(), PeeringServer()
    assert feed(idle, server2.fail("too_large", "no")) == PeeringError(
        code="too_large", message="no"
    )
    assert idle.state is State.CLOSED


def test_a_frame_over_the_bound_is_refused_before_its_body() -> None:
    server = PeeringServer()
    server.receive_data(encode_varint(MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        server.next_event()


def test_garbage_and_messages_out_of_turn_are_remote_errors() -> None:
    server = PeeringServer()
    with pytest.raises(MalformedInput):
        feed(server, encode_frame(b"\xff\x00", MAX_FRAME))
    server = PeeringServer()
    with pytest.raises(UnexpectedMessage):
        feed(server, encode_frame(AcceptanceTaken(request_id="x").to_wire(), MAX_FRAME))
    client = PeeringClient()
    with pytest.raises(UnexpectedMessage):
        feed(client, encode_frame(AcceptanceTaken(request_id="x").to_wire(), MAX_FRAME))


def test_a_request_with_a_garbage_record_is_malformed() -> None:
    wire = canonical_encode({"type": SendRequest.TYPE, "request": b"\x01\x02"})
    with pytest.raises(MalformedInput):
        decode_message(wire)
    wire = canonical_encode({"type": SendRequest.TYPE, "request": 5})
    with pytest.raises(MalformedInput):
        decode_message(wire)


@pytest.mark.parametrize(
    "message",
    [
        SendRequest(request=request()),
        SendAcceptance(acceptance=acceptance()),
        Received(request_id="bafyx", acceptance=None),
        Received(request_id="bafyx", acceptance=acceptance()),
        AcceptanceTaken(request_id="bafyx"),
        PeeringError(code="rate_limited", message="slow down"),
    ],
)
def test_message_round_trips_and_trailing_bytes(message: object) -> None:
    wire = message.to_wire()  # type: ignore[attr-defined]
    assert decode_message(wire) == message
    with pytest.raises(MalformedInput):
        decode_message(wire + b"\x00")


def test_the_table_has_no_row_out_of_the_closed_state() -> None:
    assert not [key for key in TRANSITIONS if key[0] is State.CLOSED]


MESSAGES = [
    SendRequest(request=request()).to_wire(),
    SendAcceptance(acceptance=acceptance()).to_wire(),
    Received(request_id=request().id, acceptance=None).to_wire(),
    AcceptanceTaken(request_id=request().id).to_wire(),
    PeeringError(code="x", message="y").to_wire(),
    b"\xa0",
]


@given(st.lists(st.sampled_from(range(len(MESSAGES) + 1)), max_size=6), st.booleans())
def test_any_input_in_any_state_is_an_event_or_a_typed_error(
    picks: list[int], as_server: bool
) -> None:
    session: PeeringClient | PeeringServer = PeeringServer() if as_server else PeeringClient()
    if not as_server:
        assert isinstance(session, PeeringClient)
        session.send_request(request())
    for pick in picks:
        data = b"" if pick == len(MESSAGES) else encode_frame(MESSAGES[pick], MAX_FRAME)
        try:
            session.receive_data(data)
            while (event := session.next_event()) is not NEED_DATA:
                if isinstance(event, StreamEnded):
                    break
        except (MalformedInput, UnexpectedMessage, ClosedEarly, MismatchedAnswer):
            return
        except LocalProtocolError:
            return  # data after EOF
