"""Signed ops: codec, signatures over every byte, and the typed verdicts of `verify_op`."""

import dataclasses
import hashlib
from typing import Any

import cbor2
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import content_id, content_id_of_bytes, content_id_of_digest, parse_content_id
from protocols.did import did_from_ed25519_public_key
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.hlc import MAX_COUNTER, MAX_DRIFT_MS, MAX_WALL_MS, Timestamp
from protocols.oplog import (
    ENTITY_TYPES,
    OP_TYPE,
    BadSignature,
    ChainBreak,
    ClockDrift,
    MalformedInput,
    OpKind,
    SequenceGap,
    SyncOperation,
    UnknownDevice,
    op_position,
    verify_op,
)
from protocols.peer_id import peer_id_from_ed25519_public_key

IDENTITY_KEY = nacl.signing.SigningKey(bytes(32))
AUTHOR = did_from_ed25519_public_key(bytes(IDENTITY_KEY.verify_key))
DEVICE_KEY = nacl.signing.SigningKey(b"\x01" * 32)
DEVICE_PUBLIC_KEY = bytes(DEVICE_KEY.verify_key)
DEVICE = peer_id_from_ed25519_public_key(DEVICE_PUBLIC_KEY)
OTHER_DEVICE_KEY = nacl.signing.SigningKey(b"\x02" * 32)
OTHER_DEVICE_PUBLIC_KEY = bytes(OTHER_DEVICE_KEY.verify_key)
OTHER_DEVICE = peer_id_from_ed25519_public_key(OTHER_DEVICE_PUBLIC_KEY)
NOW_MS = 1_700_000_000_000
PREV = content_id("the previous op")
ENTITY_ID = content_id({"kind": "conversation", "source_id": "c1"})
PAYLOAD: dict[str, object] = {
    "title": "Ordering in distributed systems",
    "provider": "openai",
    "model": None,
    "created_at_ms": NOW_MS - 5,
    "tags": ["hlc", b"\x00\xff"],
    "nested": {"entity_type": "not the op's", "signature": b"\x58\x40"},
}


def make_op(
    *,
    seq: int = 2,
    prev: str | None = PREV,
    wall_ms: int = NOW_MS,
    counter: int = 3,
    signing_key: nacl.signing.SigningKey = DEVICE_KEY,
    payload: dict[str, object] | None = None,
    entity_type: str = "conversation",
    kind: OpKind = OpKind.UPDATE,
) -> SyncOperation:
    device = peer_id_from_ed25519_public_key(bytes(signing_key.verify_key))
    return SyncOperation.sign(
        signing_key=signing_key,
        author=AUTHOR,
        device=device,
        seq=seq,
        prev=prev,
        hlc=Timestamp(wall_ms=wall_ms, counter=counter, node=device),
        entity_type=entity_type,
        entity_id=ENTITY_ID,
        kind=kind,
        payload=PAYLOAD if payload is None else payload,
    )


def verify(
    op: SyncOperation,
    *,
    key: bytes | None = DEVICE_PUBLIC_KEY,
    expected_seq: int = 2,
    expected_prev: str | None = PREV,
    now_ms: int = NOW_MS,
) -> None:
    verify_op(
        op,
        device_public_key=key,
        expected_seq=expected_seq,
        expected_prev=expected_prev,
        now_ms=now_ms,
    )


def wire_fields(op: SyncOperation) -> dict[str, Any]:
    fields = canonical_decode(op.to_wire())
    assert isinstance(fields, dict)
    return fields


# --- signing, ids, wire form ----------------------------------------------------------------------


def test_signed_op_verifies() -> None:
    op = make_op()
    verify(op)
    assert op.signature == DEVICE_KEY.sign(op.signed_bytes()).signature


def test_wire_is_the_signed_map_plus_the_signature() -> None:
    op = make_op()
    expected = {
        "type": OP_TYPE,
        "author": AUTHOR,
        "device": DEVICE,
        "seq": 2,
        "prev": PREV,
        "hlc": [NOW_MS, 3, DEVICE],
        "entity_type": "conversation",
        "entity_id": ENTITY_ID,
        "kind": "update",
        "payload": PAYLOAD,
    }
    assert op.signed_bytes() == canonical_encode(expected)
    assert op.to_wire() == canonical_encode({**expected, "signature": op.signature})
    assert wire_fields(op)["signature"] == op.signature


def test_id_is_the_content_id_of_the_wire_bytes_and_deterministic() -> None:
    op = make_op()
    assert op.id == content_id_of_bytes(op.to_wire())
    assert op.id.startswith("bafyrei")
    parse_content_id(op.id)
    again = make_op()
    assert again is not op
    assert again.id == op.id
    assert again == op
    assert hash(again) == hash(op)
    assert len({op, again}) == 1
    assert make_op(counter=4).id != op.id


def test_first_op_of_a_device_has_no_prev() -> None:
    op = make_op(seq=1, prev=None)
    assert wire_fields(op)["prev"] is None
    verify(op, expected_seq=1, expected_prev=None)


def test_signing_with_a_key_other_than_the_devices_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="not the key of the op's device"):
        SyncOperation.sign(
            signing_key=OTHER_DEVICE_KEY,
            author=AUTHOR,
            device=DEVICE,
            seq=1,
            prev=None,
            hlc=Timestamp(wall_ms=NOW_MS, counter=0, node=DEVICE),
            entity_type="acu",
            entity_id=ENTITY_ID,
            kind=OpKind.CREATE,
            payload={},
        )


# --- codec ----------------------------------------------------------------------------------------


def test_wire_round_trip() -> None:
    op = make_op()
    decoded = SyncOperation.from_wire(op.to_wire())
    assert decoded == op
    assert decoded.to_wire() == op.to_wire()
    assert decoded.signed_bytes() == op.signed_bytes()
    assert decoded.id == op.id
    verify(decoded)


def test_every_truncation_is_refused() -> None:
    wire = make_op().to_wire()
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            SyncOperation.from_wire(wire[:length])


@pytest.mark.parametrize("trailing", [b"\x00", b"\xf6", b"\xff\xff", make_op().to_wire()])
def test_trailing_bytes_are_refused(trailing: bytes) -> None:
    with pytest.raises(MalformedInput, match="trailing bytes"):
        SyncOperation.from_wire(make_op().to_wire() + trailing)


@given(
    seq=st.integers(1, 2**63 - 1),
    wall_ms=st.integers(0, MAX_WALL_MS),
    counter=st.integers(0, MAX_COUNTER),
    other_device=st.booleans(),
)
def test_op_position_is_the_device_and_seq_of_the_wire_bytes(
    seq: int, wall_ms: int, counter: int, other_device: bool
) -> None:
    op = make_op(
        seq=seq,
        prev=None if seq == 1 else PREV,
        wall_ms=wall_ms,
        counter=counter,
        signing_key=OTHER_DEVICE_KEY if other_device else DEVICE_KEY,
    )
    assert op_position(op.to_wire()) == (op.device, seq)


def test_op_position_of_a_truncated_op_is_refused() -> None:
    wire = make_op(seq=2**40, wall_ms=NOW_MS, counter=300).to_wire()
    end = wire.index(b"\x63seq") + 4 + 1 + 8  # the seq's head and its 8 bytes
    assert op_position(wire[:end]) == (DEVICE, 2**40)
    for length in range(end):
        with pytest.raises(MalformedInput):
            op_position(wire[:length])


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({"seq": 2, "hlc": [NOW_MS, 0, DEVICE]}),  # not an op's map of 11 entries
        b"\xab\x63hlc\x83\x1c",  # a head of a size CBOR does not have
        b"\xab\x63hlc\x83\x00\x00\x43abc\x63seq\x02",  # the node is bytes, not text
        b"\xab\x63hlc\x83\x00\x00\x63abc\x63sex\x02",  # another key where seq is
        b"\xab\x63hlc\x83\x00\x00\x62\xff\xfe\x63seq\x02",  # the node is not UTF-8
    ],
)
def test_op_position_of_bytes_not_laid_out_as_an_op_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        op_position(data)


def test_changing_any_single_byte_is_refused_or_breaks_the_signature() -> None:
    op = make_op()
    wire = op.to_wire()
    refused = broken = 0
    for position in range(len(wire)):
        for mask in (0x01, 0x02, 0x10, 0x80, 0xFF):
            changed = wire[:position] + bytes([wire[position] ^ mask]) + wire[position + 1 :]
            try:
                decoded = SyncOperation.from_wire(changed)
            except MalformedInput:
                refused += 1
                continue
            assert decoded != op
            with pytest.raises(BadSignature):
                verify(decoded)
            broken += 1
    assert refused > 0
    assert broken > 0


def test_non_canonical_wire_is_refused() -> None:
    fields = wire_fields(make_op())
    reordered = cbor2.dumps(dict(reversed(fields.items())))
    assert cbor2.loads(reordered) == fields
    with pytest.raises(MalformedInput, match="canonical"):
        SyncOperation.from_wire(reordered)


@pytest.mark.parametrize("value", [[], 1, "op", b"op", None])
def test_a_wire_value_that_is_not_a_map_is_refused(value: object) -> None:
    with pytest.raises(MalformedInput, match="expected a map"):
        SyncOperation.from_wire(canonical_encode(value))


@pytest.mark.parametrize(
    "type_tag", [None, "", 1, "vivim.op.v2", "vivim.identity.device_certificate.v1"]
)
def test_wrong_or_missing_type_tag_is_refused(type_tag: object) -> None:
    fields = wire_fields(make_op())
    if type_tag is None:
        del fields["type"]
    else:
        fields["type"] = type_tag
    with pytest.raises(MalformedInput, match="record type"):
        SyncOperation.from_wire(canonical_encode(fields))


def test_missing_and_extra_fields_are_refused() -> None:
    fields = wire_fields(make_op())
    for name in fields:
        if name == "type":
            continue
        without = {key: value for key, value in fields.items() if key != name}
        with pytest.raises(MalformedInput, match=f"missing \\['{name}'\\]"):
            SyncOperation.from_wire(canonical_encode(without))
    with pytest.raises(MalformedInput, match="unexpected \\['extra'\\]"):
        SyncOperation.from_wire(canonical_encode({**fields, "extra": 1}))


# (field, a wrong wire value for it, what the error says)
WRONG_WIRE_VALUES: list[tuple[str, object, str]] = [
    ("author", 1, "author is a int"),
    ("author", "did:web:example.com", "method is 'web'"),
    ("author", DEVICE, "not a DID"),
    ("device", b"device", "device is a bytes"),
    ("device", AUTHOR, "peer id"),
    ("device", "", "multihash code"),
    ("seq", 0, "seq is 0"),
    ("seq", -1, "seq is -1"),
    ("seq", 2**63, "seq is 9223372036854775808"),
    ("seq", True, "seq is a bool"),
    ("seq", "2", "seq is a str"),
    ("prev", None, "prev of op seq 2 must be an op id"),
    ("prev", "", "prev of op seq 2 must be an op id"),
    ("prev", PREV.upper(), "prev of op seq 2 must be an op id"),
    ("prev", PREV[:-1], "prev of op seq 2 must be an op id"),
    ("prev", parse_content_id(PREV), "prev of op seq 2 must be an op id"),
    ("hlc", [NOW_MS, 3], "timestamp has 2 items"),
    ("hlc", [NOW_MS, 3, OTHER_DEVICE], "hlc.node is not the op's device"),
    ("hlc", [NOW_MS, -3, DEVICE], "counter is -3"),
    ("hlc", {"wall_ms": NOW_MS}, "timestamp is a dict"),
    ("entity_type", "person", "entity_type is 'person'"),
    # Messages travel inside their conversation's ops: no op is about a message alone.
    ("entity_type", "message", "entity_type is 'message'"),
    ("entity_type", "", "entity_type is ''"),
    ("entity_type", ["acu"], "entity_type is a list"),
    ("entity_type", "ACU", "entity_type is 'ACU'"),
    ("entity_id", "", "entity_id is 0 characters"),
    ("entity_id", "x" * 257, "entity_id is 257 characters"),
    ("entity_id", 7, "entity_id is a int"),
    ("kind", "CREATE", "kind is 'CREATE'"),
    ("kind", "merge", "kind is 'merge'"),
    ("kind", 0, "kind is 0"),
    ("kind", ["create"], "kind is \\['create'\\]"),
    ("payload", [], "payload is a list"),
    ("payload", None, "payload is a NoneType"),
    ("payload", "title", "payload is a str"),
    ("signature", bytes(63), "signature must be 64 bytes"),
    ("signature", bytes(65), "signature must be 64 bytes"),
    ("signature", "sig", "signature must be 64 bytes"),
]


@pytest.mark.parametrize(("name", "value", "message"), WRONG_WIRE_VALUES)
def test_wrong_field_values_are_refused_on_the_wire(name: str, value: object, message: str) -> None:
    fields = wire_fields(make_op())
    with pytest.raises(MalformedInput, match=message):
        SyncOperation.from_wire(canonical_encode({**fields, name: value}))


def test_first_op_with_a_prev_is_refused() -> None:
    fields = wire_fields(make_op(seq=1, prev=None))
    with pytest.raises(MalformedInput, match="prev must be None"):
        SyncOperation.from_wire(canonical_encode({**fields, "prev": PREV}))


# (field, a wrong value for it on construction, what the error says)
WRONG_VALUES: list[tuple[str, object, str]] = [
    ("hlc", [NOW_MS, 3, DEVICE], "hlc is a list, expected a Timestamp"),
    ("hlc", Timestamp(wall_ms=NOW_MS, counter=0, node=OTHER_DEVICE), "hlc.node"),
    ("kind", "update", "expected an OpKind"),
    ("payload", {"ratio": 0.5}, "payload is not a map of plain CBOR values: .*float"),
    ("payload", {1: "one"}, "payload is not a map of plain CBOR values: .*map key 1"),
    ("payload", {"at": {"deeper": {1, 2}}}, "payload is not .*set"),
    ("payload", {"big": 2**64}, "payload is not .*outside"),
    ("signature", bytearray(64), "signature must be 64 bytes"),
]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [*WRONG_VALUES, *((n, v, m) for n, v, m in WRONG_WIRE_VALUES if n not in ("hlc", "kind"))],
)
def test_wrong_field_values_are_refused_on_construction(
    name: str, value: object, message: str
) -> None:
    changes: dict[str, Any] = {name: value}
    with pytest.raises(MalformedInput, match=message):
        dataclasses.replace(make_op(), **changes)


def test_prev_is_checked_exactly_like_a_content_id() -> None:
    # The op log checks `prev` without decoding it; it must agree with parse_content_id.
    op = make_op()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567ABZ019=-_ "
    for text in [PREV, content_id_of_digest(bytes(32)), content_id_of_digest(b"\xff" * 32)]:
        for position in range(len(text)):
            for char in alphabet:
                candidate = text[:position] + char + text[position + 1 :]
                try:
                    parse_content_id(candidate)
                    valid = True
                except MalformedInput:
                    valid = False
                if valid:
                    assert dataclasses.replace(op, prev=candidate).prev == candidate
                else:
                    with pytest.raises(MalformedInput, match="prev"):
                        dataclasses.replace(op, prev=candidate)
        for candidate in (text + "a", text[:-1], "B" + text[1:], text + "\n"):
            with pytest.raises(MalformedInput):
                parse_content_id(candidate)
            with pytest.raises(MalformedInput, match="prev"):
                dataclasses.replace(op, prev=candidate)


@given(st.binary(min_size=32, max_size=32))
def test_every_content_id_is_accepted_as_prev(digest: bytes) -> None:
    prev = content_id_of_digest(hashlib.sha256(digest).digest())
    assert dataclasses.replace(make_op(), prev=prev).prev == prev


def test_splice_holds_when_the_payload_mimics_the_wire_keys() -> None:
    payload: dict[str, object] = {
        "entity_type": "acu",
        "signature": bytes(64),
        "x": b"\x6bentity_type\x6bentity_type",
        "entity_typ": "\x6bentity_type",
    }
    op = make_op(payload=payload)
    assert op.to_wire() == canonical_encode({**wire_fields(op), "signature": op.signature})
    assert wire_fields(op)["payload"] == payload
    verify(SyncOperation.from_wire(op.to_wire()))


# --- tampering ------------------------------------------------------------------------------------


TAMPERED_VALUES: dict[str, object] = {
    "author": did_from_ed25519_public_key(bytes(OTHER_DEVICE_KEY.verify_key)),
    "seq": 3,
    "prev": content_id("another op"),
    "hlc": Timestamp(wall_ms=NOW_MS, counter=4, node=DEVICE),
    "entity_type": "acu",
    "entity_id": content_id("another entity"),
    "kind": OpKind.DELETE,
    "payload": {**PAYLOAD, "title": "Ordering in distributed systems!"},
}


@pytest.mark.parametrize("name", [field.name for field in dataclasses.fields(SyncOperation)])
def test_tampering_with_any_field_breaks_the_signature(name: str) -> None:
    op = make_op()
    changes: dict[str, Any]
    if name == "signature":
        changes = {"signature": bytes([op.signature[0] ^ 1]) + op.signature[1:]}
    elif name == "device":
        # Claimed by another device: under either device's key the signature fails.
        changes = {"device": OTHER_DEVICE, "hlc": dataclasses.replace(op.hlc, node=OTHER_DEVICE)}
    else:
        changes = {name: TAMPERED_VALUES[name]}
    tampered = dataclasses.replace(op, **changes)
    assert tampered != op
    assert tampered.id != op.id
    for key in (DEVICE_PUBLIC_KEY, OTHER_DEVICE_PUBLIC_KEY):
        with pytest.raises(BadSignature):
            verify(tampered, key=key, expected_seq=tampered.seq, expected_prev=tampered.prev)
    # The tampered op survives the codec, and still fails there.
    decoded = SyncOperation.from_wire(tampered.to_wire())
    with pytest.raises(BadSignature):
        verify(decoded, expected_seq=tampered.seq, expected_prev=tampered.prev)


def test_signature_under_another_record_type_does_not_verify() -> None:
    op = make_op()
    fields = canonical_decode(op.signed_bytes())
    assert isinstance(fields, dict)
    relabelled = canonical_encode({**fields, "type": "vivim.op.v2"})
    forged = dataclasses.replace(op, signature=DEVICE_KEY.sign(relabelled).signature)
    with pytest.raises(BadSignature):
        verify(forged)


# --- verify_op verdicts ---------------------------------------------------------------------------


def test_unknown_device() -> None:
    with pytest.raises(UnknownDevice, match="no valid certificate") as info:
        verify(make_op(), key=None)
    assert info.value.code == "unknown_device"
    assert isinstance(info.value, RemoteProtocolError)


def test_wrong_key_is_a_bad_signature() -> None:
    with pytest.raises(BadSignature, match="not the key of the op's device") as info:
        verify(make_op(), key=OTHER_DEVICE_PUBLIC_KEY)
    assert info.value.code == "bad_signature"


def test_sequence_gap_carries_expected_and_got() -> None:
    with pytest.raises(SequenceGap, match="expected seq 2, got 5") as info:
        verify(make_op(seq=5))
    assert (info.value.expected, info.value.got) == (2, 5)
    assert info.value.code == "sequence_gap"
    assert isinstance(info.value, RemoteProtocolError)
    with pytest.raises(SequenceGap) as first:
        verify(make_op(seq=2), expected_seq=1, expected_prev=None)
    assert (first.value.expected, first.value.got) == (1, 2)


def test_seq_below_expected_is_a_chain_break() -> None:
    with pytest.raises(ChainBreak, match="already has an op at seq 2") as info:
        verify(make_op(), expected_seq=3, expected_prev=content_id("op 2"))
    assert info.value.code == "chain_break"
    assert isinstance(info.value, RemoteProtocolError)
    with pytest.raises(ChainBreak, match="already has an op at seq 1"):
        verify(make_op(seq=1, prev=None), expected_seq=2, expected_prev=PREV)


def test_wrong_prev_is_a_chain_break() -> None:
    with pytest.raises(ChainBreak, match="names prev"):
        verify(make_op(), expected_prev=content_id("a different op 1"))


def test_hlc_too_far_ahead_is_clock_drift() -> None:
    at_limit = make_op(wall_ms=NOW_MS + MAX_DRIFT_MS)
    verify(at_limit)
    too_far = make_op(wall_ms=NOW_MS + MAX_DRIFT_MS + 1)
    with pytest.raises(ClockDrift, match="ahead of our clock") as info:
        verify(too_far)
    assert info.value.code == "clock_drift"
    verify_op(
        too_far,
        device_public_key=DEVICE_PUBLIC_KEY,
        expected_seq=2,
        expected_prev=PREV,
        now_ms=NOW_MS,
        max_drift_ms=MAX_DRIFT_MS + 1,
    )
    # Stamps in the past are fine: ops are replayed long after they were made.
    verify(make_op(wall_ms=0))


def test_checks_run_in_the_documented_order() -> None:
    # Everything wrong at once: each verdict shows once the earlier problems are fixed.
    bad = dataclasses.replace(
        make_op(seq=5, wall_ms=NOW_MS + MAX_DRIFT_MS + 1), signature=bytes(64)
    )
    with pytest.raises(UnknownDevice):
        verify(bad, key=None)
    with pytest.raises(BadSignature):
        verify(bad)
    with pytest.raises(ClockDrift):
        verify(make_op(seq=5, wall_ms=NOW_MS + MAX_DRIFT_MS + 1))
    with pytest.raises(SequenceGap):
        verify(make_op(seq=5, prev=content_id("elsewhere")))
    with pytest.raises(ChainBreak):
        verify(make_op(seq=1, prev=None, wall_ms=NOW_MS), expected_seq=2, expected_prev=PREV)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key": bytes(31)}, "32 bytes"),
        ({"key": "key"}, "32 bytes"),
        ({"expected_seq": 0, "expected_prev": None}, "expected_seq"),
        ({"expected_seq": True, "expected_prev": None}, "expected_seq"),
        ({"expected_seq": 1, "expected_prev": PREV}, "expected_prev"),
        ({"expected_seq": 2, "expected_prev": None}, "expected_prev"),
        ({"now_ms": -1}, "now_ms"),
        ({"now_ms": 1.5}, "now_ms"),
    ],
)
def test_impossible_arguments_are_a_local_error(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        verify(make_op(), **changes)


# --- properties -----------------------------------------------------------------------------------

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(
    st.one_of(st.text(max_size=12), st.sampled_from(["entity_type", "signature", "type"])),
    plain_values,
    max_size=6,
)
device_keys = st.sampled_from([DEVICE_KEY, OTHER_DEVICE_KEY])


@given(
    signing_key=device_keys,
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    prev_digest=st.binary(min_size=32, max_size=32),
    wall_ms=st.integers(min_value=0, max_value=2**48 - 1),
    counter=st.integers(min_value=0, max_value=2**16 - 1),
    entity_type=st.sampled_from(sorted(ENTITY_TYPES)),
    entity_id=st.text(min_size=1, max_size=256),
    kind=st.sampled_from(OpKind),
    payload=payloads,
)
def test_codec_round_trip(
    signing_key: nacl.signing.SigningKey,
    seq: int,
    prev_digest: bytes,
    wall_ms: int,
    counter: int,
    entity_type: str,
    entity_id: str,
    kind: OpKind,
    payload: dict[str, object],
) -> None:
    device = peer_id_from_ed25519_public_key(bytes(signing_key.verify_key))
    prev = None if seq == 1 else content_id_of_digest(prev_digest)
    op = SyncOperation.sign(
        signing_key=signing_key,
        author=AUTHOR,
        device=device,
        seq=seq,
        prev=prev,
        hlc=Timestamp(wall_ms=wall_ms, counter=counter, node=device),
        entity_type=entity_type,
        entity_id=entity_id,
        kind=kind,
        payload=payload,
    )
    wire = op.to_wire()
    # The spliced wire bytes are exactly the canonical encoding of the wire map.
    signed = canonical_decode(op.signed_bytes())
    assert isinstance(signed, dict)
    assert wire == canonical_encode({**signed, "signature": op.signature})
    decoded = SyncOperation.from_wire(wire)
    assert decoded == op
    assert decoded.to_wire() == wire
    assert decoded.id == op.id == content_id_of_bytes(wire)
    # from_wire cuts the signed bytes out of the wire bytes: the same bytes as encoding them.
    assert "_signed" in decoded.__dict__
    assert decoded.signed_bytes() == op.signed_bytes() == canonical_encode(signed)
    verify_op(
        decoded,
        device_public_key=bytes(signing_key.verify_key),
        expected_seq=seq,
        expected_prev=prev,
        now_ms=wall_ms,
    )


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_malformed_input(data: bytes) -> None:
    try:
        op = SyncOperation.from_wire(data)
    except MalformedInput:
        return
    assert op.to_wire() == data


def test_an_op_rebuilt_from_checked_wire_bytes_equals_the_decoded_one() -> None:
    from protocols.oplog import op_from_checked_wire, verify_signature

    key = nacl.signing.SigningKey(bytes([7]) * 32)
    device = peer_id_from_ed25519_public_key(bytes(key.verify_key))
    did = did_from_ed25519_public_key(bytes(nacl.signing.SigningKey(bytes([8]) * 32).verify_key))
    op = SyncOperation.sign(
        signing_key=key,
        author=did,
        device=device,
        seq=1,
        prev=None,
        hlc=Timestamp(wall_ms=1, counter=0, node=device),
        entity_type="acu_link",
        entity_id="x",
        kind=OpKind.CREATE,
        payload={"a": [1, b"2"]},
    )
    decoded = SyncOperation.from_wire(op.to_wire())
    rebuilt = op_from_checked_wire(op.to_wire())
    assert rebuilt == decoded and rebuilt.id == decoded.id
    verify_signature(rebuilt)
