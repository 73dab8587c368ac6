"""The sync protocol's messages: the wire form pinned, every truncation, every bad field refused."""

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import InvalidPeerId, MalformedInput, RemoteProtocolError
from protocols.framing import encode_frame
from protocols.peer_id import peer_id_from_ed25519_public_key
from protocols.sync import (
    MAX_BATCH_BYTES,
    MAX_BATCH_OPS,
    MAX_CURSOR_DEVICES,
    MAX_FRAME,
    MAX_SEQ,
    Batch,
    BatchTooLarge,
    Message,
    Pull,
    SyncError,
    check_device_seqs,
    decode_message,
)


def peer_id(seed: int) -> str:
    return peer_id_from_ed25519_public_key(seed.to_bytes(32, "big"))


A, B = peer_id(1), peer_id(2)
SHA256_PEER_ID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
PULL = Pull(cursor={A: 3, B: 0}, max_ops=100, max_bytes=1000)
BATCH = Batch(ops=(b"op a4", b"op a5"), heads={A: 5, B: 0}, done=True)
ERROR = SyncError(code="unauthorized", message="you may not pull this vault")
MESSAGES: list[Message] = [PULL, BATCH, ERROR]
IDS = ["pull", "batch", "error"]


def test_the_wire_form_of_each_message() -> None:
    # Built by hand from the protocol's definition, not from the classes.
    assert PULL.to_wire() == canonical_encode(
        {"type": "vivim.sync.pull.v1", "cursor": {A: 3, B: 0}, "max_ops": 100, "max_bytes": 1000}
    )
    assert BATCH.to_wire() == canonical_encode(
        {
            "type": "vivim.sync.batch.v1",
            "ops": [b"op a4", b"op a5"],
            "heads": {A: 5, B: 0},
            "done": True,
        }
    )
    assert ERROR.to_wire() == canonical_encode(
        {"type": "vivim.sync.error.v1", "code": ERROR.code, "message": ERROR.message}
    )


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_wire_is_the_type_and_every_field(message: Message) -> None:
    fields = canonical_decode(message.to_wire())
    assert isinstance(fields, dict)
    assert fields.pop("type") == message.TYPE
    assert fields.keys() == {field.name for field in dataclasses.fields(message)}
    assert decode_message(message.to_wire()) == message
    assert type(message).from_wire(message.to_wire()) == message


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_every_truncation_and_trailing_bytes_are_refused(message: Message) -> None:
    wire = message.to_wire()
    for length in range(len(wire)):
        with pytest.raises(MalformedInput):
            decode_message(wire[:length])
    for trailing in (b"\x00", wire):
        with pytest.raises(MalformedInput, match="trailing"):
            decode_message(wire + trailing)


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_from_wire_of_another_message_type_is_refused(message: Message) -> None:
    for other in MESSAGES:
        if type(other) is not type(message):
            with pytest.raises(MalformedInput, match="expected a"):
                type(message).from_wire(other.to_wire())


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_missing_and_extra_fields_are_refused(message: Message) -> None:
    fields = canonical_decode(message.to_wire())
    assert isinstance(fields, dict)
    for name in fields:
        if name != "type":
            with pytest.raises(MalformedInput, match="missing"):
                decode_message(canonical_encode({k: v for k, v in fields.items() if k != name}))
    with pytest.raises(MalformedInput, match="unexpected"):
        decode_message(canonical_encode({**fields, "extra": 1}))


@pytest.mark.parametrize(
    "value", [[], 1, "pull", None, {"type": 1}, {"type": "vivim.sync.push.v1"}, {"cursor": {}}]
)
def test_values_that_are_not_messages_are_refused(value: object) -> None:
    with pytest.raises(MalformedInput, match="not a sync message"):
        decode_message(canonical_encode(value))


def test_non_canonical_cbor_is_refused() -> None:
    wire = PULL.to_wire()
    assert wire[0] == 0xA4  # a map of four entries
    indefinite = b"\xbf" + wire[1:] + b"\xff"
    with pytest.raises(MalformedInput, match="canonical"):
        decode_message(indefinite)


def wire_with(original: Message, **changes: object) -> bytes:
    fields = canonical_decode(original.to_wire())
    assert isinstance(fields, dict)
    return canonical_encode({**fields, **changes})


def devices(count: int, seq: int = 1) -> dict[str, int]:
    return {peer_id(index): seq for index in range(count)}


TWO_HALVES = [b"x" * (MAX_BATCH_BYTES // 2), b"y" * (MAX_BATCH_BYTES // 2 + 1)]
WRONG_FIELDS: list[tuple[Message, dict[str, Any], type[MalformedInput], str]] = [
    (PULL, {"cursor": [A, 3]}, MalformedInput, "cursor is a tuple, expected a map"),
    (PULL, {"cursor": {"not a peer id": 1}}, InvalidPeerId, "cursor key 'not a peer id'"),
    (PULL, {"cursor": {SHA256_PEER_ID: 1}}, InvalidPeerId, "SHA-256"),
    (PULL, {"cursor": {A: -1}}, MalformedInput, r"cursor\[.*\] is -1, expected 0 to"),
    (PULL, {"cursor": {A: 2**63}}, MalformedInput, "expected 0 to 9223372036854775807"),
    (PULL, {"cursor": {A: True}}, MalformedInput, "is a bool, expected int"),
    (PULL, {"cursor": {A: "3"}}, MalformedInput, "is a str, expected int"),
    (PULL, {"cursor": {A: None}}, MalformedInput, "is a NoneType"),
    (PULL, {"cursor": devices(MAX_CURSOR_DEVICES + 1)}, MalformedInput, "more than 4096"),
    (PULL, {"max_ops": 0}, MalformedInput, "max_ops is 0, expected 1 to 10000"),
    (PULL, {"max_ops": MAX_BATCH_OPS + 1}, MalformedInput, "max_ops is 10001"),
    (PULL, {"max_ops": True}, MalformedInput, "max_ops is a bool"),
    (PULL, {"max_bytes": 0}, MalformedInput, "max_bytes is 0"),
    (PULL, {"max_bytes": MAX_BATCH_BYTES + 1}, MalformedInput, "max_bytes is 4194305"),
    (PULL, {"max_bytes": "1000"}, MalformedInput, "max_bytes is a str"),
    (BATCH, {"ops": b"op"}, MalformedInput, "ops is a bytes, expected a list"),
    (BATCH, {"ops": {"op": b"op"}}, MalformedInput, "ops is a dict"),
    (BATCH, {"ops": ["op"]}, MalformedInput, "ops holds a str, expected bytes"),
    (BATCH, {"ops": [b"op", b""]}, MalformedInput, "empty byte string"),
    (BATCH, {"ops": [b"op"] * (MAX_BATCH_OPS + 1)}, BatchTooLarge, "10001 ops"),
    (BATCH, {"ops": TWO_HALVES}, BatchTooLarge, "4194305 bytes of ops"),
    (BATCH, {"heads": {A: -1}}, MalformedInput, r"heads\[.*\] is -1"),
    (BATCH, {"heads": {"12D3KooW": 1}}, InvalidPeerId, "heads key"),
    (BATCH, {"heads": None}, MalformedInput, "heads is a NoneType, expected a map"),
    (BATCH, {"done": 1}, MalformedInput, "done is a int, expected bool"),
    (BATCH, {"ops": [], "done": False}, MalformedInput, "without ops must be done"),
    (ERROR, {"code": "Unauthorized"}, MalformedInput, "not like"),
    (ERROR, {"code": "too-large"}, MalformedInput, "not like"),
    (ERROR, {"code": ""}, MalformedInput, "not like"),
    (ERROR, {"code": "x" * 65}, MalformedInput, "more than 64"),
    (ERROR, {"code": 5}, MalformedInput, "code is a int"),
    (ERROR, {"message": "x" * 1001}, MalformedInput, "more than 1000"),
    (ERROR, {"message": b"bytes"}, MalformedInput, "message is a bytes"),
]


@pytest.mark.parametrize(("message", "changes", "error", "match"), WRONG_FIELDS)
def test_wrong_field_values_are_refused(
    message: Message, changes: dict[str, Any], error: type[MalformedInput], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode_message(wire_with(message, **changes))


def test_batch_too_large_is_malformed_input_answered_too_large() -> None:
    with pytest.raises(BatchTooLarge) as info:
        Batch(ops=tuple(TWO_HALVES), heads={}, done=False)
    assert info.value.code == "too_large"
    assert isinstance(info.value, MalformedInput)
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize(
    "ops",
    [
        (b"x" * MAX_BATCH_BYTES,),
        (b"x" * (MAX_BATCH_BYTES + 1),),  # one op over the limit travels alone
        (b"x",) * MAX_BATCH_OPS,
        (b"x" * (MAX_BATCH_BYTES - 1), b"y"),
    ],
    ids=["max_bytes", "one_op_over", "max_ops", "max_bytes_in_two"],
)
def test_batches_at_the_limits_are_accepted(ops: tuple[bytes, ...]) -> None:
    batch = Batch(ops=ops, heads={}, done=False)
    assert decode_message(batch.to_wire()) == batch


def test_a_full_batch_with_full_heads_fits_a_frame() -> None:
    batch = Batch(
        ops=(b"x" * (MAX_BATCH_BYTES // MAX_BATCH_OPS),) * MAX_BATCH_OPS,
        heads=devices(MAX_CURSOR_DEVICES, MAX_SEQ),
        done=True,
    )
    assert batch.op_bytes <= MAX_BATCH_BYTES
    encode_frame(batch.to_wire(), MAX_FRAME)
    pull = Pull(cursor=devices(MAX_CURSOR_DEVICES, MAX_SEQ), max_ops=1, max_bytes=1)
    encode_frame(pull.to_wire(), MAX_FRAME)


def test_the_maps_are_read_only_copies() -> None:
    cursor = {A: 1}
    pull = Pull(cursor=cursor, max_ops=1, max_bytes=1)
    cursor[B] = 2
    assert pull.cursor == {A: 1}
    with pytest.raises(TypeError):
        pull.cursor[B] = 2  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pull.max_ops = 2  # type: ignore[misc]


def test_check_device_seqs() -> None:
    assert check_device_seqs("heads", {A: 0, B: MAX_SEQ}) == {A: 0, B: MAX_SEQ}
    assert check_device_seqs("heads", {}) == {}
    with pytest.raises(MalformedInput, match="heads has a key of type int"):
        check_device_seqs("heads", {1: 1})
    with pytest.raises(MalformedInput, match="heads is a list"):
        check_device_seqs("heads", [(A, 1)])


peer_ids = st.binary(min_size=32, max_size=32).map(peer_id_from_ed25519_public_key)
seq_maps = st.dictionaries(peer_ids, st.integers(min_value=0, max_value=MAX_SEQ), max_size=8)
messages = st.one_of(
    st.builds(
        Pull,
        cursor=seq_maps,
        max_ops=st.integers(min_value=1, max_value=MAX_BATCH_OPS),
        max_bytes=st.integers(min_value=1, max_value=MAX_BATCH_BYTES),
    ),
    st.builds(
        Batch,
        ops=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8).map(tuple),
        heads=seq_maps,
        done=st.booleans(),
    ),
    st.builds(Batch, ops=st.just(()), heads=seq_maps, done=st.just(True)),
    st.builds(
        SyncError,
        code=st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
        message=st.text(max_size=1000),
    ),
)


@given(messages)
def test_message_round_trip(message: Message) -> None:
    wire = message.to_wire()
    assert decode_message(wire) == message
    assert canonical_encode(canonical_decode(wire)) == wire


@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_malformed_input(data: bytes) -> None:
    try:
        message = decode_message(data)
    except MalformedInput:
        return
    assert message.to_wire() == data
