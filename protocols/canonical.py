"""Canonical CBOR: the one byte string a value has, so signatures over it can be checked anywhere.

A signature is over bytes, not over a value, so every node must turn a record into the same bytes
and must refuse any other spelling of it. `canonical_encode` is cbor2's canonical mode (RFC 7049
section 3.9: shortest integer and length heads, definite lengths, map keys sorted by length then
bytewise), done the cheaper way when the maps are in that order already (`_dumps`).
`canonical_decode` accepts exactly the bytes `canonical_encode` produces: it decodes,
re-encodes and compares, which refuses, without a rule of its own for each, indefinite lengths,
over-long heads, unsorted or duplicate map keys, tags that decode to plain values (bignums of small
numbers, the self-describe tag, shared values) and trailing bytes.

Values are kept to plain types: None, bool, int (-2**64 <= n < 2**64, the range CBOR writes without
a bignum tag), str, bytes, list, and dict with str keys. Floats, tags and simple values have no
use in our records and several spellings each, so they are refused in both directions.
"""

import itertools
from collections.abc import Iterable
from typing import Any, Final

import cbor2

from protocols.errors import LocalProtocolError, MalformedInput

__all__ = ["MalformedInput", "canonical_decode", "canonical_encode", "decode_stored"]

# Integers CBOR writes in its own heads (major types 0 and 1); beyond this range it needs a tag.
MIN_INT = -(2**64)
MAX_INT = 2**64 - 1
# Our records nest two or three levels deep; the bound keeps a hostile input from exhausting the
# stack of the walk below (cbor2 itself refuses nesting beyond 400).
MAX_DEPTH = 32


def canonical_encode(value: object) -> bytes:
    """The canonical CBOR bytes of a plain value; raises `LocalProtocolError` for other types."""
    problem = _plain_value_problem(value, depth=0)
    if problem is not None and problem is not _UNORDERED:
        raise LocalProtocolError(f"cannot encode canonically: {problem}")
    return _dumps(value, ordered=problem is None)


def canonical_decode(data: bytes) -> object:
    """Decode bytes `canonical_encode` produced; raises `MalformedInput` for anything else."""
    try:
        value: object = cbor2.loads(data)
    except cbor2.CBORDecodeError as err:
        raise MalformedInput(f"invalid CBOR: {err}") from err
    problem = _plain_value_problem(value, depth=0)
    if problem is not None and problem is not _UNORDERED:
        raise MalformedInput(f"CBOR holds a value outside the plain types: {problem}")
    encoded = _dumps(value, ordered=problem is None)
    if encoded != data:
        if data.startswith(encoded):
            raise MalformedInput(f"{len(data) - len(encoded)} trailing bytes after the CBOR value")
        raise MalformedInput("CBOR is not in canonical form")
    return value


def _dumps(value: object, *, ordered: bool) -> bytes:
    """cbor2's canonical encoding of a plain value.

    For plain values, canonical mode differs from cbor2's default only in sorting map keys
    (integer and length heads are the shortest in both; there are no floats or sets), and
    sorting costs: 13 us instead of 3.5 us for an ACU's op (measured). So a value whose maps
    all have their keys in canonical order already (`ordered`, found by the walk) is encoded
    in default mode, which gives the same bytes; the tests compare the two on random values.
    The vault builds its records with their keys in that order.
    """
    return cbor2.dumps(value) if ordered else cbor2.dumps(value, canonical=True)


def decode_stored(data: bytes) -> object:
    """Decode canonical bytes this node checked before storing them: cbor2 alone, no checks.

    Folding the op log decodes every stored op again; the wire bytes were checked by
    `canonical_decode` (or made by `canonical_encode`) before they were stored, so checking them
    a second time on every fold would only cost. Never for bytes from outside: those go through
    `canonical_decode`. (`store.vault_state.verify_vault`, which trusts nothing it reads,
    checks every stored op with `canonical_decode` before it folds any.)
    """
    try:
        return cbor2.loads(data)
    except cbor2.CBORDecodeError as err:
        raise MalformedInput(f"invalid CBOR: {err}") from err


# Exact types of leaves that need no further look (bool and None included); ints need a range
# check, and a subclass (an IntEnum, a StrEnum) takes the slower isinstance path below.
_LEAF_TYPES: Final = frozenset({str, bytes, bool, type(None)})

# What the walk returns for a plain value with a map whose keys are out of canonical order
# (compared by identity: no problem text is this object).
_UNORDERED: Final = "map keys out of canonical order"

# Whether a map's keys, in its iteration order, are in canonical order (shorter encoded key
# first, then bytewise: RFC 7049 section 3.9), by key tuple. Records have few key sets; the
# bound keeps maps from elsewhere with keys of their own from growing it without end.
_KEY_ORDER: dict[tuple[str, ...], bool] = {}
_KEY_ORDER_SIZE: Final = 4096


def _keys_problem(keys: tuple[object, ...]) -> str | None:
    """What makes a map's keys not plain (a key that is not a str), or None."""
    for key in keys:
        if not isinstance(key, str):
            return f"map key {key!r} is not a str"
    return None


def _keys_in_canonical_order(keys: tuple[str, ...]) -> bool:
    ordered = all(_key_rank(a) < _key_rank(b) for a, b in itertools.pairwise(keys))
    if len(_KEY_ORDER) < _KEY_ORDER_SIZE:
        _KEY_ORDER[keys] = ordered
    return ordered


def _key_rank(key: str) -> tuple[int, bytes]:
    # surrogatepass: a key that is not valid UTF-8 still gets a rank; cbor2 refuses it after.
    encoded = key.encode("utf-8", "surrogatepass")
    return len(encoded), encoded


def _plain_value_problem(value: object, *, depth: int) -> str | None:
    """What makes `value` not a plain value, or None if it is one: `_UNORDERED` if it is one
    with a map whose keys are not in canonical order (so `_dumps` must sort them).

    Runs over every op payload signed or received and every map a content id is taken of, and
    cost more than cbor2's encoding itself (measured with the import benchmark), so: leaves of
    the common exact types are checked inline in their container's loop rather than by a call
    each, and a map's keys are checked once per distinct key tuple (`_KEY_ORDER`: a tuple equal
    to a remembered one holds only str keys, so its keys need no look).
    """
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH}"
    kind = type(value)
    items: Iterable[Any]
    if kind is dict:
        assert isinstance(value, dict)
        keys = tuple(value)
        ordered = _KEY_ORDER.get(keys)
        if ordered is None:
            problem = _keys_problem(keys)
            if problem is not None:
                return problem
            ordered = _keys_in_canonical_order(keys)
        items = value.values()
    elif kind is list:
        assert isinstance(value, list)
        ordered = True
        items = value
    elif kind in _LEAF_TYPES:
        return None
    else:
        return _other_value_problem(value, depth=depth)
    if depth == MAX_DEPTH and value:
        return f"nested deeper than {MAX_DEPTH}"  # what its items would say, inline or not
    for item in items:
        item_kind = type(item)
        if item_kind in _LEAF_TYPES:
            continue
        if item_kind is int:
            if MIN_INT <= item <= MAX_INT:
                continue
            return f"integer {item} is outside [-2**64, 2**64 - 1]"
        problem = _plain_value_problem(item, depth=depth + 1)
        if problem is _UNORDERED:
            ordered = False
        elif problem is not None:
            return problem
    return None if ordered else _UNORDERED


def _other_value_problem(value: object, *, depth: int) -> str | None:
    """`_plain_value_problem` for ints and for subclasses of the plain types.

    Maps of a subclass of dict are reported `_UNORDERED`: cbor2 sorts their keys itself.
    """
    if isinstance(value, bool | str | bytes):
        return None
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            return f"integer {value} is outside [-2**64, 2**64 - 1]"
        return None
    if isinstance(value, list):
        unordered = False
        for item in value:
            problem = _plain_value_problem(item, depth=depth + 1)
            if problem is _UNORDERED:
                unordered = True
            elif problem is not None:
                return problem
        return _UNORDERED if unordered else None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"map key {key!r} is not a str"
            problem = _plain_value_problem(item, depth=depth + 1)
            if problem is not None and problem is not _UNORDERED:
                return problem
        return _UNORDERED
    return f"{type(value).__name__} is not a plain type"
