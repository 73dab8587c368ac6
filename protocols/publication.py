"""Global publications: the signed, immutable records of the global commons.

A `GlobalPublication` says that `publisher_did` published `subject_id` (an ACU or a
conversation of its vault) as version `version`, with `content`, the public bytes themselves.
It is separate from the vault's ACU: the ACU stays where it is, the publication is what anyone
may fetch, verify and keep. Publishing the same subject again is version n+1, naming version n's
id in `previous_id`; nothing is ever retracted or altered.

Signing is like `protocols.sharing`: Ed25519 by `publisher_device` (whose key its peer id holds)
over the canonical CBOR of every field but the signature plus a `type` entry (domain
separation). The `id` is the content id of those signed bytes. Unlike a grant, a publication is
meant for strangers, who hold no vault of the publisher: it carries the device's certificate,
the chain of certificates above it and the identity key rotations (what a mailbox `Introduce`
carries), so `verify_publication` can check with `protocols.trust` alone that the device acts
for the DID. (A stranger cannot know of a revocation it was never shown; like a relay, it
trusts the chain it is given.)

Content (`content`, canonical CBOR of a map; `content_id` is its content id):

    ACU:           {"kind": "acu", "acu": ACU}
    conversation:  {"kind": "conversation",
                    "conversation": {"id", "owner", "title", "provider", "model", "source_id",
                                     "created_at_ms", "updated_at_ms"},
                    "messages": [{"id", "position", "role", "content", "created_at_ms",
                                  "branch", "parent_id"}, ...],   # in position order
                    "acus": [ACU, ...]}                            # the conversation's ACUs
    ACU:           {"id", "author", "content", "type", "category", "language",
                    "source_time_ms", "conversation_id", "message_id", "position",
                    "provider", "model"}

`check_content` checks the kind and that each id is the one its fields give
(`protocols.vault_records.acu_id`, `conversation_id`): content cannot claim to be an ACU it is
not. Sizes are bounded (`MAX_CONTENT_BYTES`, `MAX_PUBLICATION_BYTES`) so that the largest
publication fits one GossipSub message (1 MiB in py-libp2p) and one pull frame.
"""

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import Final, Self

import nacl.signing

from protocols.canonical import canonical_decode, canonical_encode
from protocols.cid import check_content_id, content_id_of_bytes
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.identity_records import (
    SIGNATURE_LENGTH,
    _check_bytes,
    _check_did,
    _check_uint,
    _decode_fields,
    _sign,
    _take,
    _verify,
)
from protocols.mailbox_records import _check_peer_id
from protocols.peer_id import ed25519_public_key_from_peer_id, peer_id_from_ed25519_public_key
from protocols.trust import UntrustedCredentials, check_credentials
from protocols.vault_records import acu_id, conversation_id

__all__ = [
    "MAX_CONTENT_BYTES",
    "MAX_PUBLICATION_BYTES",
    "PUBLICATION_TYPE",
    "ContentMismatch",
    "GlobalPublication",
    "PublicationTooLarge",
    "SubjectKind",
    "UntrustedPublisher",
    "check_content",
    "verify_publication",
]

PUBLICATION_TYPE: Final = "vivim.commons.publication.v1"
# Content of one publication: a long conversation with its ACUs is some tens of KB; 512 KiB
# leaves room for the longest ones and, with the record around it, fits a GossipSub message.
MAX_CONTENT_BYTES: Final = 512 * 1024
# The whole record: content plus title, tags, license and the credentials (~64 KiB at most).
MAX_PUBLICATION_BYTES: Final = MAX_CONTENT_BYTES + 64 * 1024
MAX_TITLE: Final = 300  # characters
MAX_TAGS: Final = 16
MAX_TAG: Final = 48  # characters
MAX_LICENSE: Final = 64  # characters (an SPDX id or a short name)
# Credentials: a chain deeper than 16 devices or more than 64 key rotations is not a person's.
MAX_CHAIN: Final = 16
MAX_ROTATIONS: Final = 64
MAX_CREDENTIAL_BYTES: Final = 1024  # one certificate or rotation is ~250 bytes

_FIELDS = (
    "publisher_did", "publisher_device", "subject_kind", "subject_id", "version", "previous_id",
    "content_id", "content", "title", "tags", "license", "published_at_ms", "certificate",
    "chain", "rotations", "signature",
)  # fmt: skip
_ACU_KEYS: Final = frozenset(
    {
        "id", "author", "content", "type", "category", "language", "source_time_ms",
        "conversation_id", "message_id", "position", "provider", "model",
    }
)  # fmt: skip
_CONVERSATION_KEYS: Final = frozenset(
    {"id", "owner", "title", "provider", "model", "source_id", "created_at_ms", "updated_at_ms"}
)
_MESSAGE_KEYS: Final = frozenset(
    {"id", "position", "role", "content", "created_at_ms", "branch", "parent_id"}
)


class ContentMismatch(RemoteProtocolError):
    """A publication's content is not what it claims: its content id is another one, or an id
    inside it is not the one its fields give."""

    code = "content_mismatch"


class UntrustedPublisher(RemoteProtocolError):
    """The credentials a publication carries do not make its device a device of its DID."""

    code = "untrusted_publisher"


class PublicationTooLarge(MalformedInput):
    """A publication (or its content) over its size bound; refused before any check."""

    code = "too_large"


class SubjectKind(StrEnum):
    """What is published: one ACU, or a conversation with its messages and ACUs."""

    ACU = "acu"
    CONVERSATION = "conversation"

    @classmethod
    def from_wire(cls, value: object) -> "SubjectKind":
        if isinstance(value, str) and value in {kind.value for kind in SubjectKind}:
            return cls(value)
        raise MalformedInput(f"subject_kind must be acu or conversation: {value!r:.40}")


@dataclass(frozen=True, kw_only=True)
class GlobalPublication:
    """Version `version` of `publisher_did`'s publication of `subject_id` (module docstring)."""

    publisher_did: str
    publisher_device: str
    subject_kind: SubjectKind
    subject_id: str
    version: int
    previous_id: str | None
    content_id: str
    content: bytes
    title: str
    tags: tuple[str, ...]
    license: str
    published_at_ms: int
    certificate: bytes
    chain: tuple[bytes, ...]
    rotations: tuple[bytes, ...]
    signature: bytes

    def __post_init__(self) -> None:
        _check_did("publisher_did", self.publisher_did)
        _check_peer_id("publisher_device", self.publisher_device)
        if not isinstance(self.subject_kind, SubjectKind):
            raise MalformedInput(f"subject_kind is a {type(self.subject_kind).__name__}")
        check_content_id(self.subject_id)
        _check_uint("version", self.version)
        if self.version < 1:
            raise MalformedInput("a publication's first version is 1")
        if (self.version == 1) != (self.previous_id is None):
            raise MalformedInput("version 1 names no previous version; every later one does")
        if self.previous_id is not None:
            check_content_id(self.previous_id)
        check_content_id(self.content_id)
        if not isinstance(self.content, bytes):
            raise MalformedInput(f"content is a {type(self.content).__name__}, expected bytes")
        if len(self.content) > MAX_CONTENT_BYTES:
            raise PublicationTooLarge(
                f"content is {len(self.content)} bytes, more than {MAX_CONTENT_BYTES}"
            )
        _check_text("title", self.title, MAX_TITLE)
        _check_tags(self.tags)
        _check_text("license", self.license, MAX_LICENSE)
        _check_uint("published_at_ms", self.published_at_ms)
        _check_blob("certificate", self.certificate)
        _check_blobs("chain", self.chain, MAX_CHAIN)
        _check_blobs("rotations", self.rotations, MAX_ROTATIONS)
        _check_bytes("signature", self.signature, SIGNATURE_LENGTH)

    @classmethod
    def create(
        cls,
        *,
        signing_key: nacl.signing.SigningKey,
        publisher_did: str,
        subject_kind: SubjectKind,
        subject_id: str,
        version: int,
        previous_id: str | None,
        content: bytes,
        title: str = "",
        tags: tuple[str, ...] = (),
        license: str = "",
        published_at_ms: int,
        certificate: bytes,
        chain: tuple[bytes, ...],
        rotations: tuple[bytes, ...],
    ) -> Self:
        """A publication signed by `signing_key`, a device of `publisher_did`; tags sorted and
        deduplicated. `LocalProtocolError` for a value the record cannot hold."""
        try:
            unsigned = cls(
                publisher_did=publisher_did,
                publisher_device=peer_id_from_ed25519_public_key(bytes(signing_key.verify_key)),
                subject_kind=subject_kind,
                subject_id=subject_id,
                version=version,
                previous_id=previous_id,
                content_id=content_id_of_bytes(content),
                content=content,
                title=title,
                tags=tuple(sorted(set(tags))),
                license=license,
                published_at_ms=published_at_ms,
                certificate=certificate,
                chain=tuple(chain),
                rotations=tuple(rotations),
                signature=bytes(SIGNATURE_LENGTH),
            )
            if len(unsigned.signed_bytes()) > MAX_PUBLICATION_BYTES - SIGNATURE_LENGTH - 16:
                raise PublicationTooLarge(f"the record is over {MAX_PUBLICATION_BYTES} bytes")
        except (MalformedInput, TypeError) as err:
            raise LocalProtocolError(f"cannot make this publication: {err}") from err
        return replace(unsigned, signature=_sign(signing_key, unsigned.signed_bytes()))

    @cached_property
    def id(self) -> str:
        """The content id of the signed bytes."""
        return content_id_of_bytes(self.signed_bytes())

    def _unsigned_fields(self) -> dict[str, object]:
        return {
            "type": PUBLICATION_TYPE,
            "publisher_did": self.publisher_did,
            "publisher_device": self.publisher_device,
            "subject_kind": self.subject_kind.value,
            "subject_id": self.subject_id,
            "version": self.version,
            "previous_id": self.previous_id,
            "content_id": self.content_id,
            "content": self.content,
            "title": self.title,
            "tags": list(self.tags),
            "license": self.license,
            "published_at_ms": self.published_at_ms,
            "certificate": self.certificate,
            "chain": list(self.chain),
            "rotations": list(self.rotations),
        }

    def signed_bytes(self) -> bytes:
        """The bytes the signature is over (and the id is the content id of)."""
        return canonical_encode(self._unsigned_fields())

    def verify_signature(self) -> None:
        """Raise `BadSignature` unless `publisher_device`'s key signed this publication."""
        _verify(
            ed25519_public_key_from_peer_id(self.publisher_device),
            self.signed_bytes(),
            self.signature,
        )

    def decoded_content(self) -> dict[str, object]:
        """The content map (checked by `check_content`)."""
        return check_content(self.content, self.subject_kind, self.subject_id)

    def to_wire(self) -> bytes:
        return canonical_encode({**self._unsigned_fields(), "signature": self.signature})

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        """Decode `to_wire` bytes; `MalformedInput` (`PublicationTooLarge` over the bound).
        Verifies nothing: `verify_publication` does."""
        if not isinstance(data, bytes):
            raise MalformedInput(f"a publication is bytes, not {type(data).__name__}")
        if len(data) > MAX_PUBLICATION_BYTES:
            raise PublicationTooLarge(
                f"publication of {len(data)} bytes, more than {MAX_PUBLICATION_BYTES}"
            )
        fields = _decode_fields(data, PUBLICATION_TYPE, _FIELDS)
        previous = fields["previous_id"]
        return cls(
            publisher_did=_take(fields, "publisher_did", str),
            publisher_device=_take(fields, "publisher_device", str),
            subject_kind=SubjectKind.from_wire(fields["subject_kind"]),
            subject_id=_take(fields, "subject_id", str),
            version=_take(fields, "version", int),
            previous_id=None if previous is None else _take(fields, "previous_id", str),
            content_id=_take(fields, "content_id", str),
            content=_take(fields, "content", bytes),
            title=_take(fields, "title", str),
            tags=tuple(_take(fields, "tags", list)),
            license=_take(fields, "license", str),
            published_at_ms=_take(fields, "published_at_ms", int),
            certificate=_take(fields, "certificate", bytes),
            chain=tuple(_take(fields, "chain", list)),
            rotations=tuple(_take(fields, "rotations", list)),
            signature=_take(fields, "signature", bytes),
        )


def verify_publication(publication: GlobalPublication) -> None:
    """Everything a receiver checks before storing: the signature (`BadSignature`), the content
    against its id and shape (`ContentMismatch`, `MalformedInput`), and that the credentials make
    the signing device a trusted device of the DID (`UntrustedPublisher`)."""
    publication.verify_signature()
    if content_id_of_bytes(publication.content) != publication.content_id:
        raise ContentMismatch("the content is not the content its content_id names")
    publication.decoded_content()
    try:
        check_credentials(
            publication.certificate,
            publication.chain,
            publication.rotations,
            device=publication.publisher_device,
            did=publication.publisher_did,
        )
    except MalformedInput as err:
        raise UntrustedPublisher(f"the credentials do not decode: {err}") from err
    except UntrustedCredentials as err:
        raise UntrustedPublisher(str(err)) from err


# --- content --------------------------------------------------------------------------------------


def check_content(content: bytes, kind: SubjectKind, subject_id: str) -> dict[str, object]:
    """The content map, checked (module docstring); `ContentMismatch` or `MalformedInput`."""
    value = canonical_decode(content)
    if not isinstance(value, dict) or value.get("kind") != kind.value:
        raise ContentMismatch(f"the content is not a {kind.value} publication's")
    if kind is SubjectKind.ACU:
        _keys(value, {"kind", "acu"}, "content")
        if _check_acu(value["acu"]) != subject_id:
            raise ContentMismatch("the content is another ACU than the subject")
        return value
    _keys(value, {"kind", "conversation", "messages", "acus"}, "content")
    conversation = value["conversation"]
    _keys(conversation, _CONVERSATION_KEYS, "conversation")
    assert isinstance(conversation, dict)
    owner, provider, source = (conversation[k] for k in ("owner", "provider", "source_id"))
    if not all(isinstance(v, str) for v in (owner, provider, source)):
        raise MalformedInput("a conversation's owner, provider and source_id are text")
    derived = conversation_id(str(owner), str(provider), str(source))
    if conversation["id"] != derived or derived != subject_id:
        raise ContentMismatch("the content is another conversation than the subject")
    messages, acus = value["messages"], value["acus"]
    if not isinstance(messages, list) or not isinstance(acus, list):
        raise MalformedInput("messages and acus are lists")
    for message in messages:
        _keys(message, _MESSAGE_KEYS, "a message")
    for acu in acus:
        _check_acu(acu)
    return value


def _check_acu(acu: object) -> str:
    """The id of an ACU map, checked against its fields."""
    _keys(acu, _ACU_KEYS, "an ACU")
    assert isinstance(acu, dict)
    author, text, acu_type, at = (acu[k] for k in ("author", "content", "type", "source_time_ms"))
    if not (isinstance(author, str) and isinstance(text, str) and isinstance(acu_type, str)):
        raise MalformedInput("an ACU's author, content and type are text")
    if not isinstance(at, int) or isinstance(at, bool):
        raise MalformedInput("an ACU's source_time_ms is an int")
    derived = acu_id(author, text, acu_type, at)
    if acu["id"] != derived:
        raise ContentMismatch(f"an ACU's id is not the one its fields give ({derived})")
    return derived


def _keys(value: object, expected: frozenset[str] | set[str], name: str) -> None:
    if not isinstance(value, Mapping):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected a map")
    if set(value.keys()) != set(expected):
        missing = sorted(expected - value.keys())
        extra = sorted(value.keys() - expected)
        raise MalformedInput(f"{name} fields wrong: missing {missing}, unexpected {extra!s:.200}")


# --- field checks ---------------------------------------------------------------------------------


def _check_text(name: str, value: object, limit: int) -> None:
    if not isinstance(value, str):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected text")
    if len(value) > limit:
        raise MalformedInput(f"{name} is {len(value)} characters, more than {limit}")


def _check_tags(tags: object) -> None:
    if not isinstance(tags, tuple):
        raise MalformedInput(f"tags is a {type(tags).__name__}, expected a list")
    if len(tags) > MAX_TAGS:
        raise MalformedInput(f"{len(tags)} tags, more than {MAX_TAGS}")
    for tag in tags:
        _check_text("a tag", tag, MAX_TAG)
        if not tag:
            raise MalformedInput("a tag is empty")
    if any(a >= b for a, b in itertools.pairwise(tags)):
        raise MalformedInput("tags are not strictly ascending (sorted, unique)")


def _check_blob(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected bytes")
    if not 0 < len(value) <= MAX_CREDENTIAL_BYTES:
        raise MalformedInput(f"{name} is {len(value)} bytes, expected 1 to {MAX_CREDENTIAL_BYTES}")


def _check_blobs(name: str, values: object, limit: int) -> None:
    if not isinstance(values, tuple):
        raise MalformedInput(f"{name} is a {type(values).__name__}, expected a list")
    if len(values) > limit:
        raise MalformedInput(f"{name} holds {len(values)} entries, more than {limit}")
    for value in values:
        _check_blob(f"an entry of {name}", value)
