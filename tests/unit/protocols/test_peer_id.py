import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from protocols.base58 import b58decode, b58encode
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.peer_id import (
    InvalidPeerId,
    ed25519_public_key_from_peer_id,
    peer_id_from_ed25519_public_key,
)

# From the libp2p peer-id spec, peer-ids/peer-ids.md in github.com/libp2p/specs (commit
# 7740c076350b6636b868a9e4a411280eea34d335), "Test vectors": the protobuf PrivateKey (whose Data is
# the 32-byte seed followed by the public key) and the protobuf PublicKey of one Ed25519 key pair.
SPEC_PRIVATE_KEY_PROTOBUF = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SPEC_PUBLIC_KEY_PROTOBUF = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
# The same section of the spec, "String representation": an Ed25519 peer id (identity multihash),
# a SHA-256 peer id and the CIDv1 form of a peer id.
SPEC_ED25519_PEER_ID = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
SPEC_SHA256_PEER_ID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
SPEC_CID_PEER_ID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"

VALID_PEER_ID = SPEC_ED25519_PEER_ID


def test_spec_key_vector() -> None:
    seed = SPEC_PRIVATE_KEY_PROTOBUF[4:36]
    public_key = bytes(nacl.signing.SigningKey(seed).verify_key)
    assert SPEC_PRIVATE_KEY_PROTOBUF[36:] == public_key
    assert b"\x08\x01\x12\x20" + public_key == SPEC_PUBLIC_KEY_PROTOBUF
    peer_id = peer_id_from_ed25519_public_key(public_key)
    # The identity multihash of the spec's PublicKey protobuf, as the spec's "Peer Ids" prescribes.
    assert b58decode(peer_id) == b"\x00\x24" + SPEC_PUBLIC_KEY_PROTOBUF
    assert peer_id == "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
    assert ed25519_public_key_from_peer_id(peer_id) == public_key


def test_spec_example_peer_id_round_trips() -> None:
    public_key = ed25519_public_key_from_peer_id(SPEC_ED25519_PEER_ID)
    assert peer_id_from_ed25519_public_key(public_key) == SPEC_ED25519_PEER_ID
    assert ID.from_base58(SPEC_ED25519_PEER_ID).extract_public_key() == Ed25519PublicKey(
        nacl.signing.VerifyKey(public_key)
    )


@pytest.mark.parametrize(
    "seed",
    [bytes(32), b"\x01" * 32, bytes(range(32)), bytes(range(255, 223, -1))],
)
def test_agrees_with_libp2p(seed: bytes) -> None:
    key_pair = create_new_key_pair(seed)
    public_key = key_pair.public_key.to_bytes()
    assert public_key == bytes(nacl.signing.SigningKey(seed).verify_key)
    expected = ID.from_pubkey(key_pair.public_key).to_base58()
    assert peer_id_from_ed25519_public_key(public_key) == expected
    assert expected.startswith("12D3KooW")
    assert ed25519_public_key_from_peer_id(expected) == public_key


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_agrees_with_libp2p_for_any_seed(seed: bytes) -> None:
    key_pair = create_new_key_pair(seed)
    peer_id = peer_id_from_ed25519_public_key(key_pair.public_key.to_bytes())
    assert peer_id == ID.from_pubkey(key_pair.public_key).to_base58()


@given(st.binary(min_size=32, max_size=32))
def test_round_trip(public_key: bytes) -> None:
    peer_id = peer_id_from_ed25519_public_key(public_key)
    assert peer_id.startswith("12D3KooW")
    assert ed25519_public_key_from_peer_id(peer_id) == public_key


_PREFIX = b"\x00\x24\x08\x01\x12\x20"


@pytest.mark.parametrize(
    ("peer_id", "message"),
    [
        ("", "multihash code is ''"),
        (SPEC_SHA256_PEER_ID, "SHA-256 multihash"),
        (SPEC_CID_PEER_ID, "multihash code is '01'"),
        ("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5S0", "not valid base58btc"),
        (b58encode(b"\x00\x25\x08\x01\x12\x21" + bytes(33)), "length is '25'"),
        # A secp256k1 key (protobuf Type = 2) in an identity multihash.
        (b58encode(b"\x00\x25\x08\x02\x12\x21\x02" + bytes(32)), "length is '25'"),
        (b58encode(b"\x00\x24\x08\x02\x12\x20" + bytes(32)), "not an Ed25519 key"),
        (b58encode(b"\x00\x24\x12\x20" + bytes(32) + b"\x08\x01"), "not an Ed25519 key"),
        (b58encode(_PREFIX + bytes(31)), "31 bytes, expected 32"),
        (b58encode(_PREFIX + bytes(33)), "33 bytes, expected 32"),
        ("2" * 200, "longer than"),
    ],
)
def test_invalid_peer_id_names_what_is_wrong(peer_id: str, message: str) -> None:
    with pytest.raises(InvalidPeerId, match=message) as info:
        ed25519_public_key_from_peer_id(peer_id)
    assert info.value.code == "invalid_peer_id"
    assert isinstance(info.value, RemoteProtocolError)
    assert isinstance(info.value, MalformedInput)


@pytest.mark.parametrize("length", range(len(VALID_PEER_ID)))
def test_every_truncation_is_refused(length: int) -> None:
    with pytest.raises(InvalidPeerId):
        ed25519_public_key_from_peer_id(VALID_PEER_ID[:length])


@pytest.mark.parametrize("suffix", ["1", "z", "2", "11", " ", "\n"])
def test_trailing_characters_are_refused(suffix: str) -> None:
    with pytest.raises(InvalidPeerId):
        ed25519_public_key_from_peer_id(VALID_PEER_ID + suffix)


@given(st.text(max_size=80))
def test_any_text_is_a_peer_id_or_invalid_peer_id(text: str) -> None:
    try:
        public_key = ed25519_public_key_from_peer_id(text)
    except InvalidPeerId:
        return
    assert peer_id_from_ed25519_public_key(public_key) == text


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_key_length_is_a_local_error(length: int) -> None:
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        peer_id_from_ed25519_public_key(bytes(length))
