"""Canonical CBOR: the one byte string a value has, so signatures over it can be checked anywhere.

A signature is over bytes, not over a value, so every node must turn a record into the same bytes
and must refuse any other spelling of it. `canonical_encode` is cbor2's canonical mode (RFC 7049
section 3.9: shortest integer and length heads, definite lengths, map keys sorted by length then
bytewise). `canonical_decode` accepts exactly the bytes `canonical_encode` produces: it decodes,
re-encodes and compares, which refuses, without a rule of its own for each, indefinite lengths,
over-long heads, unsorted or duplicate map keys, tags that decode to plain values (bignums of small
numbers, the self-describe tag, shared values) and trailing bytes.

Values are kept to plain types: None, bool, int (-2**64 <= n < 2**64, the range CBOR writes without
a bignum tag), str, bytes, list, and dict with str keys. Floats, tags and simple values have no
use in our records and several spellings each, so they are refused in both directions.
"""

import cbor2

from protocols.errors import LocalProtocolError, MalformedInput

__all__ = ["MalformedInput", "canonical_decode", "canonical_encode"]

# Integers CBOR writes in its own heads (major types 0 and 1); beyond this range it needs a tag.
MIN_INT = -(2**64)
MAX_INT = 2**64 - 1
# Our records nest two or three levels deep; the bound keeps a hostile input from exhausting the
# stack of the walk below (cbor2 itself refuses nesting beyond 400).
MAX_DEPTH = 32


def canonical_encode(value: object) -> bytes:
    """The canonical CBOR bytes of a plain value; raises `LocalProtocolError` for other types."""
    problem = _plain_value_problem(value, depth=0)
    if problem is not None:
        raise LocalProtocolError(f"cannot encode canonically: {problem}")
    return cbor2.dumps(value, canonical=True)


def canonical_decode(data: bytes) -> object:
    """Decode bytes `canonical_encode` produced; raises `MalformedInput` for anything else."""
    try:
        value: object = cbor2.loads(data)
    except cbor2.CBORDecodeError as err:
        raise MalformedInput(f"invalid CBOR: {err}") from err
    problem = _plain_value_problem(value, depth=0)
    if problem is not None:
        raise MalformedInput(f"CBOR holds a value outside the plain types: {problem}")
    encoded = cbor2.dumps(value, canonical=True)
    if encoded != data:
        if data.startswith(encoded):
            raise MalformedInput(f"{len(data) - len(encoded)} trailing bytes after the CBOR value")
        raise MalformedInput("CBOR is not in canonical form")
    return value


def _plain_value_problem(value: object, *, depth: int) -> str | None:
    """What makes `value` not a plain value, or None if it is one."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH}"
    if value is None or isinstance(value, bool | str | bytes):
        return None
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            return f"integer {value} is outside [-2**64, 2**64 - 1]"
        return None
    if isinstance(value, list):
        for item in value:
            problem = _plain_value_problem(item, depth=depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"map key {key!r} is not a str"
            problem = _plain_value_problem(item, depth=depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{type(value).__name__} is not a plain type"
