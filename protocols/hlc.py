"""Hybrid logical clock: stamps that follow wall time and still order every causal pair.

A stamp is (48-bit wall milliseconds, 16-bit counter, node id). The wall part stays close to real
time, so stamps mean something to a reader; the counter orders events within one millisecond and
events whose wall clock is behind a stamp already seen; the node id (the device's peer id) breaks
the remaining ties, so stamps from different devices are never equal. Stamps order as the tuple
`(wall_ms, counter, node)`, and `wall_ms << 16 | counter` packs the first two into one integer
that fits a SQLite INTEGER column and sorts the same way.

`HybridClock` is the algorithm of Kulkarni, Demirbas, Madeppa, Avva and Leone, "Logical Physical
Clocks" (OPODIS 2014), figure 5, with `l` = `wall_ms`, `c` = `counter` and `pt` = `now_ms`:

    send / local event:  l' = l;  l = max(l', pt);
                         c = c + 1 if l == l' else 0
    receive of (ml, mc): l' = l;  l = max(l', ml, pt);
                         c = max(c, mc) + 1  if l == l' == ml
                             c + 1           if l == l'
                             mc + 1          if l == ml
                             0               otherwise

Two departures from the paper, both refusals rather than changes of the algorithm:
- A remote stamp whose wall time is more than `max_drift_ms` ahead of our `now_ms` raises
  `ClockDrift`; it is checked before anything else, and the clock is left untouched.
- A counter that would pass 0xFFFF raises `CounterOverflow` (the paper lets it grow; a wrap would
  issue a stamp below an earlier one); the clock is left untouched. It clears once `now_ms` moves
  past the last stamp's wall time.

The clock is a sans-I/O state machine: the caller passes `now_ms` and persists `last` after each
stamp it uses. A restart builds `HybridClock(node, last=persisted)`, and since `l` never goes below
`last.wall_ms`, the first stamp after it is larger than `last` even if the wall clock went back.
"""

from dataclasses import dataclass

from protocols.errors import ClockDrift, CounterOverflow, LocalProtocolError, MalformedInput

__all__ = [
    "MAX_COUNTER",
    "MAX_DRIFT_MS",
    "MAX_WALL_MS",
    "ClockDrift",
    "CounterOverflow",
    "HybridClock",
    "Timestamp",
]

# 48 bits of milliseconds last until the year 10889; 16 bits of counter are 65,536 events in one
# millisecond. Together they are the 64 bits of `packed()`, which SQLite stores as an INTEGER.
WALL_MS_BITS = 48
COUNTER_BITS = 16
MAX_WALL_MS = 2**WALL_MS_BITS - 1
MAX_COUNTER = 2**COUNTER_BITS - 1
MAX_PACKED = 2 ** (WALL_MS_BITS + COUNTER_BITS) - 1
# How far ahead of our wall clock a remote stamp may be: five minutes, well beyond the skew of
# NTP-synchronised devices (milliseconds) and of a phone whose clock was set by hand (seconds),
# small enough that one bad clock cannot push everyone's stamps far into the future.
MAX_DRIFT_MS = 300_000
# A node id is a libp2p peer id (52 characters for an Ed25519 key); the bound keeps a stamp from
# outside from carrying an arbitrarily long string. The op log checks that it is a peer id.
MAX_NODE_LENGTH = 128


@dataclass(frozen=True, kw_only=True, order=True)
class Timestamp:
    """One hybrid-clock stamp; ordered by `(wall_ms, counter, node)`, the field order.

    Validated on construction: a bad value raises `MalformedInput` (what a stamp from a peer or
    from storage is). `node` is any non-empty string of at most 128 characters; the op log requires
    it to be the signing device's peer id.
    """

    wall_ms: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        _check_int("wall_ms", self.wall_ms, MAX_WALL_MS)
        _check_int("counter", self.counter, MAX_COUNTER)
        if not isinstance(self.node, str):
            raise MalformedInput(f"node is a {type(self.node).__name__}, expected str")
        if not 0 < len(self.node) <= MAX_NODE_LENGTH:
            raise MalformedInput(
                f"node is {len(self.node)} characters, expected 1 to {MAX_NODE_LENGTH}"
            )

    def packed(self) -> int:
        """`wall_ms << 16 | counter`: 64 bits that sort as `(wall_ms, counter)`; without `node`."""
        return self.wall_ms << COUNTER_BITS | self.counter

    @classmethod
    def from_packed(cls, packed: int, node: str) -> "Timestamp":
        """The stamp `packed()` came from, with its `node`; raises `MalformedInput`."""
        _check_int("packed", packed, MAX_PACKED)
        return cls(wall_ms=packed >> COUNTER_BITS, counter=packed & MAX_COUNTER, node=node)

    def to_wire(self) -> list[int | str]:
        """`[wall_ms, counter, node]`, a plain value to embed in canonical CBOR."""
        return [self.wall_ms, self.counter, self.node]

    @classmethod
    def from_wire(cls, value: object) -> "Timestamp":
        """The stamp `to_wire` made `value` from; raises `MalformedInput` for anything else."""
        if not isinstance(value, list):
            raise MalformedInput(f"timestamp is a {type(value).__name__}, expected a list")
        if len(value) != 3:
            raise MalformedInput(f"timestamp has {len(value)} items, expected 3")
        wall_ms, counter, node = value
        return cls(wall_ms=wall_ms, counter=counter, node=node)


class HybridClock:
    """The hybrid logical clock of one node; `last` is the latest stamp it issued.

    Not thread-safe and never reads a clock: the caller passes `now_ms` (its wall clock in Unix
    milliseconds) and persists `last` after each stamp it uses, in the same transaction as the
    thing the stamp is on.
    """

    def __init__(
        self, node: str, last: Timestamp | None = None, max_drift_ms: int = MAX_DRIFT_MS
    ) -> None:
        if not isinstance(node, str) or not 0 < len(node) <= MAX_NODE_LENGTH:
            raise LocalProtocolError(f"node must be 1 to {MAX_NODE_LENGTH} characters: {node!r}")
        if last is not None and last.node != node:
            raise LocalProtocolError(f"last stamp is of node {last.node!r}, not {node!r}")
        if not isinstance(max_drift_ms, int) or isinstance(max_drift_ms, bool) or max_drift_ms < 0:
            raise LocalProtocolError(f"max_drift_ms must be an int >= 0, got {max_drift_ms!r}")
        self._node = node
        self._last = last
        self._max_drift_ms = max_drift_ms

    @property
    def node(self) -> str:
        return self._node

    @property
    def last(self) -> Timestamp | None:
        """The latest stamp issued (or the persisted one the clock was built with), if any."""
        return self._last

    @property
    def max_drift_ms(self) -> int:
        return self._max_drift_ms

    def tick(self, now_ms: int) -> Timestamp:
        """A stamp for a local event (an op we author, a message we send): larger than `last`.

        Raises `CounterOverflow` (clock unchanged) rather than wrap the counter.
        """
        _check_now(now_ms)
        last = self._last
        if last is None or now_ms > last.wall_ms:
            wall_ms, counter = now_ms, 0
        else:
            wall_ms, counter = last.wall_ms, last.counter + 1
        return self._issue(wall_ms, counter)

    def receive(self, remote: Timestamp, now_ms: int) -> Timestamp:
        """Merge a stamp seen from elsewhere: the result is larger than both `last` and `remote`.

        Raises `ClockDrift` if `remote.wall_ms > now_ms + max_drift_ms`, and `CounterOverflow`
        rather than wrap the counter; in both cases the clock is unchanged.
        """
        _check_now(now_ms)
        if remote.wall_ms > now_ms + self._max_drift_ms:
            raise ClockDrift(
                f"remote stamp is {remote.wall_ms - now_ms} ms ahead of our clock, "
                f"more than the {self._max_drift_ms} ms allowed"
            )
        last = self._last
        last_wall_ms = -1 if last is None else last.wall_ms
        wall_ms = max(last_wall_ms, remote.wall_ms, now_ms)
        if last is not None and wall_ms == last.wall_ms == remote.wall_ms:
            counter = max(last.counter, remote.counter) + 1
        elif last is not None and wall_ms == last.wall_ms:
            counter = last.counter + 1
        elif wall_ms == remote.wall_ms:
            counter = remote.counter + 1
        else:
            counter = 0
        return self._issue(wall_ms, counter)

    def _issue(self, wall_ms: int, counter: int) -> Timestamp:
        if counter > MAX_COUNTER:
            raise CounterOverflow(
                f"more than {MAX_COUNTER + 1} stamps at wall time {wall_ms} ms; "
                "wait for the wall clock to pass it"
            )
        stamp = Timestamp(wall_ms=wall_ms, counter=counter, node=self._node)
        self._last = stamp
        return stamp

    def __repr__(self) -> str:
        return f"HybridClock(node={self._node!r}, last={self._last!r})"


def _check_int(name: str, value: object, maximum: int) -> None:
    # bool is a subclass of int, but True is not a time.
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInput(f"{name} is a {type(value).__name__}, expected int")
    if not 0 <= value <= maximum:
        raise MalformedInput(f"{name} is {value}, expected 0 <= {name} <= {maximum}")


def _check_now(now_ms: object) -> None:
    # `now_ms` comes from our own wall clock, so a bad one is our bug, not malformed input.
    if not isinstance(now_ms, int) or isinstance(now_ms, bool) or not 0 <= now_ms <= MAX_WALL_MS:
        raise LocalProtocolError(f"now_ms must be an int in [0, 2**48 - 1], got {now_ms!r}")
