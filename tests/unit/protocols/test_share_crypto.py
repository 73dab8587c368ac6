"""End-to-end encryption of shared ACUs: content, keys wrapped for a recipient and for a circle;
round trips, the formats pinned by hand, and tampering with every byte."""

import dataclasses
import hashlib
from typing import Any

import nacl.bindings
import nacl.public
import nacl.secret
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_encode
from protocols.cid import content_id
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.share_crypto import (
    CIRCLE_WRAPPED_KEY_TYPE,
    WRAPPED_KEY_LENGTH,
    WRAPPED_KEY_TYPE,
    CircleWrappedKey,
    KeyContext,
    ShareUnreadable,
    WrappedKey,
    decrypt_content,
    encrypt_content,
    unwrap_key,
    unwrap_with_circle_key,
    wrap_key,
    wrap_with_circle_key,
)

ACU, OTHER_ACU = content_id({"acu": 1}), content_id({"acu": 2})
GRANT, OTHER_GRANT = content_id({"grant": 1}), content_id({"grant": 2})
CIRCLE, OTHER_CIRCLE = content_id({"circle": 1}), content_id({"circle": 2})
CONTENT_KEY, OTHER_CONTENT_KEY = b"\x11" * 32, b"\x12" * 32
CIRCLE_KEY, OTHER_CIRCLE_KEY = b"\x21" * 32, b"\x22" * 32
BOB_X25519 = nacl.public.PrivateKey(b"\x31" * 32)
CAROL_X25519 = nacl.public.PrivateKey(b"\x32" * 32)
BOB_PUBLIC = bytes(BOB_X25519.public_key)
EPHEMERAL, OTHER_EPHEMERAL = b"\x41" * 32, b"\x42" * 32
PLAINTEXT = b"the ACU's canonical bytes: a question and its answer"
CONTENT_CONTEXT = KeyContext.content(acu_id=ACU, grant_id=GRANT)
CIRCLE_CONTEXT = KeyContext.circle(circle_id=CIRCLE, version=1)
# Points of order 1 and 8 on Curve25519: X25519 with them gives zero, which libsodium refuses.
LOW_ORDER_POINTS = [bytes(32), (1).to_bytes(32, "little")]


def flips(data: bytes) -> list[bytes]:
    """`data` with each byte changed in turn."""
    return [data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :] for i in range(len(data))]


def wrap_for_bob(
    key: bytes = CONTENT_KEY, context: KeyContext = CONTENT_CONTEXT, ephemeral: bytes = EPHEMERAL
) -> WrappedKey:
    return wrap_key(
        key,
        context=context,
        recipient_x25519_public_key=BOB_PUBLIC,
        ephemeral_private_key=ephemeral,
    )


def unwrap_as(
    wrapped: WrappedKey,
    private: nacl.public.PrivateKey = BOB_X25519,
    context: KeyContext = CONTENT_CONTEXT,
) -> bytes:
    return unwrap_key(wrapped, context=context, recipient_x25519_private_key=bytes(private))


def circle_wrap(content_key: bytes = CONTENT_KEY, **changes: Any) -> CircleWrappedKey:
    arguments: dict[str, Any] = {
        "acu_id": ACU,
        "circle_id": CIRCLE,
        "circle_key_version": 1,
        **changes,
    }
    circle_key = arguments.pop("circle_key", CIRCLE_KEY)
    return wrap_with_circle_key(content_key, circle_key, **arguments)


def circle_unwrap(wrapped: CircleWrappedKey, **changes: Any) -> bytes:
    arguments: dict[str, Any] = {
        "acu_id": ACU,
        "circle_id": CIRCLE,
        "circle_key_version": 1,
        **changes,
    }
    circle_key = arguments.pop("circle_key", CIRCLE_KEY)
    return unwrap_with_circle_key(wrapped, circle_key, **arguments)


# --- content --------------------------------------------------------------------------------------


@given(plaintext=st.binary(max_size=2048))
def test_content_round_trip(plaintext: bytes) -> None:
    ciphertext = encrypt_content(CONTENT_KEY, ACU, plaintext)
    assert len(ciphertext) == len(plaintext) + nacl.secret.SecretBox.MACBYTES
    assert decrypt_content(CONTENT_KEY, ACU, ciphertext) == plaintext


def test_content_format_pinned_by_hand() -> None:
    nonce = hashlib.blake2b(ACU.encode(), digest_size=24, person=b"vivim.shr.cnonce").digest()
    expected = nacl.secret.SecretBox(CONTENT_KEY).encrypt(PLAINTEXT, nonce).ciphertext
    assert encrypt_content(CONTENT_KEY, ACU, PLAINTEXT) == expected
    assert PLAINTEXT not in expected


def test_content_does_not_open_with_another_key_or_as_another_acu() -> None:
    ciphertext = encrypt_content(CONTENT_KEY, ACU, PLAINTEXT)
    with pytest.raises(ShareUnreadable) as info:
        decrypt_content(OTHER_CONTENT_KEY, ACU, ciphertext)
    assert info.value.code == "share_unreadable"
    assert isinstance(info.value, RemoteProtocolError)
    with pytest.raises(ShareUnreadable):
        decrypt_content(CONTENT_KEY, OTHER_ACU, ciphertext)


def test_every_content_byte_flipped_or_cut_is_refused() -> None:
    ciphertext = encrypt_content(CONTENT_KEY, ACU, PLAINTEXT)
    for changed in flips(ciphertext):
        with pytest.raises(ShareUnreadable):
            decrypt_content(CONTENT_KEY, ACU, changed)
    for cut in (b"", ciphertext[:15], ciphertext[:-1], ciphertext + b"\x00"):
        with pytest.raises(ShareUnreadable):
            decrypt_content(CONTENT_KEY, ACU, cut)
    with pytest.raises(ShareUnreadable, match="expected bytes"):
        decrypt_content(CONTENT_KEY, ACU, "text")  # type: ignore[arg-type]


def test_content_arguments_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="content_key is 32 bytes"):
        encrypt_content(b"\x01" * 31, ACU, PLAINTEXT)
    with pytest.raises(LocalProtocolError, match="content id"):
        encrypt_content(CONTENT_KEY, "acu-1", PLAINTEXT)
    with pytest.raises(LocalProtocolError, match="expected bytes"):
        encrypt_content(CONTENT_KEY, ACU, "text")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="content_key is 32 bytes"):
        decrypt_content(bytearray(32), ACU, b"")  # type: ignore[arg-type]


# --- a key wrapped for one recipient --------------------------------------------------------------


@pytest.mark.parametrize("context", [CONTENT_CONTEXT, CIRCLE_CONTEXT], ids=["content", "circle"])
def test_wrap_round_trip(context: KeyContext) -> None:
    wrapped = wrap_for_bob(context=context)
    assert len(wrapped.encrypted_key) == WRAPPED_KEY_LENGTH
    assert wrapped.ephemeral_pub_key == nacl.bindings.crypto_scalarmult_base(EPHEMERAL)
    assert unwrap_as(wrapped, context=context) == CONTENT_KEY
    assert CONTENT_KEY not in wrapped.encrypted_key


def test_wrap_format_pinned_by_hand() -> None:
    ephemeral_public = nacl.bindings.crypto_scalarmult_base(EPHEMERAL)
    shared = nacl.bindings.crypto_scalarmult(EPHEMERAL, BOB_PUBLIC)
    context = canonical_encode(
        {
            "type": "vivim.sharing.key_context.v1",
            "purpose": "content_key",
            "acu_id": ACU,
            "grant_id": GRANT,
        }
    )
    assert CONTENT_CONTEXT.to_bytes() == context
    kek = hashlib.blake2b(
        ephemeral_public + BOB_PUBLIC + context,
        digest_size=32,
        key=shared,
        person=b"vivim.shr.wkey",
    ).digest()
    nonce = hashlib.blake2b(ephemeral_public, digest_size=24, person=b"vivim.shr.wnonce").digest()
    expected = nacl.secret.SecretBox(kek).encrypt(CONTENT_KEY, nonce).ciphertext
    assert wrap_for_bob() == WrappedKey(encrypted_key=expected, ephemeral_pub_key=ephemeral_public)


def test_fresh_ephemeral_keys_give_different_wraps() -> None:
    first, second = wrap_for_bob(), wrap_for_bob(ephemeral=OTHER_EPHEMERAL)
    assert first.encrypted_key != second.encrypted_key
    assert first.ephemeral_pub_key != second.ephemeral_pub_key
    assert unwrap_as(first) == unwrap_as(second) == CONTENT_KEY


def test_every_byte_of_a_wrapped_key_flipped_is_refused() -> None:
    wrapped = wrap_for_bob()
    for changed in flips(wrapped.encrypted_key):
        with pytest.raises(ShareUnreadable):
            unwrap_as(dataclasses.replace(wrapped, encrypted_key=changed))
    for changed in flips(wrapped.ephemeral_pub_key):
        with pytest.raises(ShareUnreadable):
            unwrap_as(dataclasses.replace(wrapped, ephemeral_pub_key=changed))


def test_a_key_wrapped_for_bob_does_not_open_for_carol() -> None:
    with pytest.raises(ShareUnreadable, match="does not open"):
        unwrap_as(wrap_for_bob(), private=CAROL_X25519)


@pytest.mark.parametrize(
    "other",
    [
        KeyContext.content(acu_id=OTHER_ACU, grant_id=GRANT),
        KeyContext.content(acu_id=ACU, grant_id=OTHER_GRANT),
        KeyContext.content(acu_id=GRANT, grant_id=ACU),
        CIRCLE_CONTEXT,
    ],
    ids=["other_acu", "other_grant", "swapped", "circle_key"],
)
def test_a_content_key_moved_to_another_context_does_not_open(other: KeyContext) -> None:
    with pytest.raises(ShareUnreadable):
        unwrap_as(wrap_for_bob(), context=other)


@pytest.mark.parametrize(
    "other",
    [
        KeyContext.circle(circle_id=OTHER_CIRCLE, version=1),
        KeyContext.circle(circle_id=CIRCLE, version=2),
        KeyContext.circle(circle_id=CIRCLE, version=0),
        CONTENT_CONTEXT,
    ],
    ids=["other_circle", "next_version", "version_0", "content_key"],
)
def test_a_circle_key_moved_to_another_context_does_not_open(other: KeyContext) -> None:
    with pytest.raises(ShareUnreadable):
        unwrap_as(wrap_for_bob(CIRCLE_KEY, context=CIRCLE_CONTEXT), context=other)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_keys(point: bytes) -> None:
    with pytest.raises(LocalProtocolError, match="low order"):
        wrap_key(
            CONTENT_KEY,
            context=CONTENT_CONTEXT,
            recipient_x25519_public_key=point,
            ephemeral_private_key=EPHEMERAL,
        )
    forged = dataclasses.replace(wrap_for_bob(), ephemeral_pub_key=point)
    with pytest.raises(ShareUnreadable):
        unwrap_as(forged)


def test_wrap_arguments_are_checked() -> None:
    for name, value in [
        ("key", b"\x01" * 16),
        ("recipient_x25519_public_key", BOB_PUBLIC[:31]),
        ("ephemeral_private_key", None),
    ]:
        arguments: dict[str, Any] = {
            "key": CONTENT_KEY,
            "context": CONTENT_CONTEXT,
            "recipient_x25519_public_key": BOB_PUBLIC,
            "ephemeral_private_key": EPHEMERAL,
            name: value,
        }
        key = arguments.pop("key")
        with pytest.raises(LocalProtocolError, match=f"{name} is 32 bytes"):
            wrap_key(key, **arguments)
    with pytest.raises(LocalProtocolError, match="expected KeyContext"):
        wrap_key(
            CONTENT_KEY,
            context=CONTENT_CONTEXT.to_bytes(),  # type: ignore[arg-type]
            recipient_x25519_public_key=BOB_PUBLIC,
            ephemeral_private_key=EPHEMERAL,
        )
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        unwrap_key(wrap_for_bob(), context=CONTENT_CONTEXT, recipient_x25519_private_key=b"")
    with pytest.raises(LocalProtocolError, match="expected WrappedKey"):
        unwrap_key(
            wrap_for_bob().to_wire(),  # type: ignore[arg-type]
            context=CONTENT_CONTEXT,
            recipient_x25519_private_key=bytes(BOB_X25519),
        )


def test_contexts_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="content id"):
        KeyContext.content(acu_id="acu", grant_id=GRANT)
    with pytest.raises(LocalProtocolError, match="content id"):
        KeyContext.content(acu_id=ACU, grant_id="grant")
    with pytest.raises(LocalProtocolError, match="content id"):
        KeyContext.circle(circle_id="family", version=1)
    with pytest.raises(LocalProtocolError, match="version"):
        KeyContext.circle(circle_id=CIRCLE, version=-1)


def test_wrapped_key_wire() -> None:
    wrapped = wrap_for_bob()
    assert WrappedKey.from_wire(wrapped.to_wire()) == wrapped
    fields = {
        "type": WRAPPED_KEY_TYPE,
        "encrypted_key": wrapped.encrypted_key,
        "ephemeral_pub_key": wrapped.ephemeral_pub_key,
    }
    assert wrapped.to_wire() == canonical_encode(fields)
    cases: list[tuple[dict[str, object], str]] = [
        ({"encrypted_key": wrapped.encrypted_key[:-1]}, "47 bytes"),
        ({"ephemeral_pub_key": b""}, "0 bytes"),
        ({"ephemeral_pub_key": "key"}, "expected bytes"),
        ({"type": CIRCLE_WRAPPED_KEY_TYPE}, "record type"),
        ({"extra": 1}, "unexpected"),
    ]
    for changes, match in cases:
        with pytest.raises(MalformedInput, match=match):
            WrappedKey.from_wire(canonical_encode({**fields, **changes}))


# --- a content key under a circle key -------------------------------------------------------------


def test_circle_wrap_round_trip() -> None:
    wrapped = circle_wrap()
    assert circle_unwrap(wrapped) == CONTENT_KEY
    assert circle_wrap() == wrapped  # deterministic
    assert CircleWrappedKey.from_wire(wrapped.to_wire()) == wrapped


def test_circle_wrap_format_pinned_by_hand() -> None:
    context = canonical_encode(
        {
            "type": "vivim.sharing.key_context.v1",
            "purpose": "content_key_in_circle",
            "acu_id": ACU,
            "circle_id": CIRCLE,
            "version": 1,
        }
    )
    kek = hashlib.blake2b(
        context, digest_size=32, key=CIRCLE_KEY, person=b"vivim.shr.ckey"
    ).digest()
    nonce = hashlib.blake2b(
        CONTENT_KEY, digest_size=24, key=kek, person=b"vivim.shr.cnon2"
    ).digest()
    expected = nacl.secret.SecretBox(kek).encrypt(CONTENT_KEY, nonce).ciphertext
    assert circle_wrap() == CircleWrappedKey(encrypted_key=expected, nonce=nonce)


def test_two_content_keys_for_one_acu_and_version_never_share_a_nonce() -> None:
    first, second = circle_wrap(CONTENT_KEY), circle_wrap(OTHER_CONTENT_KEY)
    assert first.nonce != second.nonce
    assert circle_unwrap(second) == OTHER_CONTENT_KEY


def test_every_byte_of_a_circle_wrapped_key_flipped_is_refused() -> None:
    wrapped = circle_wrap()
    for changed in flips(wrapped.encrypted_key):
        with pytest.raises(ShareUnreadable):
            circle_unwrap(dataclasses.replace(wrapped, encrypted_key=changed))
    for changed in flips(wrapped.nonce):
        with pytest.raises(ShareUnreadable):
            circle_unwrap(dataclasses.replace(wrapped, nonce=changed))


@pytest.mark.parametrize(
    "changes",
    [
        {"circle_key": OTHER_CIRCLE_KEY},
        {"acu_id": OTHER_ACU},
        {"circle_id": OTHER_CIRCLE},
        {"circle_key_version": 2},
    ],
    ids=["other_circle_key", "other_acu", "other_circle", "other_version"],
)
def test_a_circle_wrapped_key_does_not_open_elsewhere(changes: dict[str, Any]) -> None:
    with pytest.raises(ShareUnreadable):
        circle_unwrap(circle_wrap(), **changes)


def test_circle_wrap_arguments_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="content_key is 32 bytes"):
        circle_wrap(b"")
    with pytest.raises(LocalProtocolError, match="circle_key is 32 bytes"):
        circle_wrap(circle_key=b"\x01" * 33)
    with pytest.raises(LocalProtocolError, match="content id"):
        circle_wrap(acu_id="acu")
    with pytest.raises(LocalProtocolError, match="circle_key_version"):
        circle_wrap(circle_key_version=True)
    with pytest.raises(LocalProtocolError, match="circle_key is 32 bytes"):
        circle_unwrap(circle_wrap(), circle_key=b"")
    with pytest.raises(LocalProtocolError, match="expected CircleWrappedKey"):
        circle_unwrap(wrap_for_bob())  # type: ignore[arg-type]
    fields = {"type": CIRCLE_WRAPPED_KEY_TYPE, "encrypted_key": bytes(48), "nonce": bytes(23)}
    with pytest.raises(MalformedInput, match="23 bytes"):
        CircleWrappedKey.from_wire(canonical_encode(fields))


def test_a_share_to_a_circle_end_to_end_and_a_removed_member() -> None:
    """Version 1 of the circle is {Bob, Carol}; version 2, after Carol left, is {Bob}."""
    key_v1, key_v2 = b"\x51" * 32, b"\x52" * 32
    acu1_key, acu2_key = CONTENT_KEY, OTHER_CONTENT_KEY
    members = {"bob": BOB_X25519, "carol": CAROL_X25519}
    circle_keys: dict[str, dict[int, WrappedKey]] = {"bob": {}, "carol": {}}
    for version, key, holders in [(1, key_v1, ("bob", "carol")), (2, key_v2, ("bob",))]:
        context = KeyContext.circle(circle_id=CIRCLE, version=version)
        for name in holders:
            circle_keys[name][version] = wrap_key(
                key,
                context=context,
                recipient_x25519_public_key=bytes(members[name].public_key),
                ephemeral_private_key=bytes([version]) * 32,
            )
    shares = [
        (ACU, 1, encrypt_content(acu1_key, ACU, b"ACU1"), circle_wrap(acu1_key, circle_key=key_v1)),
        (
            OTHER_ACU,
            2,
            encrypt_content(acu2_key, OTHER_ACU, b"ACU2"),
            circle_wrap(acu2_key, acu_id=OTHER_ACU, circle_key=key_v2, circle_key_version=2),
        ),
    ]

    def read(name: str, acu_id: str, version: int, ciphertext: bytes, wrapped: Any) -> bytes:
        circle_key = unwrap_key(
            circle_keys[name][version],
            context=KeyContext.circle(circle_id=CIRCLE, version=version),
            recipient_x25519_private_key=bytes(members[name]),
        )
        content_key = circle_unwrap(
            wrapped, acu_id=acu_id, circle_key=circle_key, circle_key_version=version
        )
        return decrypt_content(content_key, acu_id, ciphertext)

    assert [read("bob", *share) for share in shares] == [b"ACU1", b"ACU2"]
    assert read("carol", *shares[0]) == b"ACU1"
    assert 2 not in circle_keys["carol"]  # nothing of version 2 was wrapped for her
    # Her old circle key does not open what was shared under version 2.
    with pytest.raises(ShareUnreadable):
        circle_unwrap(shares[1][3], acu_id=OTHER_ACU, circle_key=key_v1, circle_key_version=2)
    # Nor can Carol open the version-2 key wrapped for Bob.
    with pytest.raises(ShareUnreadable):
        unwrap_key(
            circle_keys["bob"][2],
            context=KeyContext.circle(circle_id=CIRCLE, version=2),
            recipient_x25519_private_key=bytes(CAROL_X25519),
        )
