import base64

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.base58 import b58decode, b58encode
from protocols.did import InvalidDid, did_from_ed25519_public_key, ed25519_public_key_from_did
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError

# Test vectors of the W3C CCG did:key method: test-vectors/ed25519-x25519.json in
# github.com/w3c-ccg/did-method-key (commit f5abee840c31e92cd1ac11737e0b62103ab99d21): the Ed25519
# seed, the public key (publicKeyBase58) and the DID it makes.
SPEC_SEED_VECTORS = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000002",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000003",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
    ),
]
# The same file's fifth Ed25519 vector gives the key as a JWK ("x" is base64url, unpadded).
SPEC_JWK_VECTOR = (
    "0000000000000000000000000000000000000000000000000000000000000005",
    "_eT7oDCtAC98L31MMx9J0T-w7HR-zuvsY08f9MvKne8",
    "did:key:z6MkwYMhwTvsq376YBAcJHy3vyRWzBgn5vKfVqqDCgm7XVKU",
)
# The example Ed25519 DID in the did:key specification text (index.html, "Format").
SPEC_EXAMPLE_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

VALID_DID = SPEC_SEED_VECTORS[0][2]


@pytest.mark.parametrize(("seed_hex", "public_key_base58", "did"), SPEC_SEED_VECTORS)
def test_spec_seed_vectors(seed_hex: str, public_key_base58: str, did: str) -> None:
    public_key = bytes(nacl.signing.SigningKey(bytes.fromhex(seed_hex)).verify_key)
    assert public_key == b58decode(public_key_base58)
    assert did_from_ed25519_public_key(public_key) == did
    assert ed25519_public_key_from_did(did) == public_key


def test_spec_jwk_vector() -> None:
    seed_hex, jwk_x, did = SPEC_JWK_VECTOR
    public_key = base64.urlsafe_b64decode(jwk_x + "=")
    assert bytes(nacl.signing.SigningKey(bytes.fromhex(seed_hex)).verify_key) == public_key
    assert did_from_ed25519_public_key(public_key) == did
    assert ed25519_public_key_from_did(did) == public_key


def test_spec_example_did_round_trips() -> None:
    public_key = ed25519_public_key_from_did(SPEC_EXAMPLE_DID)
    assert len(public_key) == 32
    assert did_from_ed25519_public_key(public_key) == SPEC_EXAMPLE_DID


def test_layout_is_multibase_z_of_ed01_then_key() -> None:
    public_key = bytes(range(32))
    did = did_from_ed25519_public_key(public_key)
    assert did.startswith("did:key:z6Mk")
    assert b58decode(did.removeprefix("did:key:z")) == b"\xed\x01" + public_key


@given(st.binary(min_size=32, max_size=32))
def test_round_trip(public_key: bytes) -> None:
    did = did_from_ed25519_public_key(public_key)
    assert did.startswith("did:key:z6Mk")
    assert ed25519_public_key_from_did(did) == public_key


@pytest.mark.parametrize(
    ("did", "message"),
    [
        ("", "is not a DID"),
        ("z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "is not a DID"),
        ("DID:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "is not a DID"),
        ("did:web:example.com", "method is 'web'"),
        ("did:peer:0z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "method is 'peer'"),
        ("did:key", "no method-specific identifier"),
        (VALID_DID + "#z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "DID URL"),
        (VALID_DID + "/path", "DID URL"),
        (VALID_DID + "?query", "DID URL"),
        ("did:key:", "multibase prefix is ''"),
        ("did:key:f" + (b"\xed\x01" + bytes(32)).hex(), "multibase prefix is 'f'"),
        ("did:key:u7QE", "multibase prefix is 'u'"),
        ("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDoo0p", "not valid base58btc"),
        # An X25519 did:key (multicodec 0xec), from the same test-vector file.
        ("did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW", "multicodec prefix is 'ec01'"),
        # A secp256k1 did:key (multicodec 0xe7), the example in test-vectors/secp256k1.json.
        ("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "prefix is 'e701'"),
        ("did:key:z" + b58encode(b"\xed\x01" + bytes(31)), "31 bytes, expected 32"),
        ("did:key:z" + b58encode(b"\xed\x01" + bytes(33)), "33 bytes, expected 32"),
        ("did:key:z" + b58encode(b"\xed\x81\x01" + bytes(32)), "multicodec prefix is 'ed81'"),
        ("did:key:z" + "2" * 200, "longer than"),
    ],
)
def test_invalid_did_names_what_is_wrong(did: str, message: str) -> None:
    with pytest.raises(InvalidDid, match=message) as info:
        ed25519_public_key_from_did(did)
    assert info.value.code == "invalid_did"
    assert isinstance(info.value, RemoteProtocolError)
    assert isinstance(info.value, MalformedInput)


@pytest.mark.parametrize("length", range(len(VALID_DID)))
def test_every_truncation_is_refused(length: int) -> None:
    with pytest.raises(InvalidDid):
        ed25519_public_key_from_did(VALID_DID[:length])


@pytest.mark.parametrize("suffix", ["1", "z", "2", "11", " ", "\n"])
def test_trailing_characters_are_refused(suffix: str) -> None:
    with pytest.raises(InvalidDid):
        ed25519_public_key_from_did(VALID_DID + suffix)


@given(st.text(max_size=80))
def test_any_text_is_a_did_or_invalid_did(text: str) -> None:
    try:
        public_key = ed25519_public_key_from_did(text)
    except InvalidDid:
        return
    assert did_from_ed25519_public_key(public_key) == text


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_key_length_is_a_local_error(length: int) -> None:
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        did_from_ed25519_public_key(bytes(length))
