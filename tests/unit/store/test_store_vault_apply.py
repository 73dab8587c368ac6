"""Applying remote ops: idempotence, parking out-of-order ops, every refusal changing nothing."""

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import peewee
import pytest
from nacl.signing import VerifyKey
from test_store_vault_support import T0, Owner, conversation, count, snapshot, stored_ops

from protocols.errors import (
    BadSignature,
    ChainBreak,
    ClockDrift,
    MalformedInput,
    ProtocolError,
    UnknownDevice,
)
from protocols.hlc import Timestamp
from protocols.oplog import OpKind, SyncOperation
from protocols.trust import DeviceNotTrusted
from protocols.vault_records import (
    AcuType,
    SharingLevel,
    acu_id,
    conversation_id,
    link_id,
    message_id,
)
from store.identity import save_device
from store.sql import execute_sql
from store.vault import (
    ApplyReport,
    apply_ops,
    edit_acu,
    get_acu,
    get_conversation,
    import_conversation,
    list_acus,
    raise_sharing_level,
    set_title,
    state_hash,
    verify_vault,
)

NOW = T0 + 3_600_000


@pytest.fixture
def owner() -> Owner:
    return Owner(count=3)


@pytest.fixture
def vaults(tmp_path: Path, owner: Owner) -> Iterator[list[peewee.SqliteDatabase]]:
    """A vault per device, plus a fourth that only receives."""
    dbs = [owner.open_vault(tmp_path / f"vault-{n}.db") for n in range(4)]
    yield dbs
    for db in dbs:
        db.close()


def receive(
    db: peewee.SqliteDatabase, owner: Owner, ops: list[SyncOperation], now_ms: int = NOW
) -> ApplyReport:
    return apply_ops(db, ops, now_ms, local_device=owner.devices[0].peer_id)


def sign_next(
    owner: Owner, device: int, after: SyncOperation | None, **fields: object
) -> SyncOperation:
    """A hand-made op of `device` following `after` (its previous op)."""
    values: dict[str, object] = {
        "signing_key": owner.devices[device].key,
        "author": owner.did,
        "device": owner.devices[device].peer_id,
        "seq": 1 if after is None else after.seq + 1,
        "prev": None if after is None else after.id,
        "hlc": Timestamp(
            wall_ms=NOW - 1000,
            counter=0 if after is None else after.hlc.counter + 1,
            node=owner.devices[device].peer_id,
        ),
        "kind": OpKind.UPDATE,
    }
    values.update(fields)
    return SyncOperation.sign(**values)  # type: ignore[arg-type]


def test_a_receiving_vault_reaches_the_same_state(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    source, target = vaults[0], vaults[3]
    import_conversation(source, owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(source)
    report = receive(target, owner, ops)
    assert report.applied == tuple(op.id for op in ops)
    assert state_hash(target) == state_hash(source)
    assert verify_vault(target, NOW) == []
    assert execute_sql(target, "SELECT device, last_seq FROM device_log").fetchall() == [
        (owner.devices[0].peer_id, len(ops))
    ]


def test_applying_the_same_ops_again_changes_nothing(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    source, target = vaults[0], vaults[3]
    import_conversation(source, owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(source)
    receive(target, owner, ops)
    before = snapshot(target)
    report = receive(target, owner, [*ops, ops[0]])
    assert report.applied == () and len(report.duplicates) == len(ops) + 1
    assert snapshot(target) == before
    # The same op twice within one batch.
    fresh = vaults[2]
    report = receive(fresh, owner, [ops[0], ops[0]])
    assert report.applied == (ops[0].id,) and report.duplicates == (ops[0].id,)


def test_out_of_order_ops_are_parked_until_the_gap_fills(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    source, target = vaults[0], vaults[3]
    import_conversation(source, owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(source)
    report = receive(target, owner, ops[5:])
    assert report.parked == tuple(op.id for op in ops[5:])
    assert count(target, "pending_op") == len(ops) - 5
    assert count(target, "sync_operation") == 0
    assert receive(target, owner, ops[5:7]).duplicates == (ops[5].id, ops[6].id)
    report = receive(target, owner, ops[2:5])
    assert report.parked == tuple(op.id for op in ops[2:5])
    report = receive(target, owner, ops[:2])
    assert report.applied == tuple(op.id for op in ops)
    assert count(target, "pending_op") == 0
    assert state_hash(target) == state_hash(source)
    assert verify_vault(target, NOW) == []


def refused_with(
    db: peewee.SqliteDatabase, owner: Owner, ops: list[SyncOperation], error: type[ProtocolError]
) -> ProtocolError:
    """Apply `ops`; the last is refused with `error` and changes nothing."""
    receive(db, owner, ops[:-1])
    before = snapshot(db)
    report = receive(db, owner, ops[-1:])
    assert report.applied == () and report.parked == ()
    (refusal,) = report.refused
    assert refusal.op_id == ops[-1].id
    assert type(refusal.error) is error, refusal.error
    assert snapshot(db) == before
    return refusal.error


def test_a_bad_signature_is_refused(vaults: list[peewee.SqliteDatabase], owner: Owner) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    forged = replace(ops[1], signature=bytes(64))
    error = refused_with(vaults[3], owner, [ops[0], forged], BadSignature)
    assert error.code == "bad_signature"


def test_an_op_of_an_unknown_device_is_refused(
    tmp_path: Path, vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    stranger = Owner(count=1, seed=9)
    db = stranger.open_vault(tmp_path / "stranger.db")
    try:
        import_conversation(db, stranger.devices[0].signer, conversation(1), T0)
        ops = stored_ops(db)
    finally:
        db.close()
    refused_with(vaults[3], owner, ops[:1], UnknownDevice)


def test_a_device_of_another_did_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    other = Owner(count=1, seed=9)
    # The op claims our owner's DID but is signed by the other owner's device.
    claimed = SyncOperation.sign(
        signing_key=other.devices[0].key,
        author=owner.did,
        device=other.devices[0].peer_id,
        seq=1,
        prev=None,
        hlc=Timestamp(wall_ms=NOW, counter=0, node=other.devices[0].peer_id),
        entity_type="conversation",
        entity_id=conversation_id(owner.did, "chatgpt", "x"),
        kind=OpKind.UPDATE,
        payload={"title": "hijack"},
    )
    save_device(vaults[3], other.devices[0].row)  # known, but as a device of another DID
    refused_with(vaults[3], owner, [claimed], UnknownDevice)


def test_ops_of_a_revoked_device_after_its_cut_are_refused_whatever_their_stamps(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    device = owner.devices[1]
    import_conversation(vaults[1], device.signer, conversation(1), T0)
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    # Stamped before the revocation: the cut, not the stamp, decides.
    set_title(vaults[1], device.signer, key, "after revocation", T0 + 1)
    ops = stored_ops(vaults[1])
    revoked = replace(
        device.row,
        status="revoked",
        revoked_at_ms=T0 + 30_000,
        revoked_by=owner.devices[0].peer_id,
        cut_seq=len(ops) - 1,
    )
    save_device(vaults[3], revoked)
    error = refused_with(vaults[3], owner, ops, DeviceNotTrusted)
    assert "revoked" in str(error)
    detail = get_conversation(vaults[3], key)
    assert detail is not None and detail.conversation.title == "Conversation 1"


def test_a_second_op_at_a_taken_position_is_a_chain_break(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    key = ops[0].entity_id
    equivocation = sign_next(
        owner, 0, ops[0], entity_type="conversation", entity_id=key, payload={"title": "fork"}
    )
    refused_with(vaults[3], owner, [*ops[:2], equivocation], ChainBreak)


def test_a_stamp_going_back_along_a_chain_is_a_chain_break(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    back = sign_next(
        owner,
        0,
        ops[-1],
        entity_type="conversation",
        entity_id=ops[0].entity_id,
        payload={"title": "from the past"},
        hlc=Timestamp(wall_ms=T0 - 1, counter=0, node=owner.devices[0].peer_id),
    )
    refused_with(vaults[3], owner, [*ops, back], ChainBreak)


def test_an_op_from_the_future_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    op = sign_next(
        owner,
        0,
        None,
        entity_type="conversation",
        entity_id=conversation_id(owner.did, "chatgpt", "x"),
        payload={"title": "t"},
        hlc=Timestamp(wall_ms=NOW + 301_000, counter=0, node=owner.devices[0].peer_id),
    )
    refused_with(vaults[3], owner, [op], ClockDrift)


@pytest.mark.parametrize(
    ("entity_type", "kind", "payload", "match"),
    [
        ("acu", OpKind.DELETE, {}, "never deleted"),
        ("acu_link", OpKind.UPDATE, {}, "create-only"),
        ("conversation", OpKind.UPDATE, {"title": 5}, "expected str"),
        ("conversation", OpKind.UPDATE, {"title": "t", "owner": "me"}, "unexpected ['owner']"),
        ("conversation", OpKind.UPDATE, {}, "expected one or both"),
        ("conversation", OpKind.UPDATE, {"messages": []}, "at least one message"),
        ("conversation", OpKind.UPDATE, {"messages": {}}, "expected a list"),
        ("conversation", OpKind.UPDATE, {"messages": ["m"]}, "expected a map"),
        ("acu", OpKind.UPDATE, {"sharing_level": "EVERYONE"}, "sharing level"),
        ("conversation", OpKind.DELETE, {"why": "x"}, "unexpected"),
        (
            "conversation",
            OpKind.CREATE,
            {
                "title": "t",
                "provider": "chatgpt",
                "model": None,
                "created_at_ms": None,
                "updated_at_ms": None,
                "source_id": "another",
                "messages": [],
            },
            "not the id of its content",
        ),
        (
            "conversation",
            OpKind.CREATE,
            {
                "title": "t",
                "provider": "chatgpt",
                "model": None,
                "created_at_ms": None,
                "updated_at_ms": None,
                "source_id": "x",
            },
            "missing ['messages']",
        ),
    ],
)
def test_ops_our_api_would_never_write_are_refused(
    vaults: list[peewee.SqliteDatabase],
    owner: Owner,
    entity_type: str,
    kind: OpKind,
    payload: dict[str, object],
    match: str,
) -> None:
    op = sign_next(
        owner,
        0,
        None,
        entity_type=entity_type,
        entity_id=conversation_id(owner.did, "chatgpt", "x"),
        kind=kind,
        payload=payload,
    )
    error = refused_with(vaults[3], owner, [op], MalformedInput)
    assert match in str(error)


def test_an_acus_author_signature_is_its_create_op_which_proves_its_content(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    receive(vaults[3], owner, stored_ops(vaults[0]))
    acu = list_acus(vaults[3]).items[0]
    create = next(op for op in stored_ops(vaults[3]) if op.id == acu.create_op_id)
    assert acu.author_signature == create.signature
    assert acu.author_signer == create.device == owner.devices[0].peer_id
    # The signed bytes hold everything the ACU id is computed from: the op alone proves that
    # the device (certified for the author's DID) wrote this content.
    VerifyKey(owner.devices[0].key.verify_key.encode()).verify(
        create.signed_bytes(), acu.author_signature
    )
    payload = create.payload
    assert acu.id == acu_id(
        str(payload["author"]),
        str(payload["content"]),
        AcuType(payload["type"]),
        int(payload["source_time_ms"]),  # type: ignore[call-overload]
    )


def test_an_acu_create_carrying_a_signature_field_of_its_own_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    first_acu = next(i for i, op in enumerate(ops) if op.entity_type == "acu")
    original = ops[first_acu]
    extra = replace_signed(original, owner, {**original.payload, "author_signature": bytes(64)})
    error = refused_with(vaults[3], owner, [*ops[:first_acu], extra], MalformedInput)
    assert "author_signature" in str(error)


def test_an_acu_create_with_a_forged_signature_is_refused(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    first_acu = next(i for i, op in enumerate(ops) if op.entity_type == "acu")
    # Signed by another device of the same owner, but claiming the first device.
    forged = replace_signed(ops[first_acu], owner, ops[first_acu].payload, key_of=1)
    refused_with(vaults[3], owner, [*ops[:first_acu], forged], BadSignature)


def replace_signed(
    original: SyncOperation, owner: Owner, payload: dict[str, object], key_of: int = 0
) -> SyncOperation:
    """`original` with `payload`, signed with the key of device `key_of` (it claims device 0)."""
    op = SyncOperation.sign(
        signing_key=owner.devices[0].key,
        author=original.author,
        device=original.device,
        seq=original.seq,
        prev=original.prev,
        hlc=original.hlc,
        entity_type=original.entity_type,
        entity_id=original.entity_id,
        kind=original.kind,
        payload=payload,
    )
    if key_of == 0:
        return op
    signature = owner.devices[key_of].key.sign(op.signed_bytes()).signature
    return SyncOperation.from_wire(replace(op, signature=signature).to_wire())


def test_an_update_that_arrives_before_its_create_takes_effect_with_it(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    first, second, _, target = vaults
    import_conversation(first, owner.devices[0].signer, conversation(1), T0)
    receive(second, owner, stored_ops(first))
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    acu_id = list_acus(second).items[0].id
    set_title(second, owner.devices[1].signer, key, "Renamed on the phone", NOW)
    raise_sharing_level(second, owner.devices[1].signer, acu_id, SharingLevel.CIRCLES, NOW)
    phone_ops = [op for op in stored_ops(second) if op.device == owner.devices[1].peer_id]
    receive(target, owner, phone_ops)
    assert get_conversation(target, key) is None
    receive(target, owner, stored_ops(first))
    detail = get_conversation(target, key)
    assert detail is not None and detail.conversation.title == "Renamed on the phone"
    acu = get_acu(target, acu_id)
    assert acu is not None and acu.sharing_level is SharingLevel.CIRCLES
    assert state_hash(target) == state_hash(second)
    assert verify_vault(target, NOW) == []


def test_what_a_device_writes_after_receiving_is_stamped_after_it(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone = vaults[0], vaults[1]
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    # The laptop's clock runs four minutes ahead of the phone's.
    import_conversation(laptop, owner.devices[0].signer, conversation(1), NOW + 240_000)
    set_title(laptop, owner.devices[0].signer, key, "laptop", NOW + 240_000)
    apply_ops(phone, stored_ops(laptop), NOW, local_device=owner.devices[1].peer_id)
    set_title(phone, owner.devices[1].signer, key, "phone, later", NOW + 1)
    detail = get_conversation(phone, key)
    assert detail is not None and detail.conversation.title == "phone, later"


@pytest.mark.parametrize("phone_first", [False, True])
def test_two_devices_importing_the_same_conversation_converge(
    vaults: list[peewee.SqliteDatabase], owner: Owner, phone_first: bool
) -> None:
    laptop, phone, _, target = vaults
    import_conversation(laptop, owner.devices[0].signer, conversation(1), T0 + 5)
    import_conversation(phone, owner.devices[1].signer, conversation(1), T0)
    laptop_ops, phone_ops = stored_ops(laptop), stored_ops(phone)
    receive(laptop, owner, phone_ops)
    batches = [phone_ops, laptop_ops] if phone_first else [laptop_ops, phone_ops]
    for batch in batches:
        receive(target, owner, batch)
    # The phone's creates sort first (earlier stamps): every replica keeps them.
    acu = list_acus(target).items[0]
    assert acu.author_signer == owner.devices[1].peer_id
    assert state_hash(target) == state_hash(laptop)
    assert verify_vault(target, NOW) == [] and verify_vault(laptop, NOW) == []


def test_an_edit_replicates(vaults: list[peewee.SqliteDatabase], owner: Owner) -> None:
    source, target = vaults[0], vaults[3]
    import_conversation(source, owner.devices[0].signer, conversation(1), T0)
    old = list_acus(source).items[0].id
    edit_acu(source, owner.devices[0].signer, old, "new text", T0 + 1)
    receive(target, owner, list(reversed(stored_ops(source))))
    assert state_hash(target) == state_hash(source)


def message_entry(
    conversation: str, index: int, content: str, changes: dict[str, object] | None = None
) -> dict[str, object]:
    """A message entry of a conversation op, with `changes` made after its id was derived."""
    entry: dict[str, object] = {
        "id": message_id(conversation, index, "user", content, None),
        "role": "user",
        "content": content,
        "index": index,
        "created_at_ms": None,
        "branch": "main",
        "parent_id": None,
    }
    entry.update(changes or {})
    return entry


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (
            lambda key: [message_entry(key, 0, "hi", {"content": "forged"})],
            "not the id of its content",
        ),
        (lambda key: [message_entry(key, 0, "hi"), message_entry(key, 0, "hi")], "listed twice"),
        (lambda key: [message_entry(key, 0, "hi", {"index": -1})], "outside"),
        (lambda key: [message_entry(key, 0, "hi", {"branch": "side"})], "branch"),
        (lambda key: [message_entry(key, 0, "hi", {"parent_id": "p"})], "not a content id"),
        (lambda key: [message_entry(key, 0, "hi", {"role": None})], "expected str"),
        (lambda key: [{**message_entry(key, 0, "hi"), "extra": 1}], "unexpected ['extra']"),
        (lambda key: [message_entry("bafyreiother", 0, "hi")], "not the id of its content"),
    ],
)
@pytest.mark.parametrize("kind", [OpKind.CREATE, OpKind.UPDATE])
def test_every_message_a_conversation_op_carries_is_checked(
    vaults: list[peewee.SqliteDatabase],
    owner: Owner,
    messages: Callable[[str], list[dict[str, object]]],
    match: str,
    kind: OpKind,
) -> None:
    key = conversation_id(owner.did, "chatgpt", "x")
    payload: dict[str, object] = {"messages": messages(key)}
    if kind is OpKind.CREATE:
        payload.update(
            title="t", provider="chatgpt", model=None, created_at_ms=None, updated_at_ms=None
        )
        payload["source_id"] = "x"
    op = sign_next(
        owner, 0, None, entity_type="conversation", entity_id=key, kind=kind, payload=payload
    )
    error = refused_with(vaults[3], owner, [op], MalformedInput)
    assert match in str(error)


@pytest.mark.parametrize(
    ("links", "match"),
    [
        (lambda source, a, b: [{"relation": "next", "target": source}], "link to itself"),
        (lambda source, a, b: [{"relation": "follows", "target": a}], "LinkRelation"),
        (lambda source, a, b: [{"relation": "next", "target": "x"}], "not a content id"),
        (lambda source, a, b: [{"relation": "next"}], "missing ['target']"),
        (
            lambda source, a, b: [
                {"relation": "next", "target": b},
                {"relation": "next", "target": a},
            ],
            "sorted",
        ),
        (
            lambda source, a, b: [
                {"relation": "next", "target": a},
                {"relation": "next", "target": a},
            ],
            "without repeats",
        ),
        (
            lambda source, a, b: [
                {"relation": "next", "target": a},
                {"relation": "derived_from", "target": b},
            ],
            "sorted",
        ),
        (lambda source, a, b: {"relation": "next", "target": a}, "expected a list"),
    ],
)
def test_every_link_an_acu_create_carries_is_checked(
    vaults: list[peewee.SqliteDatabase],
    owner: Owner,
    links: Callable[[str, str, str], object],
    match: str,
) -> None:
    import_conversation(vaults[0], owner.devices[0].signer, conversation(1), T0)
    ops = stored_ops(vaults[0])
    first_acu = next(i for i, op in enumerate(ops) if op.entity_type == "acu")
    original = ops[first_acu]
    a, b = sorted(op.entity_id for op in ops[first_acu + 1 : first_acu + 3])
    forged = SyncOperation.sign(
        signing_key=owner.devices[0].key,
        author=original.author,
        device=original.device,
        seq=original.seq,
        prev=original.prev,
        hlc=original.hlc,
        entity_type="acu",
        entity_id=original.entity_id,
        kind=OpKind.CREATE,
        payload={**original.payload, "links": links(original.entity_id, a, b)},
    )
    error = refused_with(vaults[3], owner, [*ops[:first_acu], forged], MalformedInput)
    assert match in str(error)


def test_messages_are_the_union_of_the_conversation_ops(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone, _, target = vaults
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    # The laptop imports the first four messages, then the whole conversation (an update adds
    # two); the phone imports the whole conversation at once. The same six messages everywhere.
    import_conversation(laptop, owner.devices[0].signer, conversation(1, messages=4), T0)
    import_conversation(laptop, owner.devices[0].signer, conversation(1, messages=6), T0 + 10)
    import_conversation(phone, owner.devices[1].signer, conversation(1, messages=6), T0 + 5)
    laptop_ops, phone_ops = stored_ops(laptop), stored_ops(phone)
    update = next(op for op in laptop_ops if op.kind is OpKind.UPDATE)
    report = receive(target, owner, [*laptop_ops, *phone_ops])
    assert report.refused == ()
    detail = get_conversation(target, key)
    assert detail is not None and [m.index for m in detail.messages] == list(range(6))
    # Each message row is the first op that carried it: the laptop's create for 0-3 (T0), the
    # phone's create for 4-5 (T0 + 5, before the laptop's update at T0 + 10).
    by_index = {m.index: m.create_op_id for m in detail.messages}
    assert {by_index[i] for i in range(4)} == {laptop_ops[0].id}
    assert {by_index[i] for i in (4, 5)} == {phone_ops[0].id}
    assert update.id not in by_index.values()
    receive(laptop, owner, phone_ops)
    assert state_hash(laptop) == state_hash(target)
    assert verify_vault(target, NOW) == [] and verify_vault(laptop, NOW) == []


def test_a_conversation_update_before_its_create_waits_for_it(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    laptop, phone, _, target = vaults
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    import_conversation(laptop, owner.devices[0].signer, conversation(1, messages=2), T0)
    receive(phone, owner, stored_ops(laptop))
    import_conversation(phone, owner.devices[1].signer, conversation(1, messages=4), T0 + 1)
    phone_ops = [op for op in stored_ops(phone) if op.device == owner.devices[1].peer_id]
    assert phone_ops[0].kind is OpKind.UPDATE
    receive(target, owner, phone_ops)
    assert get_conversation(target, key) is None
    assert count(target, "message") == 0  # its messages wait in the log
    receive(target, owner, stored_ops(laptop))
    detail = get_conversation(target, key)
    assert detail is not None and [m.index for m in detail.messages] == [0, 1, 2, 3]
    assert state_hash(target) == state_hash(phone)
    assert verify_vault(target, NOW) == []


def test_a_link_carried_by_an_acu_stays_whatever_acu_link_ops_say(
    vaults: list[peewee.SqliteDatabase], owner: Owner
) -> None:
    """A link in an ACU's create op belongs to the ACU: an acu_link create of the same link does
    not change its row, an acu_link delete leaves a tombstone but not the row, in any order."""
    source = vaults[0]
    import_conversation(source, owner.devices[0].signer, conversation(1), T0)
    import_ops = stored_ops(source)
    carrier = next(op for op in import_ops if op.entity_type == "acu" and op.payload["links"])
    links = carrier.payload["links"]
    assert isinstance(links, list)
    carried = links[0]
    link = link_id(carrier.entity_id, carried["target"], carried["relation"])
    create = sign_next(
        owner,
        1,
        None,
        entity_type="acu_link",
        entity_id=link,
        kind=OpKind.CREATE,
        payload={
            "source": carrier.entity_id,
            "target": carried["target"],
            "relation": carried["relation"],
            "created_by": owner.did,
        },
        hlc=Timestamp(wall_ms=T0 - 5000, counter=0, node=owner.devices[1].peer_id),
    )
    delete = sign_next(
        owner,
        1,
        create,
        entity_type="acu_link",
        entity_id=link,
        kind=OpKind.DELETE,
        payload={},
        hlc=Timestamp(wall_ms=T0 - 4000, counter=0, node=owner.devices[1].peer_id),
    )
    hashes = set()
    for n, order in enumerate(
        (
            [*import_ops, create, delete],
            [create, delete, *import_ops],
            [create, *import_ops, delete],
        )
    ):
        db = vaults[1 + n]
        for op in order:
            assert receive(db, owner, [op]).refused == ()
        row = execute_sql(
            db, f"SELECT created_by, create_op_id FROM acu_link WHERE id = '{link}'"
        ).fetchone()
        # The row is the ACU's, though the acu_link create is stamped earlier.
        assert row == (owner.did, carrier.id)
        assert count(db, "tombstone") == 1
        assert verify_vault(db, NOW) == []
        hashes.add(state_hash(db))
    assert len(hashes) == 1
