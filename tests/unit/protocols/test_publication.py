"""Global publications: the record (round trip, tampering of each field, bounds, versions), its
verification against credentials, and the `/vivim/global/1.0.0` pull sessions."""

import dataclasses
from typing import Any

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id, content_id_of_bytes
from protocols.did import did_from_ed25519_public_key
from protocols.errors import (
    BadSignature,
    ClosedEarly,
    FrameTooLarge,
    LocalProtocolError,
    MalformedInput,
    MismatchedAnswer,
    RemoteProtocolError,
    UnexpectedMessage,
)
from protocols.framing import encode_frame, encode_varint
from protocols.global_sync import (
    MAX_FRAME,
    MAX_LIMIT,
    NEED_DATA,
    Batch,
    GlobalError,
    GlobalSyncClient,
    GlobalSyncServer,
    Pull,
    State,
    StreamEnded,
    decode_message,
    take_fitting,
)
from protocols.identity_records import DeviceCertificate
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.publication import (
    MAX_CONTENT_BYTES,
    MAX_PUBLICATION_BYTES,
    PUBLICATION_TYPE,
    ContentMismatch,
    GlobalPublication,
    PublicationTooLarge,
    SubjectKind,
    UntrustedPublisher,
    verify_publication,
)
from protocols.vault_records import acu_id, conversation_id

NOW_MS = 1_700_000_000_000


def key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed.to_bytes(32, "big"))


IDENTITY_KEY, DEVICE_KEY, SECOND_DEVICE_KEY, STRANGER_KEY = key(1), key(11), key(12), key(99)
DID = did_from_ed25519_public_key(bytes(IDENTITY_KEY.verify_key))
STRANGER_DID = did_from_ed25519_public_key(bytes(STRANGER_KEY.verify_key))
DEVICE = peer_id_from_ed25519_public_key(bytes(DEVICE_KEY.verify_key))
SECOND_DEVICE = peer_id_from_ed25519_public_key(bytes(SECOND_DEVICE_KEY.verify_key))


def certificate(
    device_key: nacl.signing.SigningKey,
    *,
    approver_key: nacl.signing.SigningKey = IDENTITY_KEY,
    approver: str = DID,
    did: str = DID,
) -> DeviceCertificate:
    return DeviceCertificate.create(
        signing_key=approver_key,
        did=did,
        device_public_key=bytes(device_key.verify_key),
        approver=approver,
        issued_at_ms=NOW_MS - 1000,
    )


CERTIFICATE = certificate(DEVICE_KEY)
SECOND_CERTIFICATE = certificate(SECOND_DEVICE_KEY, approver_key=DEVICE_KEY, approver=DEVICE)


def acu_map(text: str = "Rust ownership in one line") -> dict[str, object]:
    return {
        "id": acu_id(DID, text, "insight", NOW_MS),
        "author": DID,
        "content": text,
        "type": "insight",
        "category": "programming",
        "language": None,
        "source_time_ms": NOW_MS,
        "conversation_id": content_id({"c": 1}),
        "message_id": content_id({"m": 1}),
        "position": 0,
        "provider": "chatgpt",
        "model": None,
    }


def acu_content(text: str = "Rust ownership in one line") -> tuple[str, bytes]:
    acu = acu_map(text)
    return str(acu["id"]), canonical_encode({"kind": "acu", "acu": acu})


def conversation_content() -> tuple[str, bytes]:
    cid = conversation_id(DID, "chatgpt", "src-1")
    content = {
        "kind": "conversation",
        "conversation": {
            "id": cid,
            "owner": DID,
            "title": "Ownership",
            "provider": "chatgpt",
            "model": None,
            "source_id": "src-1",
            "created_at_ms": NOW_MS,
            "updated_at_ms": None,
        },
        "messages": [
            {
                "id": content_id({"m": 1}),
                "position": 0,
                "role": "user",
                "content": "What is ownership?",
                "created_at_ms": None,
                "branch": "main",
                "parent_id": None,
            }
        ],
        "acus": [acu_map()],
    }
    return cid, canonical_encode(content)


def publish(**overrides: Any) -> GlobalPublication:
    subject, content = acu_content()
    fields: dict[str, Any] = {
        "signing_key": DEVICE_KEY,
        "publisher_did": DID,
        "subject_kind": SubjectKind.ACU,
        "subject_id": subject,
        "version": 1,
        "previous_id": None,
        "content": content,
        "title": "Ownership",
        "tags": ("rust", "memory"),
        "license": "CC-BY-4.0",
        "published_at_ms": NOW_MS,
        "certificate": CERTIFICATE.to_wire(),
        "chain": (),
        "rotations": (),
    }
    fields.update(overrides)
    return GlobalPublication.create(**fields)


# --- the record -----------------------------------------------------------------------------------


def test_round_trip_and_id() -> None:
    publication = publish()
    wire = publication.to_wire()
    again = GlobalPublication.from_wire(wire)
    assert again == publication
    assert again.to_wire() == wire
    assert again.id == content_id_of_bytes(publication.signed_bytes())
    assert canonical_decode(wire)["type"] == PUBLICATION_TYPE  # type: ignore[index]
    assert publication.tags == ("memory", "rust")  # sorted, one spelling
    verify_publication(again)


def test_conversation_publication_verifies() -> None:
    subject, content = conversation_content()
    publication = publish(
        subject_kind=SubjectKind.CONVERSATION, subject_id=subject, content=content
    )
    verify_publication(GlobalPublication.from_wire(publication.to_wire()))


def test_device_approved_by_a_device_verifies_with_its_chain() -> None:
    publication = publish(
        signing_key=SECOND_DEVICE_KEY,
        certificate=SECOND_CERTIFICATE.to_wire(),
        chain=(CERTIFICATE.to_wire(),),
    )
    verify_publication(publication)
    without_chain = publish(signing_key=SECOND_DEVICE_KEY, certificate=SECOND_CERTIFICATE.to_wire())
    with pytest.raises(UntrustedPublisher):
        verify_publication(without_chain)


def test_trailing_bytes_and_other_types_are_refused() -> None:
    wire = publish().to_wire()
    with pytest.raises(MalformedInput):
        GlobalPublication.from_wire(wire + b"\x00")
    fields = canonical_decode(wire)
    assert isinstance(fields, dict)
    with pytest.raises(MalformedInput):
        GlobalPublication.from_wire(canonical_encode({**fields, "type": "vivim.sharing.grant.v1"}))
    with pytest.raises(MalformedInput):
        GlobalPublication.from_wire(canonical_encode({**fields, "extra": 1}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("publisher_did", STRANGER_DID),
        ("publisher_device", SECOND_DEVICE),
        ("subject_id", content_id({"other": 1})),
        ("version", 2),
        ("previous_id", content_id({"previous": 1})),
        ("content_id", content_id({"other content": 1})),
        ("content", acu_content("other text")[1]),
        ("title", "Another title"),
        ("tags", ["altered"]),
        ("license", "proprietary"),
        ("published_at_ms", NOW_MS + 1),
        ("certificate", SECOND_CERTIFICATE.to_wire()),
        ("chain", [CERTIFICATE.to_wire()]),
        ("rotations", [CERTIFICATE.to_wire()]),
        ("signature", bytes(64)),
    ],
)
def test_tampering_with_any_field_is_caught(name: str, value: object) -> None:
    fields = canonical_decode(publish().to_wire())
    assert isinstance(fields, dict)
    fields[name] = value
    if name == "version":
        fields["previous_id"] = content_id({"previous": 1})
    if name == "previous_id":
        fields["version"] = 2
    try:
        tampered = GlobalPublication.from_wire(canonical_encode(fields))
    except MalformedInput:
        return  # refused on decoding is caught too
    with pytest.raises(RemoteProtocolError) as caught:
        verify_publication(tampered)
    assert isinstance(caught.value, BadSignature | ContentMismatch | UntrustedPublisher)


def test_content_not_matching_its_id_is_refused_even_when_signed() -> None:
    subject, _ = acu_content()
    _, other = acu_content("not the subject")
    with pytest.raises(ContentMismatch):
        verify_publication(publish(subject_id=subject, content=other))
    bad_acu = {**acu_map(), "content": "edited after hashing"}
    with pytest.raises(ContentMismatch):
        verify_publication(publish(content=canonical_encode({"kind": "acu", "acu": bad_acu})))
    with pytest.raises(ContentMismatch):
        verify_publication(publish(subject_kind=SubjectKind.CONVERSATION))
    with pytest.raises(MalformedInput):
        verify_publication(publish(content=canonical_encode({"kind": "acu", "acu": 1})))


def test_signed_by_a_stranger_device_is_untrusted() -> None:
    stranger_certificate = certificate(
        STRANGER_KEY, approver_key=STRANGER_KEY, approver=STRANGER_DID, did=STRANGER_DID
    )
    with pytest.raises(UntrustedPublisher):
        # A certificate for another device than the signer's.
        verify_publication(publish(certificate=SECOND_CERTIFICATE.to_wire()))
    forged = certificate(DEVICE_KEY, approver_key=STRANGER_KEY)  # not signed by DID's key
    with pytest.raises(UntrustedPublisher):
        verify_publication(publish(certificate=forged.to_wire()))
    with pytest.raises(UntrustedPublisher):
        verify_publication(publish(certificate=stranger_certificate.to_wire()))
    with pytest.raises(UntrustedPublisher):
        verify_publication(publish(certificate=b"not a certificate"))


def test_versions_chain() -> None:
    first = publish()
    second = publish(version=2, previous_id=first.id, title="Ownership, revised")
    third = publish(version=3, previous_id=second.id)
    assert len({first.id, second.id, third.id}) == 3
    assert (second.previous_id, third.previous_id) == (first.id, second.id)
    for bad in ({"version": 2}, {"version": 1, "previous_id": first.id}, {"version": 0}):
        with pytest.raises(LocalProtocolError):
            publish(**bad)


def test_bounds() -> None:
    with pytest.raises(LocalProtocolError):
        publish(title="x" * 301)
    with pytest.raises(LocalProtocolError):
        publish(tags=tuple(f"t{i}" for i in range(17)))
    with pytest.raises(LocalProtocolError):
        publish(tags=("",))
    with pytest.raises(LocalProtocolError):
        publish(content=b"\x00" * (MAX_CONTENT_BYTES + 1))
    with pytest.raises(PublicationTooLarge):
        GlobalPublication.from_wire(b"\x00" * (MAX_PUBLICATION_BYTES + 1))


@given(
    title=st.text(max_size=40),
    tags=st.lists(st.text(min_size=1, max_size=10), max_size=5),
    at=st.integers(0, 2**63 - 1),
)
def test_round_trip_any_fields(title: str, tags: list[str], at: int) -> None:
    publication = publish(title=title, tags=tuple(tags), published_at_ms=at)
    assert GlobalPublication.from_wire(publication.to_wire()) == publication


# --- the pull sessions ----------------------------------------------------------------------------


def exchange(frame: bytes, receiver: GlobalSyncClient | GlobalSyncServer) -> object:
    receiver.receive_data(frame)
    event = receiver.next_event()
    assert receiver.next_event() is NEED_DATA
    return event


def test_pull_batch_and_finish() -> None:
    client, server = GlobalSyncClient(), GlobalSyncServer()
    publications = (publish(), publish(version=2, previous_id=publish().id))
    pull = exchange(client.pull(after=0, limit=10), server)
    assert pull == Pull(after=0, limit=10)
    assert server.state is State.AWAIT_BATCH
    batch = exchange(server.batch(publications, last=7, more=True), client)
    assert isinstance(batch, Batch)
    assert batch.publications == publications
    assert (batch.last, batch.more) == (7, True)
    exchange(client.pull(after=7), server)
    assert exchange(server.batch((), last=7, more=False), client) == Batch(
        publications=(), last=7, more=False
    )
    client.finish()
    server.receive_data(b"")
    assert isinstance(server.next_event(), StreamEnded)
    assert server.state is State.CLOSED


def test_error_ends_the_stream() -> None:
    client, server = GlobalSyncClient(), GlobalSyncServer()
    exchange(client.pull(after=0), server)
    error = exchange(server.fail("busy", "try later"), client)
    assert error == GlobalError(code="busy", message="try later")
    assert client.state is State.FAILED
    with pytest.raises(LocalProtocolError):
        client.pull(after=0)


def test_batches_that_do_not_fit_the_pull_are_mismatched() -> None:
    for limit, after, publications, last, more in (
        (1, 0, (publish(), publish(title="b")), 2, False),  # over the limit
        (5, 5, (publish(),), 5, False),  # does not move past `after`
        (5, 5, (), 9, False),  # empty, yet moves the cursor
    ):
        client = GlobalSyncClient()
        client.pull(after=after, limit=limit)
        frame = encode_frame(
            Batch(publications=publications, last=last, more=more).to_wire(), MAX_FRAME
        )
        client.receive_data(frame)
        with pytest.raises(MismatchedAnswer):
            client.next_event()
        with pytest.raises(MismatchedAnswer):  # sticky
            client.next_event()


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(b"garbage", MAX_FRAME),
        encode_frame(
            canonical_encode({"type": "vivim.global.pull.v1", "after": -1, "limit": 1}), MAX_FRAME
        ),
        encode_frame(
            canonical_encode({"type": "vivim.global.pull.v1", "after": 0, "limit": 0}), MAX_FRAME
        ),
        encode_frame(
            canonical_encode({"type": "vivim.global.pull.v1", "after": 0, "limit": MAX_LIMIT + 1}),
            MAX_FRAME,
        ),
        encode_frame(canonical_encode({"type": "vivim.global.nope.v1"}), MAX_FRAME),
        encode_varint(MAX_FRAME + 1),
    ],
)
def test_garbage_frames_are_typed_errors(frame: bytes) -> None:
    server = GlobalSyncServer()
    server.receive_data(frame)
    with pytest.raises(MalformedInput) as caught:
        server.next_event()
    if frame.startswith(encode_varint(MAX_FRAME + 1)):
        assert isinstance(caught.value, FrameTooLarge)
    # The server may still say why and stop.
    assert server.fail(caught.value.code, str(caught.value))


def test_out_of_turn_and_early_close() -> None:
    server = GlobalSyncServer()
    server.receive_data(encode_frame(GlobalError(code="x", message="").to_wire(), MAX_FRAME))
    with pytest.raises(UnexpectedMessage):
        server.next_event()
    client = GlobalSyncClient()
    client.pull(after=0)
    client.receive_data(b"")
    with pytest.raises(ClosedEarly):
        client.next_event()
    with pytest.raises(LocalProtocolError):
        GlobalSyncServer().batch((), last=0, more=False)  # no pull to answer


def test_malformed_publication_inside_a_batch_is_malformed() -> None:
    value = {"type": "vivim.global.batch.v1", "last": 1, "more": False, "publications": [b"x"]}
    with pytest.raises(MalformedInput):
        decode_message(canonical_encode(value))


def test_take_fitting() -> None:
    assert take_fitting([]) == 0
    assert take_fitting([b"x"] * 3) == 3
    assert take_fitting([b"x"] * (MAX_LIMIT + 5)) == MAX_LIMIT
    big = b"x" * MAX_PUBLICATION_BYTES
    assert take_fitting([big] * 10) == 3  # 2 MiB holds three of 576 KiB
    assert take_fitting([b"x" * (3 * 1024 * 1024)]) == 1


def test_largest_batch_fits_a_frame() -> None:
    text = "y" * (MAX_CONTENT_BYTES - 2000)
    subject, content = acu_content(text)
    big = publish(subject_id=subject, content=content)
    assert len(big.to_wire()) <= MAX_PUBLICATION_BYTES
    count = take_fitting([big.to_wire()] * 10)
    server = GlobalSyncServer()
    server.receive_data(GlobalSyncClient().pull(after=0))
    server.next_event()
    frame = server.batch([big] * count, last=count, more=True)
    assert len(frame) <= MAX_FRAME + 10
    assert dataclasses.replace(big).id == big.id
