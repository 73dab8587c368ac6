"""The mailbox sessions run in pairs over an in-memory link, against a stand-in relay; every
(state, input) pair fuzzed. The messages' codecs are tested in test_mailbox_messages.py."""

from collections.abc import Callable

import nacl.public
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.did import did_from_ed25519_public_key
from protocols.envelope import MAX_ENVELOPE_BYTES, Envelope, Letter, open_envelope, seal
from protocols.errors import (
    FrameTooLarge,
    LocalProtocolError,
    MalformedInput,
    RemoteProtocolError,
    TruncatedFrame,
)
from protocols.framing import encode_frame, encode_varint
from protocols.identity_records import DeviceCertificate, IdentityKeyRotation
from protocols.mailbox import (
    ABORT,
    END_OF_STREAM,
    MAILBOX_PROTOCOL_ID,
    MAX_FETCHED_BYTES,
    MAX_FRAME,
    MAX_IDS,
    MAX_REFUSAL_MESSAGE,
    NEED_DATA,
    TERMINAL_STATES,
    TRANSITIONS,
    Ack,
    Acked,
    ClientEvent,
    ClosedEarly,
    Deposit,
    Fetch,
    Fetched,
    Introduce,
    Introduced,
    List,
    Listed,
    MailboxClient,
    MailboxError,
    MailboxServer,
    Message,
    MismatchedAnswer,
    NeedData,
    RefusalCode,
    Register,
    Registered,
    Role,
    ServerEvent,
    State,
    Stored,
    StreamEnded,
    UnexpectedMessage,
    Unregister,
    Unregistered,
    take_fitting,
)
from protocols.mailbox_notice import Notice
from protocols.mailbox_records import RelayRegistration
from protocols.pairing_messages import MAX_CHAIN, MAX_IDENTITY_ROTATIONS
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.trust import IdentityKeys, compute_trust

IDENTITY_KEY = nacl.signing.SigningKey(b"\x01" * 32)
RECIPIENT = did_from_ed25519_public_key(bytes(IDENTITY_KEY.verify_key))
OTHER_DID = did_from_ed25519_public_key(b"\x05" * 32)
A1_KEY, A2_KEY = nacl.signing.SigningKey(b"\x02" * 32), nacl.signing.SigningKey(b"\x03" * 32)
RELAY = peer_id_from_ed25519_public_key(b"\x04" * 32)
RECIPIENT_X25519 = nacl.public.PrivateKey(b"\x06" * 32)
NOW_MS = 1_700_000_000_000
REGISTRATION = RelayRegistration.create(
    signing_key=A2_KEY,
    recipient_did=RECIPIENT,
    relay=RELAY,
    quota_bytes=1 << 20,
    expires_at_ms=NOW_MS + 10**9,
    issued_at_ms=NOW_MS,
)
A1, A2 = (peer_id_from_ed25519_public_key(bytes(key.verify_key)) for key in (A1_KEY, A2_KEY))
# The identity key was rotated (version 2) before it certified A2; A2 then approved A1. So A1's
# introduction needs both the chain (A2's certificate) and the rotation to check.
NEW_IDENTITY_KEY = nacl.signing.SigningKey(b"\x07" * 32)
ROTATION = IdentityKeyRotation.create(
    signing_key=IDENTITY_KEY,
    did=RECIPIENT,
    new_public_key=bytes(NEW_IDENTITY_KEY.verify_key),
    key_version=2,
    rotated_at_ms=NOW_MS - 1000,
).to_wire()
A2_CERTIFICATE = DeviceCertificate.create(
    signing_key=NEW_IDENTITY_KEY,
    did=RECIPIENT,
    device_public_key=bytes(A2_KEY.verify_key),
    approver=RECIPIENT,
    issued_at_ms=NOW_MS,
).to_wire()
A1_CERTIFICATE = DeviceCertificate.create(
    signing_key=A2_KEY,
    did=RECIPIENT,
    device_public_key=bytes(A1_KEY.verify_key),
    approver=A2,
    issued_at_ms=NOW_MS + 1,
).to_wire()
UNAUTHORIZED = MailboxError(code=RefusalCode.UNAUTHORIZED, message="not a device of the DID")
INTRODUCE_A1 = Introduce(certificate=A1_CERTIFICATE, chain=(A2_CERTIFICATE,), rotations=(ROTATION,))

Session = MailboxClient | MailboxServer
Event = ClientEvent | ServerEvent


def sealed(seq: int) -> Envelope:
    """Mail from device A1 to its own DID: sync op number `seq`."""
    letter = Letter.create(
        signing_key=A1_KEY,
        recipient_did=RECIPIENT,
        sender_did=RECIPIENT,
        payload_type="sync.ops",
        payload=f"op {seq}".encode(),
        created_at_ms=NOW_MS + seq,
    )
    return seal(
        letter,
        recipient_did=RECIPIENT,
        recipient_x25519_public_key=bytes(RECIPIENT_X25519.public_key),
        expires_at_ms=NOW_MS + 10**6,
        ephemeral_private_key=seq.to_bytes(32, "big"),
    )


def plain(seed: int, size: int = 100) -> Envelope:
    """An envelope as a relay sees one: opaque ciphertext."""
    return Envelope.build(
        recipient_did=RECIPIENT, expires_at_ms=NOW_MS + seed, ciphertext=bytes([seed % 256]) * size
    )


E1, E2, E3 = plain(1), plain(2), plain(3)


def events_after(session: Session, data: bytes, chunk: int = 0) -> list[Event]:
    """Feed `data` (in pieces of `chunk` bytes, 0 for whole; b"" is EOF), draining events after
    each piece."""
    events: list[Event] = []
    step = chunk or max(len(data), 1)
    for piece in [data[start : start + step] for start in range(0, len(data), step)] or [b""]:
        session.receive_data(piece)
        while not isinstance(event := session.next_event(), NeedData):
            events.append(event)
    return events


def framed(message: Message | Notice) -> bytes:
    return encode_frame(message.to_wire(), MAX_FRAME)


class Relay:
    """A stand-in for the relay's store: registrations, and envelopes in arrival order."""

    def __init__(self) -> None:
        self.registered: dict[str, RelayRegistration] = {}
        self.held: dict[str, tuple[int, Envelope]] = {}  # id -> (arrival seq, envelope)
        self.arrivals = 0

    def introduce(self, request: Introduce) -> str | None:
        """The DID the introduction makes its device a device of, or None: the chain and
        rotations must make the certificate count, and the DID's registration here must not
        name the device as revoked."""
        certificate = DeviceCertificate.from_wire(request.certificate)
        chain = [DeviceCertificate.from_wire(item) for item in request.chain]
        rotations = [IdentityKeyRotation.from_wire(item) for item in request.rotations]
        keys = IdentityKeys.from_rotations(certificate.did, rotations)
        trust = compute_trust(keys, [certificate, *chain], [])
        registration = self.registered.get(certificate.did)
        revoked = registration.revoked_devices if registration is not None else ()
        device = certificate.device_peer_id
        return certificate.did if trust.is_trusted(device) and device not in revoked else None

    def answer(self, server: MailboxServer, request: ServerEvent) -> bytes:
        match request:
            case Introduce():
                did = self.introduce(request)
                if did is None:
                    return server.refuse(UNAUTHORIZED.code, UNAUTHORIZED.message)
                return server.introduced(did)
            case Register(registration=registration):
                registration.verify()
                self.registered[registration.recipient_did] = registration
                return server.registered()
            case Unregister(recipient_did=recipient_did):
                self.registered.pop(recipient_did, None)
                return server.unregistered()
            case Deposit(envelopes=envelopes):
                # Each envelope stored or refused on its own; the Stored says which.
                refused: dict[str, tuple[str, str]] = {}
                for envelope in envelopes:
                    if envelope.recipient_did not in self.registered:
                        refused[envelope.id] = (RefusalCode.UNREGISTERED_RECIPIENT, "not here")
                    elif envelope.id in self.held:
                        refused[envelope.id] = (RefusalCode.DUPLICATE, envelope.id)
                    else:
                        self.arrivals += 1
                        self.held[envelope.id] = (self.arrivals, envelope)
                return server.stored(refused)
            case List(after=after, limit=limit):
                after_seq = int(after) if after is not None else 0
                later = sorted((seq, key) for key, (seq, _) in self.held.items() if seq > after_seq)
                page = later[:limit]
                more = len(later) > limit
                return server.listed([key for _, key in page], str(page[-1][0]) if more else None)
            case Fetch(ids=ids):
                return server.fetched(
                    take_fitting([self.held[i][1] for i in ids if i in self.held])
                )
            case Ack(ids=ids):
                return server.acked(sum(self.held.pop(i, None) is not None for i in ids))
        raise AssertionError(request)


def exchange(
    client: MailboxClient, server: MailboxServer, relay: Relay, frame: bytes, chunk: int = 1
) -> Event:
    """One request and its answer, byte by byte both ways (unless `chunk` says otherwise): the
    client's event."""
    [request] = events_after(server, frame, chunk)
    [answer] = events_after(client, relay.answer(server, request), chunk)
    assert client.state is server.state is State.IDLE
    return answer


def test_protocol_id() -> None:
    assert MAILBOX_PROTOCOL_ID == "/vivim/mailbox/1.0.0"


def test_register_deposit_list_fetch_ack_and_a_clean_end() -> None:
    relay = Relay()
    sender, sender_side = MailboxClient(), MailboxServer()  # device A1, depositing
    assert exchange(sender, sender_side, relay, sender.register(REGISTRATION)) == Registered()
    assert relay.registered == {RECIPIENT: REGISTRATION}
    mail = [sealed(seq) for seq in range(1, 6)]
    for batch in (mail[:1], mail[1:]):  # one envelope, then several in one Deposit
        assert exchange(sender, sender_side, relay, sender.deposit(batch)) == Stored(
            ids=tuple(envelope.id for envelope in batch), refused=()
        )
    assert list(relay.held) == [envelope.id for envelope in mail]  # in the order deposited
    sender.finish()
    assert events_after(sender_side, b"") == [StreamEnded()]
    assert sender.state is sender_side.state is State.CLOSED

    # Device A2 comes online: it lists two at a time, fetches, opens, applies, acks.
    recipient, recipient_side = MailboxClient(), MailboxServer()
    received: list[bytes] = []
    cursor: str | None = None
    while True:
        listed = exchange(
            recipient, recipient_side, relay, recipient.list_envelopes(RECIPIENT, cursor, 2)
        )
        assert isinstance(listed, Listed)
        if listed.ids:
            fetched = exchange(recipient, recipient_side, relay, recipient.fetch(listed.ids))
            assert isinstance(fetched, Fetched)
            for envelope in fetched.envelopes:
                letter = open_envelope(
                    envelope,
                    recipient_did=RECIPIENT,
                    recipient_x25519_private_key=bytes(RECIPIENT_X25519),
                )
                received.append(letter.payload)
            acked = exchange(recipient, recipient_side, relay, recipient.ack(listed.ids))
            assert acked == Acked(count=len(listed.ids))
        if listed.next_cursor is None:
            break
        cursor = listed.next_cursor  # the cursor of an envelope already acked: still valid
    assert received == [f"op {seq}".encode() for seq in range(1, 6)]
    assert relay.held == {}
    assert exchange(recipient, recipient_side, relay, recipient.ack([mail[0].id])) == Acked(count=0)
    assert exchange(recipient, recipient_side, relay, recipient.unregister(RECIPIENT)) == (
        Unregistered()
    )
    recipient.finish()
    assert events_after(recipient_side, b"") == [StreamEnded()]


def test_an_introduction_counts_only_with_its_chain_and_rotations() -> None:
    relay, client, server = Relay(), MailboxClient(), MailboxServer()
    frame = client.introduce(A1_CERTIFICATE, [A2_CERTIFICATE], [ROTATION])
    assert frame == framed(INTRODUCE_A1)
    assert client.state is State.AWAIT_INTRODUCED
    [request] = events_after(server, frame, chunk=1)
    assert request == INTRODUCE_A1
    assert server.state is State.AWAIT_INTRODUCED
    [answer] = events_after(client, relay.answer(server, request), chunk=1)
    assert answer == Introduced(did=RECIPIENT)
    assert client.state is server.state is State.IDLE
    # Without A2's certificate, or without the rotation that made the key which signed it, A1
    # is no device of the DID: refused, and the stream goes on.
    for chain, rotations in [([], [ROTATION]), ([A2_CERTIFICATE], []), ([], [])]:
        frame = client.introduce(A1_CERTIFICATE, chain, rotations)
        assert exchange(client, server, relay, frame) == UNAUTHORIZED
    # A2, certified by the identity itself, needs no chain (but the rotation still).
    frame = client.introduce(A2_CERTIFICATE, [], [ROTATION])
    assert exchange(client, server, relay, frame) == Introduced(did=RECIPIENT)
    client.finish()
    assert events_after(server, b"") == [StreamEnded()]


def test_a_registration_naming_a_revoked_device_keeps_it_out() -> None:
    relay, client, server = Relay(), MailboxClient(), MailboxServer()
    revoking = RelayRegistration.create(
        signing_key=A2_KEY,
        recipient_did=RECIPIENT,
        relay=RELAY,
        revoked_devices=(A1, A1),
        quota_bytes=1 << 20,
        expires_at_ms=NOW_MS + 10**9,
        issued_at_ms=NOW_MS + 5,
    )
    assert revoking.revoked_devices == (A1,)
    assert exchange(client, server, relay, client.register(revoking)) == Registered()
    assert relay.registered == {RECIPIENT: revoking}  # the list travelled, signature and all
    a1 = client.introduce(A1_CERTIFICATE, [A2_CERTIFICATE], [ROTATION])
    assert exchange(client, server, relay, a1) == UNAUTHORIZED  # certified, but revoked
    a2 = client.introduce(A2_CERTIFICATE, [], [ROTATION])
    assert exchange(client, server, relay, a2) == Introduced(did=RECIPIENT)


def test_a_fetch_is_answered_within_the_byte_bound_and_the_rest_asked_again() -> None:
    relay = Relay()
    relay.registered[RECIPIENT] = REGISTRATION
    big = [plain(seed, size=MAX_ENVELOPE_BYTES // 2) for seed in range(1, 4)]
    client, server = MailboxClient(), MailboxServer()
    for batch in (big[:2], big[2:]):  # two halves fit one Deposit, not three
        stored = exchange(client, server, relay, client.deposit(batch), chunk=0)
        assert stored == Stored(ids=tuple(envelope.id for envelope in batch), refused=())
    asked = [envelope.id for envelope in big]
    got: list[Envelope] = []
    while asked:
        fetched = exchange(client, server, relay, client.fetch(asked), chunk=0)
        assert isinstance(fetched, Fetched)
        assert 0 < len(fetched.envelopes) <= 2
        got += fetched.envelopes
        asked = asked[asked.index(fetched.envelopes[-1].id) + 1 :]
    assert got == big


@pytest.mark.parametrize("code", list(RefusalCode))
def test_every_refusal_reaches_the_client_and_the_stream_goes_on(code: RefusalCode) -> None:
    client, server = MailboxClient(), MailboxServer()
    [request] = events_after(server, client.deposit([E1]))
    assert request == Deposit(envelopes=(E1,))
    refusal = server.refuse(code, f"refused: {code}")
    assert refusal == framed(MailboxError(code=code, message=f"refused: {code}"))
    assert events_after(client, refusal) == [MailboxError(code=code, message=f"refused: {code}")]
    assert client.state is server.state is State.IDLE
    events_after(server, client.deposit([E2]))
    assert events_after(client, server.stored()) == [Stored(ids=(E2.id,), refused=())]


def test_the_relays_refusals_from_its_store() -> None:
    relay, client, server = Relay(), MailboxClient(), MailboxServer()
    refused = exchange(client, server, relay, client.deposit([E1]))
    assert refused == Stored(ids=(), refused=((E1.id, "unregistered_recipient", "not here"),))
    exchange(client, server, relay, client.register(REGISTRATION))
    assert exchange(client, server, relay, client.deposit([E1])) == Stored(ids=(E1.id,), refused=())
    assert exchange(client, server, relay, client.deposit([E1])) == Stored(
        ids=(), refused=((E1.id, "duplicate", E1.id),)
    )
    # One Deposit, each envelope its own outcome: stored, a duplicate, for a DID not here.
    elsewhere = Envelope.build(recipient_did=OTHER_DID, expires_at_ms=NOW_MS, ciphertext=b"x" * 99)
    assert exchange(client, server, relay, client.deposit([E2, E1, elsewhere, E3])) == Stored(
        ids=(E2.id, E3.id),
        refused=((E1.id, "duplicate", E1.id), (elsewhere.id, "unregistered_recipient", "not here")),
    )
    assert list(relay.held) == [E1.id, E2.id, E3.id]


def test_stored_answers_each_envelope_deposited_in_the_order_deposited() -> None:
    client, server = MailboxClient(), MailboxServer()
    deposited = [E3, E1, E2]
    [request] = events_after(server, client.deposit(deposited), chunk=7)
    assert request == Deposit(envelopes=tuple(deposited))
    # Without refusals: every envelope stored.
    expected = Stored(ids=(E3.id, E1.id, E2.id), refused=())
    frame = server.stored()
    assert frame == framed(expected)
    assert events_after(client, frame, chunk=3) == [expected]
    assert client.state is server.state is State.IDLE
    # With refusals: the rest stored; refusals in the order deposited, whatever the mapping's.
    events_after(server, client.deposit(deposited))
    refusals = {E2.id: ("over_quota", "full"), E3.id: (RefusalCode.RATE_LIMITED, "later")}
    expected = Stored(
        ids=(E1.id,), refused=((E3.id, "rate_limited", "later"), (E2.id, "over_quota", "full"))
    )
    frame = server.stored(refusals)
    assert frame == framed(expected)
    assert events_after(client, frame) == [expected]
    # Every one refused: no ids. An empty mapping is no refusal.
    events_after(server, client.deposit([E1]))
    expected = Stored(ids=(), refused=((E1.id, "expired", ""),))
    assert events_after(client, server.stored({E1.id: ("expired", "")})) == [expected]
    events_after(server, client.deposit([E1]))
    assert events_after(client, server.stored({})) == [Stored(ids=(E1.id,), refused=())]
    assert client.state is server.state is State.IDLE


def test_stored_cuts_long_messages_and_refuses_what_cannot_be_an_answer() -> None:
    client, server = MailboxClient(), MailboxServer()
    events_after(server, client.deposit([E1, E2]))
    # Not deposited, or not a (code, message) pair: the relay's own mistake, nothing is sent.
    with pytest.raises(LocalProtocolError, match="not deposited"):
        server.stored({E3.id: ("duplicate", "")})
    with pytest.raises(LocalProtocolError, match="pair"):
        server.stored({E1.id: "xy"})  # type: ignore[dict-item]
    assert server.state is State.AWAIT_STORED
    # A long message is cut to MAX_REFUSAL_MESSAGE characters, not refused.
    frame = server.stored({E1.id: ("over_quota", "y" * (MAX_REFUSAL_MESSAGE * 3))})
    [answer] = events_after(client, frame)
    assert isinstance(answer, Stored)
    assert answer.refused == ((E1.id, "over_quota", "y" * MAX_REFUSAL_MESSAGE),)
    assert answer.ids == (E2.id,)


def full_deposit() -> list[Envelope]:
    """MAX_IDS envelopes whose wire bytes fill MAX_FETCHED_BYTES: the largest Deposit."""
    small = [plain(seed, size=50) for seed in range(MAX_IDS - 1)]
    room = MAX_FETCHED_BYTES - sum(len(envelope.to_wire()) for envelope in small)
    filler = plain(MAX_IDS, size=room - 300)
    return [*small, plain(MAX_IDS, size=room - (len(filler.to_wire()) - filler.size))]


def test_the_largest_deposit_fits_a_frame_both_ways() -> None:
    client, server = MailboxClient(), MailboxServer()
    full = full_deposit()
    assert sum(len(envelope.to_wire()) for envelope in full) == MAX_FETCHED_BYTES
    frame = client.deposit(full)
    assert len(frame) <= MAX_FRAME
    [request] = events_after(server, frame, chunk=65_536)
    assert request == Deposit(envelopes=tuple(full))
    refusals = {envelope.id: ("over_quota", "full") for envelope in full[::2]}
    [stored] = events_after(client, server.stored(refusals))
    assert isinstance(stored, Stored)
    assert len(stored.ids) + len(stored.refused) == MAX_IDS
    assert stored.ids == tuple(envelope.id for envelope in full[1::2])


def test_refuse_message_is_cut_and_its_code_checked() -> None:
    client, server = MailboxClient(), MailboxServer()
    events_after(server, client.fetch([E1.id]))
    with pytest.raises(LocalProtocolError, match="not like"):
        server.refuse("Not A Code", "")
    [event] = events_after(client, server.refuse("over_quota", "x" * 5000))
    assert event == MailboxError(code="over_quota", message="x" * 1000)


# --- answers that do not fit their request -------------------------------------------------------

# (the request, a frame answering it that does not fit, what the client says)
UNACCOUNTED = "a Stored that does not account for each envelope deposited"
MISMATCHES: list[tuple[Callable[[MailboxClient], bytes], Message, str]] = [
    (lambda c: c.deposit([E1]), Stored(ids=(E2.id,), refused=()), UNACCOUNTED),
    (lambda c: c.deposit([E1]), Stored(ids=(), refused=()), UNACCOUNTED),
    (lambda c: c.deposit([E1, E2]), Stored(ids=(E1.id,), refused=()), UNACCOUNTED),
    (
        lambda c: c.deposit([E1, E2]),
        Stored(ids=(), refused=((E2.id, "duplicate", ""),)),
        UNACCOUNTED,
    ),
    (lambda c: c.deposit([E1, E2]), Stored(ids=(E1.id, E2.id, E3.id), refused=()), UNACCOUNTED),
    (
        lambda c: c.deposit([E1, E2]),
        Stored(ids=(E1.id,), refused=((E2.id, "duplicate", ""), (E3.id, "duplicate", ""))),
        UNACCOUNTED,
    ),
    (
        lambda c: c.deposit([E1, E2]),
        Stored(ids=(E1.id,), refused=((E3.id, "duplicate", ""),)),
        UNACCOUNTED,
    ),
    (
        lambda c: c.list_envelopes(RECIPIENT, None, 1),
        Listed(ids=(E1.id, E2.id), next_cursor=None),
        "2 ids listed for a limit of 1",
    ),
    (lambda c: c.fetch([E1.id]), Fetched(envelopes=(E2,)), "not asked for"),
    (lambda c: c.fetch([E1.id, E2.id]), Fetched(envelopes=(E2, E1)), "out of the order"),
    (lambda c: c.ack([E1.id]), Acked(count=2), "2 acked of 1 ids"),
]


@pytest.mark.parametrize(("request_of", "answer", "problem"), MISMATCHES)
def test_an_answer_that_does_not_fit_its_request_is_refused_on_both_sides(
    request_of: Callable[[MailboxClient], bytes], answer: Message, problem: str
) -> None:
    client, server = MailboxClient(), MailboxServer()
    events_after(server, request_of(client))
    state = client.state
    with pytest.raises(MismatchedAnswer, match=problem) as info:
        events_after(client, framed(answer))
    assert info.value.code == "mismatched_answer"
    assert client.state is state
    with pytest.raises(MismatchedAnswer):  # and so it stays
        client.next_event()
    # The relay refuses to send it in the first place.
    send: dict[type, Callable[[], bytes]] = {
        Listed: lambda: server.listed(answer.ids, None),  # type: ignore[union-attr]
        Fetched: lambda: server.fetched(answer.envelopes),  # type: ignore[union-attr]
        Acked: lambda: server.acked(answer.count),  # type: ignore[union-attr]
    }
    if type(answer) in send:
        with pytest.raises(LocalProtocolError, match=problem):
            send[type(answer)]()
        assert server.state is state


def test_a_fetched_over_the_frame_bound_is_a_local_error() -> None:
    big = [plain(seed, size=MAX_ENVELOPE_BYTES // 2 + 20_000) for seed in (1, 2)]
    client, server = MailboxClient(), MailboxServer()
    events_after(server, client.fetch([envelope.id for envelope in big]))
    with pytest.raises(LocalProtocolError, match="cannot answer"):
        server.fetched(big)
    assert server.state is State.AWAIT_FETCHED
    assert events_after(client, server.fetched(big[:1])) == [Fetched(envelopes=tuple(big[:1]))]


# --- errors, turn-taking and the end of the stream ------------------------------------------------


def test_the_relay_fails_a_stream_after_garbage() -> None:
    client, server = MailboxClient(), MailboxServer()
    server.receive_data(encode_frame(b"\xffgarbage", MAX_FRAME))
    with pytest.raises(MalformedInput) as info:
        server.next_event()
    assert server.state is State.IDLE
    with pytest.raises(LocalProtocolError, match="the client misbehaved"):
        server.finish()
    failure = server.fail(info.value.code, str(info.value))
    assert server.state is State.FAILED
    assert events_after(client, failure) == [
        MailboxError(code="malformed", message=str(info.value))
    ]
    assert client.state is State.FAILED
    with pytest.raises(LocalProtocolError, match="may not send"):
        client.deposit([E1])


def test_after_the_relay_misbehaved_the_client_sends_nothing() -> None:
    client = MailboxClient()
    client.receive_data(framed(Stored(ids=(E1.id,), refused=())))  # an answer to nothing
    with pytest.raises(UnexpectedMessage, match=r"sent vivim\.mailbox\.stored\.v1 in idle"):
        client.next_event()
    for call in (lambda: client.deposit([E1]), client.finish):
        with pytest.raises(LocalProtocolError, match="the server misbehaved"):
            call()
    assert client.state is State.IDLE


def test_a_relay_failing_while_a_request_is_outstanding() -> None:
    # The client reads the error as its request's refusal, then meets the end of the stream.
    client, server = MailboxClient(), MailboxServer()
    events_after(server, client.deposit([E1]))
    failure = server.fail("internal_error", "shutting down")
    assert server.state is State.FAILED
    assert events_after(client, failure) == [
        MailboxError(code="internal_error", message="shutting down")
    ]
    assert client.state is State.IDLE
    assert events_after(client, b"") == [StreamEnded()]
    assert client.state is State.CLOSED


def test_refuse_needs_a_request_and_fail_a_stream_not_ended() -> None:
    server = MailboxServer()
    with pytest.raises(LocalProtocolError, match="no request to refuse"):
        server.refuse("over_quota", "")
    server.finish()
    with pytest.raises(LocalProtocolError, match="may not send abort in closed"):
        server.fail("internal_error", "")


def test_the_relay_may_close_an_idle_stream() -> None:
    client, server = MailboxClient(), MailboxServer()
    server.finish()
    assert events_after(client, b"") == [StreamEnded()]
    assert client.state is server.state is State.CLOSED
    server.receive_data(framed(Deposit(envelopes=(E1,))))  # a request sent as the relay closed
    with pytest.raises(UnexpectedMessage, match="after the stream ended"):
        server.next_event()


@pytest.mark.parametrize("role", list(Role))
def test_closing_while_a_request_is_outstanding_is_closed_early(role: Role) -> None:
    client, server = MailboxClient(), MailboxServer()
    events_after(server, client.ack([E1.id]))
    session: Session = client if role is Role.CLIENT else server
    session.receive_data(b"")
    with pytest.raises(ClosedEarly, match="closed the stream in await_acked"):
        session.next_event()
    assert session.state is State.AWAIT_ACKED


def test_sending_out_of_turn_is_a_local_error_and_changes_nothing() -> None:
    client, server = MailboxClient(), MailboxServer()
    with pytest.raises(LocalProtocolError, match=r"server may not send vivim\.mailbox\.acked"):
        server.acked(0)
    with pytest.raises(LocalProtocolError, match=r"server may not send vivim\.mailbox\.stored"):
        server.stored()
    with pytest.raises(LocalProtocolError, match=r"server may not send vivim\.mailbox\.stored"):
        server.stored({E1.id: ("duplicate", "")})
    with pytest.raises(LocalProtocolError, match=r"server may not send vivim\.mailbox\.introduced"):
        server.introduced(RECIPIENT)
    client.fetch([E1.id])
    with pytest.raises(LocalProtocolError, match=r"client may not send vivim\.mailbox\.fetch"):
        client.fetch([E1.id])
    with pytest.raises(LocalProtocolError, match="may not send end_of_stream in await_fetched"):
        client.finish()
    assert client.state is State.AWAIT_FETCHED
    assert server.state is State.IDLE


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.list_envelopes(RECIPIENT, None, 0),
        lambda c: c.list_envelopes(RECIPIENT, None, 1001),
        lambda c: c.list_envelopes(RECIPIENT, "a cursor", 1),
        lambda c: c.list_envelopes(RELAY, None, 1),
        lambda c: c.fetch([]),
        lambda c: c.fetch([E1.id, E1.id]),
        lambda c: c.ack(["not an id"]),
        lambda c: c.unregister("did:web:example.com"),
        lambda c: c.register(REGISTRATION.to_wire()),
        lambda c: c.deposit([E1.to_wire()]),
        lambda c: c.deposit([]),
        lambda c: c.deposit([E1, E2, E1]),
        lambda c: c.deposit([plain(seed, size=50) for seed in range(MAX_IDS + 1)]),
        lambda c: c.deposit(
            [plain(seed, size=MAX_ENVELOPE_BYTES // 2 + 20_000) for seed in (1, 2)]
        ),
        lambda c: c.introduce(b"", [], []),
        lambda c: c.introduce(A1_CERTIFICATE.hex(), [], []),
        lambda c: c.introduce(A1_CERTIFICATE, [b""], []),
        lambda c: c.introduce(A1_CERTIFICATE, [A2_CERTIFICATE] * (MAX_CHAIN + 1), []),
        lambda c: c.introduce(A1_CERTIFICATE, [], [ROTATION] * (MAX_IDENTITY_ROTATIONS + 1)),
        lambda c: c.introduce(A1_CERTIFICATE, [], [ROTATION.hex()]),
        lambda c: c.introduce(A1_CERTIFICATE, [], [None]),
    ],
)
def test_impossible_requests_are_a_local_error(call: Callable[[MailboxClient], object]) -> None:
    client = MailboxClient()
    with pytest.raises(LocalProtocolError, match="cannot make this request"):
        call(client)
    assert client.state is State.IDLE


@pytest.mark.parametrize(
    ("request_of", "answer"),
    [
        (lambda c: c.list_envelopes(RECIPIENT, None, 5), lambda s: s.listed([E1.id], "a b")),
        (lambda c: c.list_envelopes(RECIPIENT, None, 5), lambda s: s.listed([], "1")),
        (lambda c: c.fetch([E1.id]), lambda s: s.fetched([E1.to_wire()])),
        (lambda c: c.ack([E1.id]), lambda s: s.acked(-1)),
        (lambda c: c.introduce(A1_CERTIFICATE, [], []), lambda s: s.introduced(A1)),
        (lambda c: c.introduce(A1_CERTIFICATE, [], []), lambda s: s.introduced("did:web:x.org")),
        (lambda c: c.introduce(A1_CERTIFICATE, [], []), lambda s: s.introduced(None)),
        (lambda c: c.deposit([E1]), lambda s: s.stored({E1.id: ("Not A Code", "")})),
        (lambda c: c.deposit([E1]), lambda s: s.stored({E1.id: ("over_quota",)})),
        (lambda c: c.deposit([E1]), lambda s: s.stored({E1.id: ("over_quota", None)})),
    ],
)
def test_impossible_answers_are_a_local_error(
    request_of: Callable[[MailboxClient], bytes], answer: Callable[[MailboxServer], bytes]
) -> None:
    server = MailboxServer()
    events_after(server, request_of(MailboxClient()))
    state = server.state
    with pytest.raises(LocalProtocolError, match="cannot answer"):
        answer(server)
    assert server.state is state


# --- every (state, input) pair --------------------------------------------------------------------

REQUESTS: dict[State, Message] = {
    State.AWAIT_INTRODUCED: INTRODUCE_A1,
    State.AWAIT_REGISTERED: Register(registration=REGISTRATION),
    State.AWAIT_UNREGISTERED: Unregister(recipient_did=RECIPIENT),
    State.AWAIT_STORED: Deposit(envelopes=(E1, E2)),
    State.AWAIT_LISTED: List(recipient_did=RECIPIENT, after=None, limit=10),
    State.AWAIT_FETCHED: Fetch(ids=(E1.id, E2.id)),
    State.AWAIT_ACKED: Ack(ids=(E1.id,)),
}
# Answers that fit the requests above.
MESSAGES: dict[str, Message] = {
    **{type(request).__name__: request for request in REQUESTS.values()},
    "Introduced": Introduced(did=RECIPIENT),
    "Registered": Registered(),
    "Unregistered": Unregistered(),
    "Stored": Stored(ids=(E1.id,), refused=((E2.id, "duplicate", ""),)),
    "Listed": Listed(ids=(E1.id, E2.id), next_cursor="2"),
    "Fetched": Fetched(envelopes=(E1,)),
    "Acked": Acked(count=1),
    "MailboxError": MailboxError(code="over_quota", message="full"),
}
FRAMES = {name: framed(message) for name, message in MESSAGES.items()}
EOF = b""
BAD_DEPOSIT = canonical_decode(Deposit(envelopes=(E1, E2)).to_wire())
assert isinstance(BAD_DEPOSIT, dict)
E2_FIELDS = canonical_decode(E2.to_wire())
assert isinstance(E2_FIELDS, dict)
E2_NOT_MATCHING = canonical_encode({**E2_FIELDS, "expires_at_ms": 1})  # its id is E2's still
# (bytes fed, then EOF or not) that are no message at all.
OTHER_INPUTS: dict[str, tuple[bytes, bool]] = {
    "garbage_frame": (encode_frame(b"\xffgarbage", MAX_FRAME), False),
    "unknown_type": (
        encode_frame(canonical_encode({"type": "vivim.mailbox.x.v1"}), MAX_FRAME),
        False,
    ),
    "a_notice": (framed(Notice(recipient_did=RECIPIENT, count=1)), False),
    "envelope_not_matching_its_id": (
        encode_frame(
            canonical_encode({**BAD_DEPOSIT, "envelopes": [E1.to_wire(), E2_NOT_MATCHING]}),
            MAX_FRAME,
        ),
        False,
    ),
    "non_minimal_prefix": (b"\x80\x00", False),
    "oversized_frame": (encode_varint(MAX_FRAME + 1), False),
    "truncated_frame": (FRAMES["Deposit"][:10], True),
}


def send_request(client: MailboxClient, request: Message) -> bytes:
    match request:
        case Introduce(certificate=certificate, chain=chain, rotations=rotations):
            return client.introduce(certificate, chain, rotations)
        case Register(registration=registration):
            return client.register(registration)
        case Unregister(recipient_did=recipient_did):
            return client.unregister(recipient_did)
        case Deposit(envelopes=envelopes):
            return client.deposit(envelopes)
        case List(recipient_did=recipient_did, after=after, limit=limit):
            return client.list_envelopes(recipient_did, after, limit)
        case Fetch(ids=ids):
            return client.fetch(ids)
        case Ack(ids=ids):
            return client.ack(ids)
    raise AssertionError(request)


def client_in(state: State) -> MailboxClient:
    client = MailboxClient()
    if state in REQUESTS:
        assert send_request(client, REQUESTS[state]) == framed(REQUESTS[state])
    elif state is State.CLOSED:
        client.finish()
    elif state is State.FAILED:
        events_after(client, FRAMES["MailboxError"])
    assert client.state is state
    return client


def server_in(state: State) -> MailboxServer:
    server = MailboxServer()
    if state in REQUESTS:
        events_after(server, framed(REQUESTS[state]))
    elif state is State.CLOSED:
        server.finish()
    elif state is State.FAILED:
        server.fail("internal_error", "stopping")
    assert server.state is state
    return server


SESSIONS: dict[Role, Callable[[State], Session]] = {Role.CLIENT: client_in, Role.SERVER: server_in}
PEER = {Role.CLIENT: Role.SERVER, Role.SERVER: Role.CLIENT}


def assert_refused_without_change(session: Session, state: State) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        session.next_event()
    assert session.state is state
    with pytest.raises(type(info.value)):  # the same error from then on
        session.next_event()
    assert session.state is state
    return info.value


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("name", list(FRAMES))
def test_every_message_in_every_state_follows_the_table(
    role: Role, state: State, name: str
) -> None:
    session = SESSIONS[role](state)
    session.receive_data(FRAMES[name])
    new_state = TRANSITIONS.get((state, PEER[role], MESSAGES[name].TYPE))
    if new_state is None or state in TERMINAL_STATES:
        error = assert_refused_without_change(session, state)
        assert isinstance(error, UnexpectedMessage)
        return
    assert session.next_event() == MESSAGES[name]
    assert session.state is new_state
    assert session.next_event() is NEED_DATA


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state", list(State))
def test_the_end_of_stream_in_every_state_follows_the_table(role: Role, state: State) -> None:
    session = SESSIONS[role](state)
    session.receive_data(EOF)
    new_state = TRANSITIONS.get((state, PEER[role], END_OF_STREAM))
    if new_state is not None:
        assert session.next_event() == StreamEnded()
        assert session.state is new_state
    elif state in TERMINAL_STATES:
        assert session.next_event() is NEED_DATA  # the peer closed after the end: nothing more
        assert session.state is state
    else:
        assert isinstance(assert_refused_without_change(session, state), ClosedEarly)


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
    assert_refused_without_change(session, state)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("garbage_frame", MalformedInput),
        ("unknown_type", MalformedInput),
        ("a_notice", MalformedInput),
        ("envelope_not_matching_its_id", MalformedInput),
        ("non_minimal_prefix", MalformedInput),
        ("oversized_frame", FrameTooLarge),
        ("truncated_frame", TruncatedFrame),
    ],
)
def test_other_inputs_raise_their_own_errors(name: str, error: type[RemoteProtocolError]) -> None:
    server = server_in(State.IDLE)
    data, eof = OTHER_INPUTS[name]
    server.receive_data(data)
    if eof:
        server.receive_data(EOF)
    with pytest.raises(error):
        server.next_event()


def test_every_table_row_is_reached() -> None:
    # A row no honest run takes would be a row no test above checks the sessions against.
    assert {state for state, _, _ in TRANSITIONS} == set(State) - TERMINAL_STATES
    assert set(TRANSITIONS.values()) == set(State)
    assert {kind for _, _, kind in TRANSITIONS} == {
        *(message.TYPE for message in MESSAGES.values()),
        END_OF_STREAM,
        ABORT,
    }


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
