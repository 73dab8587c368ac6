"""Local writes through the vault API: import, edit, title, sharing level, delete; and queries."""

import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import peewee
import pytest
from test_store_vault_support import T0, Device, Owner, conversation, count, snapshot, stored_ops

from protocols.errors import LocalProtocolError
from protocols.oplog import OpKind
from protocols.vault_records import (
    AcuType,
    Branch,
    ImportedMessage,
    LinkRelation,
    SharingLevel,
    conversation_id,
)
from store.errors import (
    AcuNotFound,
    AcuUnchanged,
    ConversationNotFound,
    InvalidCursor,
    SharingLevelLowered,
)
from store.sql import execute_sql
from store.vault import (
    AcuRow,
    ImportResult,
    LocalSigner,
    acu_history,
    delete_conversation,
    edit_acu,
    get_acu,
    get_conversation,
    import_conversation,
    import_conversations,
    list_acus,
    list_conversations,
    raise_sharing_level,
    set_title,
    state_hash,
    verify_vault,
)


@pytest.fixture
def owner() -> Owner:
    return Owner(count=1)


@pytest.fixture
def device(owner: Owner) -> Device:
    return owner.devices[0]


@pytest.fixture
def db(tmp_path: Path, owner: Owner) -> Iterator[peewee.SqliteDatabase]:
    db = owner.open_vault(tmp_path / "vault.db")
    yield db
    db.close()


def first_acu(db: peewee.SqliteDatabase, acu_type: AcuType = AcuType.QA) -> str:
    return list_acus(db, acu_type=acu_type).items[-1].id


def test_import_writes_one_op_per_conversation_and_per_acu(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    result = import_conversation(db, device.signer, conversation(1), T0)
    # 6 messages: 3 qa ACUs, 3 code ACUs; 2 `next` links, 3 `derived_from` links.
    assert result == ImportResult(
        conversations_created=1,
        messages_created=6,
        acus_created=6,
        links_created=5,
        ops_written=1 + 6,
    )
    assert [count(db, t) for t in ("conversation", "message", "acu", "acu_link")] == [1, 6, 6, 5]
    ops = stored_ops(db)
    assert [op.seq for op in ops] == list(range(1, 8))
    assert all(op.kind is OpKind.CREATE and op.device == device.peer_id for op in ops)
    assert all(later.prev == earlier.id for earlier, later in itertools.pairwise(ops))
    # The conversation's op carries its messages; each ACU's op the links whose source it is.
    assert [op.entity_type for op in ops] == ["conversation"] + ["acu"] * 6
    messages = ops[0].payload["messages"]
    assert isinstance(messages, list) and [m["index"] for m in messages] == list(range(6))
    links = execute_sql(db, "SELECT source, create_op_id, created_by FROM acu_link").fetchall()
    acu_ops = {op.entity_id: op.id for op in ops[1:]}
    assert all(
        acu_ops[source] == op_id and by == device.signer.author for source, op_id, by in links
    )
    assert execute_sql(db, "SELECT last_seq, last_op_id FROM device_log").fetchall() == [
        (7, ops[-1].id)
    ]
    assert (
        execute_sql(db, "SELECT last_packed FROM hlc_state").fetchone()[0] == ops[-1].hlc.packed()
    )
    assert verify_vault(db, T0) == []


def test_importing_the_same_conversation_again_creates_nothing(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    before = snapshot(db)
    result = import_conversation(db, device.signer, conversation(1), T0 + 5)
    assert result == ImportResult(
        conversations_skipped=1, messages_skipped=6, acus_skipped=6, links_skipped=5
    )
    assert snapshot(db) == before


def test_a_continued_conversation_imports_only_what_is_new(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    import_conversation(db, device.signer, conversation(1, messages=4), T0)
    ops_before = len(stored_ops(db))
    result = import_conversation(db, device.signer, conversation(1, messages=6), T0 + 5)
    assert result == ImportResult(
        conversations_skipped=1,
        messages_created=2,
        messages_skipped=4,
        acus_created=2,
        acus_skipped=4,
        links_created=2,
        links_skipped=3,
        ops_written=4,
    )
    # One update carrying the two new messages, the two new ACUs, and the `next` link from the
    # exchange that existed already (its create op cannot carry it): an acu_link op.
    new_ops = stored_ops(db)[ops_before:]
    assert [(op.entity_type, op.kind) for op in new_ops] == [
        ("conversation", OpKind.UPDATE),
        ("acu", OpKind.CREATE),
        ("acu", OpKind.CREATE),
        ("acu_link", OpKind.CREATE),
    ]
    messages = new_ops[0].payload["messages"]
    assert isinstance(messages, list) and [m["index"] for m in messages] == [4, 5]
    assert new_ops[3].payload["relation"] == LinkRelation.NEXT.value
    assert [count(db, t) for t in ("message", "acu", "acu_link")] == [6, 6, 5]
    assert import_conversation(db, device.signer, conversation(1, messages=6), T0 + 6) == (
        ImportResult(conversations_skipped=1, messages_skipped=6, acus_skipped=6, links_skipped=5)
    )
    assert verify_vault(db, T0 + 6) == []


def test_an_import_and_a_continued_import_give_the_same_rows(
    tmp_path: Path, owner: Owner, device: Device
) -> None:
    at_once = owner.open_vault(tmp_path / "at-once.db")
    in_two = owner.open_vault(tmp_path / "in-two.db")
    try:
        import_conversation(at_once, device.signer, conversation(1, messages=6), T0)
        import_conversation(in_two, device.signer, conversation(1, messages=4), T0)
        import_conversation(in_two, device.signer, conversation(1, messages=6), T0)
        for table in ("message", "acu", "acu_link"):
            columns = "id, conversation_id, position, role, content, branch, parent_id"
            if table == "acu":
                columns = "id, content, type, conversation_id, message_id, position"
            elif table == "acu_link":
                columns = "id, source, target, relation, created_by"
            query = f"SELECT {columns} FROM {table} ORDER BY id"
            assert execute_sql(at_once, query).fetchall() == execute_sql(in_two, query).fetchall()
    finally:
        at_once.close()
        in_two.close()


def test_a_batch_is_imported_whole_or_not_at_all(db: peewee.SqliteDatabase, device: Device) -> None:
    broken = replace(
        conversation(2, messages=1),
        alternates=(
            ImportedMessage(
                key="orphan",
                parent_key="missing",
                role="user",
                content="lost",
                created_at_ms=None,
                index=1,
                branch=Branch.ALTERNATE,
            ),
        ),
    )
    before = snapshot(db)
    with pytest.raises(LocalProtocolError):
        import_conversations(db, device.signer, [conversation(1), broken], T0)
    assert snapshot(db) == before


def test_the_clock_survives_a_restart_and_a_clock_going_back(
    tmp_path: Path, owner: Owner, device: Device
) -> None:
    path = tmp_path / "vault.db"
    db = owner.open_vault(path)
    import_conversation(db, device.signer, conversation(1), T0 + 60_000)
    last = stored_ops(db)[-1].hlc
    db.close()
    db = owner.open_vault(path)
    try:
        import_conversation(db, device.signer, conversation(2), T0)  # the wall clock went back
        ops = stored_ops(db)
        assert all(later.hlc > earlier.hlc for earlier, later in itertools.pairwise(ops))
        assert ops[-1].hlc > last
    finally:
        db.close()


def test_edit_creates_a_new_version_and_leaves_the_old_one(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    old_id = first_acu(db)
    old = get_acu(db, old_id)
    assert old is not None
    new_id = edit_acu(db, device.signer, old_id, "Q: how?\n\nA: like this.", T0 + 10)
    new = get_acu(db, new_id)
    assert new is not None
    assert get_acu(db, old_id) == old
    assert (new.content, new.type, new.provenance) == (
        "Q: how?\n\nA: like this.",
        old.type,
        old.provenance,
    )
    assert (new.source_time_ms, new.sharing_level) == (T0 + 10, SharingLevel.SELF)
    links = execute_sql(
        db, "SELECT source, target, relation FROM acu_link WHERE relation = 'version_of'"
    ).fetchall()
    assert links == [(new_id, old_id, LinkRelation.VERSION_OF.value)]
    third = edit_acu(db, device.signer, new_id, "Q: how?\n\nA: better.", T0 + 20)
    for member in (old_id, new_id, third):
        assert [acu.id for acu in acu_history(db, member)] == [old_id, new_id, third]
    assert verify_vault(db, T0 + 20) == []


def test_edit_refuses_an_unknown_acu_and_unchanged_content(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    acu = list_acus(db).items[0]
    before = snapshot(db)
    with pytest.raises(AcuUnchanged):
        edit_acu(db, device.signer, acu.id, acu.content, T0 + 1)
    with pytest.raises(AcuNotFound):
        edit_acu(db, device.signer, "bafyreinothere", "x", T0 + 1)
    assert snapshot(db) == before
    assert acu_history(db, "bafyreinothere") == []


def test_sharing_level_rises_and_never_falls(db: peewee.SqliteDatabase, device: Device) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    acu_id = first_acu(db)
    raise_sharing_level(db, device.signer, acu_id, SharingLevel.NETWORK, T0 + 1)
    before = snapshot(db)
    with pytest.raises(SharingLevelLowered, match="cannot be lowered to CIRCLES"):
        raise_sharing_level(db, device.signer, acu_id, SharingLevel.CIRCLES, T0 + 2)
    raise_sharing_level(db, device.signer, acu_id, SharingLevel.NETWORK, T0 + 3)  # no op
    assert snapshot(db) == before
    acu = get_acu(db, acu_id)
    assert acu is not None and acu.sharing_level is SharingLevel.NETWORK
    with pytest.raises(AcuNotFound):
        raise_sharing_level(db, device.signer, "bafyreinothere", SharingLevel.GLOBAL, T0)


def test_set_title(db: peewee.SqliteDatabase, device: Device, owner: Owner) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    set_title(db, device.signer, key, "Renamed", T0 + 1)
    detail = get_conversation(db, key)
    assert detail is not None and detail.conversation.title == "Renamed"
    ops = len(stored_ops(db))
    set_title(db, device.signer, key, "Renamed", T0 + 2)  # unchanged: no op
    assert len(stored_ops(db)) == ops
    with pytest.raises(ConversationNotFound):
        set_title(db, device.signer, "bafyreinothere", "x", T0)
    assert verify_vault(db, T0 + 2) == []


def test_delete_conversation_leaves_tombstones_and_keeps_acus(
    db: peewee.SqliteDatabase, device: Device, owner: Owner
) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    key = conversation_id(owner.did, "chatgpt", "conversation-1")
    delete_conversation(db, device.signer, key, T0 + 1)
    assert get_conversation(db, key) is None
    assert [count(db, t) for t in ("conversation", "message", "acu", "tombstone")] == [0, 0, 6, 1]
    assert stored_ops(db)[-1].payload == {}  # one op deletes the conversation and its messages
    with pytest.raises(ConversationNotFound):
        delete_conversation(db, device.signer, key, T0 + 2)
    with pytest.raises(ConversationNotFound):
        set_title(db, device.signer, key, "back", T0 + 2)
    before = snapshot(db)
    result = import_conversation(db, device.signer, conversation(1), T0 + 3)
    assert result.conversations_skipped == 1 and result.ops_written == 0
    assert snapshot(db) == before
    assert verify_vault(db, T0 + 3) == []


def test_get_conversation_lists_its_messages_in_order(
    db: peewee.SqliteDatabase, device: Device, owner: Owner
) -> None:
    import_conversation(db, device.signer, conversation(1), T0)
    detail = get_conversation(db, conversation_id(owner.did, "chatgpt", "conversation-1"))
    assert detail is not None
    assert [m.index for m in detail.messages] == list(range(6))
    assert detail.messages[1].parent_id == detail.messages[0].id
    assert detail.conversation.owner == owner.did
    assert get_conversation(db, "bafyreinothere") is None


def test_list_acus_pages_newest_first_without_gaps(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    import_conversations(db, device.signer, [conversation(n) for n in range(5)], T0)
    every: list[AcuRow] = []
    cursor = None
    while True:
        page = list_acus(db, limit=4, cursor=cursor)
        every.extend(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(every) == len({acu.id for acu in every}) == 30
    assert [acu.hlc for acu in every] == sorted((acu.hlc for acu in every), reverse=True)
    assert list_acus(db, limit=1000).items == tuple(every)


def test_list_acus_filters(db: peewee.SqliteDatabase, device: Device, owner: Owner) -> None:
    import_conversations(db, device.signer, [conversation(1), conversation(2)], T0)
    key = conversation_id(owner.did, "chatgpt", "conversation-2")
    in_two = list_acus(db, conversation_id=key).items
    assert len(in_two) == 6 and all(acu.provenance.conversation_id == key for acu in in_two)
    code = list_acus(db, acu_type="code", conversation_id=key).items
    assert len(code) == 3 and all(
        acu.type is AcuType.CODE and acu.language == "python" for acu in code
    )


@pytest.mark.parametrize("cursor", ["", "nodot", "x.abc", "12."])
def test_a_bad_cursor_is_refused(db: peewee.SqliteDatabase, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        list_acus(db, cursor=cursor)
    with pytest.raises(InvalidCursor):
        list_conversations(db, cursor=cursor)


def test_list_conversations_pages_most_recent_first(
    db: peewee.SqliteDatabase, device: Device
) -> None:
    import_conversations(db, device.signer, [conversation(n) for n in range(5)], T0)
    first = list_conversations(db, limit=3)
    second = list_conversations(db, limit=3, cursor=first.next_cursor)
    assert second.next_cursor is None
    titles = [c.title for c in (*first.items, *second.items)]
    assert titles == [f"Conversation {n}" for n in (4, 3, 2, 1, 0)]


def test_a_signer_must_hold_its_device_key(owner: Owner) -> None:
    one, other = Owner(count=2).devices
    with pytest.raises(ValueError, match="is the key of"):
        LocalSigner(author=owner.did, device=one.peer_id, signing_key=other.key)


def test_state_hash_depends_only_on_replicated_state(
    tmp_path: Path, owner: Owner, device: Device
) -> None:
    first = owner.open_vault(tmp_path / "first.db")
    second = owner.open_vault(tmp_path / "second.db")
    try:
        import_conversation(first, device.signer, conversation(1), T0)
        import_conversation(second, device.signer, conversation(1), T0)
        execute_sql(second, "UPDATE hlc_state SET last_packed = last_packed + 5")
        assert state_hash(first) == state_hash(second)
        set_title(second, device.signer, stored_ops(second)[0].entity_id, "other", T0 + 1)
        assert state_hash(first) != state_hash(second)
    finally:
        first.close()
        second.close()
