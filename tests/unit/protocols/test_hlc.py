"""The hybrid logical clock: stamps only go up, receive dominates both inputs, bad input refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.canonical import canonical_decode, canonical_encode
from protocols.errors import LocalProtocolError, MalformedInput, RemoteProtocolError
from protocols.hlc import (
    MAX_COUNTER,
    MAX_DRIFT_MS,
    MAX_WALL_MS,
    ClockDrift,
    CounterOverflow,
    HybridClock,
    Timestamp,
)

NODE = "12D3KooWA"
OTHER_NODE = "12D3KooWB"
NOW_MS = 1_700_000_000_000

wall_times = st.integers(min_value=0, max_value=MAX_WALL_MS)
# Small times collide often, which exercises the counter; large ones exercise the 48-bit range.
now_times = st.one_of(st.integers(min_value=0, max_value=30), wall_times)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)
nodes = st.text(min_size=1, max_size=128)
timestamps = st.builds(Timestamp, wall_ms=wall_times, counter=counters, node=nodes)


def stamp(wall_ms: int, counter: int = 0, node: str = NODE) -> Timestamp:
    return Timestamp(wall_ms=wall_ms, counter=counter, node=node)


# --- Timestamp ------------------------------------------------------------------------------------


def test_stamps_order_by_wall_time_then_counter_then_node() -> None:
    assert stamp(1, 9, "z") < stamp(2, 0, "a")
    assert stamp(2, 0, "z") < stamp(2, 1, "a")
    assert stamp(2, 1, "a") < stamp(2, 1, "b")
    assert stamp(2, 1, "a") == stamp(2, 1, "a")


@given(timestamps, timestamps)
def test_packed_orders_like_the_stamp_without_its_node(a: Timestamp, b: Timestamp) -> None:
    assert (a.packed() < b.packed()) == ((a.wall_ms, a.counter) < (b.wall_ms, b.counter))
    assert ((a.packed(), a.node) < (b.packed(), b.node)) == (a < b)


@given(timestamps)
def test_packed_round_trip(value: Timestamp) -> None:
    packed = value.packed()
    assert 0 <= packed < 2**64
    assert packed == value.wall_ms << 16 | value.counter
    assert Timestamp.from_packed(packed, value.node) == value


@given(timestamps)
def test_wire_round_trip(value: Timestamp) -> None:
    wire = value.to_wire()
    assert wire == [value.wall_ms, value.counter, value.node]
    assert Timestamp.from_wire(wire) == value
    assert Timestamp.from_wire(canonical_decode(canonical_encode(wire))) == value


def test_extreme_values_round_trip() -> None:
    top = stamp(MAX_WALL_MS, MAX_COUNTER)
    assert top.packed() == 2**64 - 1
    assert Timestamp.from_packed(2**64 - 1, NODE) == top
    assert Timestamp.from_packed(0, NODE) == stamp(0, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "expected a list"),
        ({"wall_ms": 1}, "expected a list"),
        ((1, 2, NODE), "expected a list"),
        ([], "has 0 items"),
        ([1, 2], "has 2 items"),
        ([1, 2, NODE, 4], "has 4 items"),
        ([-1, 0, NODE], "wall_ms is -1"),
        ([2**48, 0, NODE], "wall_ms is 281474976710656"),
        ([1, -1, NODE], "counter is -1"),
        ([1, 2**16, NODE], "counter is 65536"),
        ([True, 0, NODE], "wall_ms is a bool"),
        ([1, False, NODE], "counter is a bool"),
        (["1", 0, NODE], "wall_ms is a str"),
        ([1.0, 0, NODE], "wall_ms is a float"),
        ([1, None, NODE], "counter is a NoneType"),
        ([1, 0, None], "node is a NoneType"),
        ([1, 0, b"node"], "node is a bytes"),
        ([1, 0, ""], "node is 0 characters"),
        ([1, 0, "x" * 129], "node is 129 characters"),
    ],
)
def test_bad_wire_values_are_refused(value: object, message: str) -> None:
    with pytest.raises(MalformedInput, match=message):
        Timestamp.from_wire(value)


@pytest.mark.parametrize("packed", [-1, 2**64, True, "1", None, 1.5])
def test_bad_packed_values_are_refused(packed: object) -> None:
    with pytest.raises(MalformedInput, match="packed"):
        Timestamp.from_packed(packed, NODE)  # type: ignore[arg-type]


def test_from_packed_checks_the_node() -> None:
    with pytest.raises(MalformedInput, match="node"):
        Timestamp.from_packed(1, "")


# --- tick -----------------------------------------------------------------------------------------


def test_first_tick_is_the_wall_clock() -> None:
    clock = HybridClock(NODE)
    assert clock.last is None
    first = clock.tick(NOW_MS)
    assert first == stamp(NOW_MS, 0)
    assert clock.last == first


def test_ticks_in_one_millisecond_count_up_and_reset_when_time_moves() -> None:
    clock = HybridClock(NODE)
    assert [clock.tick(NOW_MS) for _ in range(3)] == [stamp(NOW_MS, n) for n in range(3)]
    assert clock.tick(NOW_MS + 1) == stamp(NOW_MS + 1, 0)


def test_tick_when_the_wall_clock_went_back_keeps_the_wall_time() -> None:
    clock = HybridClock(NODE)
    clock.tick(NOW_MS)
    assert clock.tick(NOW_MS - 60_000) == stamp(NOW_MS, 1)


@given(st.lists(now_times, min_size=1, max_size=60))
def test_ticks_strictly_increase_whatever_the_wall_clock_does(times: list[int]) -> None:
    clock = HybridClock(NODE)
    previous: Timestamp | None = None
    for now_ms in times:
        issued = clock.tick(now_ms)
        assert issued.node == NODE
        assert issued.wall_ms >= now_ms
        if previous is not None:
            assert issued > previous
            assert issued.packed() > previous.packed()
            # The wall part never runs ahead of the largest wall clock reading seen.
            assert issued.wall_ms == max(previous.wall_ms, now_ms)
        assert clock.last == issued
        previous = issued


@given(timestamps, now_times)
def test_restart_from_the_persisted_stamp_issues_a_larger_one(
    persisted: Timestamp, now_ms: int
) -> None:
    if persisted.counter == MAX_COUNTER:
        persisted = Timestamp(wall_ms=persisted.wall_ms, counter=0, node=persisted.node)
    clock = HybridClock(persisted.node, last=persisted)
    assert clock.last == persisted
    assert clock.tick(min(now_ms, persisted.wall_ms)) > persisted
    restarted = HybridClock(
        persisted.node, last=Timestamp.from_packed(persisted.packed(), persisted.node)
    )
    assert restarted.tick(now_ms).packed() > persisted.packed()


def test_restart_with_the_wall_clock_set_back_an_hour() -> None:
    persisted = stamp(NOW_MS, 7)
    clock = HybridClock(NODE, last=persisted)
    assert clock.tick(NOW_MS - 3_600_000) == stamp(NOW_MS, 8)


# --- counter overflow -----------------------------------------------------------------------------


def full_clock(wall_ms: int = NOW_MS) -> HybridClock:
    return HybridClock(NODE, last=stamp(wall_ms, MAX_COUNTER))


@pytest.mark.parametrize("now_ms", [NOW_MS, NOW_MS - 1, 0])
def test_tick_overflow_raises_and_leaves_the_clock_unchanged(now_ms: int) -> None:
    clock = full_clock()
    with pytest.raises(CounterOverflow, match="65536 stamps") as info:
        clock.tick(now_ms)
    assert info.value.code == "hlc_overflow"
    assert isinstance(info.value, LocalProtocolError)
    assert clock.last == stamp(NOW_MS, MAX_COUNTER)


def test_overflow_clears_when_the_wall_clock_moves_on() -> None:
    clock = full_clock()
    with pytest.raises(CounterOverflow):
        clock.tick(NOW_MS)
    assert clock.tick(NOW_MS + 1) == stamp(NOW_MS + 1, 0)


@pytest.mark.parametrize(
    "remote",
    [
        stamp(NOW_MS, 0, OTHER_NODE),  # our counter is full
        stamp(NOW_MS - 5, 3, OTHER_NODE),  # remote behind: our counter still has to go up
        stamp(NOW_MS + 10, MAX_COUNTER, OTHER_NODE),  # remote ahead with a full counter
    ],
)
def test_receive_overflow_raises_and_leaves_the_clock_unchanged(remote: Timestamp) -> None:
    clock = full_clock() if remote.wall_ms <= NOW_MS else HybridClock(NODE, last=stamp(NOW_MS))
    before = clock.last
    with pytest.raises(CounterOverflow):
        clock.receive(remote, NOW_MS)
    assert clock.last == before


def test_receive_of_a_full_remote_counter_with_a_later_wall_clock_is_fine() -> None:
    clock = HybridClock(NODE)
    assert clock.receive(stamp(NOW_MS, MAX_COUNTER, OTHER_NODE), NOW_MS + 1) == stamp(NOW_MS + 1)


# --- receive --------------------------------------------------------------------------------------


def test_receive_cases_of_the_algorithm() -> None:
    # Our wall clock is ahead of both: it wins, counter 0.
    clock = HybridClock(NODE, last=stamp(100, 5))
    assert clock.receive(stamp(90, 9, OTHER_NODE), 200) == stamp(200, 0)
    # The remote stamp is ahead of both: its wall time, its counter + 1.
    assert clock.receive(stamp(300, 4, OTHER_NODE), 250) == stamp(300, 5)
    # Our last stamp is ahead of both: our counter + 1.
    assert clock.receive(stamp(10, 40, OTHER_NODE), 20) == stamp(300, 6)
    # Last and remote at the same wall time, ahead of the clock: the larger counter + 1.
    assert clock.receive(stamp(300, 9, OTHER_NODE), 250) == stamp(300, 10)
    assert clock.receive(stamp(300, 2, OTHER_NODE), 250) == stamp(300, 11)


def test_first_receive_without_a_last_stamp() -> None:
    assert HybridClock(NODE).receive(stamp(NOW_MS, 4, OTHER_NODE), NOW_MS) == stamp(NOW_MS, 5)
    assert HybridClock(NODE).receive(stamp(NOW_MS, 4, OTHER_NODE), NOW_MS + 1) == stamp(NOW_MS + 1)
    assert HybridClock(NODE).receive(stamp(NOW_MS + 9, 4, OTHER_NODE), NOW_MS) == stamp(
        NOW_MS + 9, 5
    )


def test_receive_dominates_a_remote_stamp_with_a_larger_node_id() -> None:
    # The result beats the remote stamp on (wall_ms, counter), whatever the node ids.
    clock = HybridClock("a")
    remote = stamp(NOW_MS, 3, "zzz")
    assert clock.receive(remote, NOW_MS) > remote


# One event: a local tick at `now`, or a receive at `now` of a stamp `ahead` ms ahead of it.
events = st.one_of(
    st.tuples(st.just("tick"), now_times),
    st.tuples(
        st.just("receive"),
        now_times,
        st.integers(min_value=-40, max_value=MAX_DRIFT_MS),
        counters,
        st.sampled_from([OTHER_NODE, NODE, "a", "~"]),
    ),
)


@given(st.lists(events, min_size=1, max_size=60))
def test_every_stamp_dominates_the_last_and_every_received_stamp(
    history: list[tuple[str, int] | tuple[str, int, int, int, str]],
) -> None:
    clock = HybridClock(NODE)
    for event in history:
        before = clock.last
        now_ms = event[1]
        if event[0] == "tick":
            try:
                issued = clock.tick(now_ms)
            except CounterOverflow:
                # A received counter of 0xFFFF at the same wall time leaves no room: refused.
                assert clock.last == before
                continue
        else:
            _, _, ahead, counter, node = event  # type: ignore[misc]
            remote = stamp(min(MAX_WALL_MS, max(0, now_ms + ahead)), counter, node)
            try:
                issued = clock.receive(remote, now_ms)
            except CounterOverflow:
                assert clock.last == before
                continue
            assert issued > remote
            assert issued.packed() > remote.packed()
            assert issued.wall_ms == max(
                remote.wall_ms, now_ms, -1 if before is None else before.wall_ms
            )
        assert issued.wall_ms >= now_ms
        if before is not None:
            assert issued > before
            assert issued.packed() > before.packed()
        assert clock.last == issued


# --- drift ----------------------------------------------------------------------------------------


@given(
    st.one_of(st.none(), timestamps.filter(lambda t: t.wall_ms < MAX_WALL_MS // 2)),
    st.integers(min_value=0, max_value=MAX_WALL_MS // 2),
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=0, max_value=MAX_DRIFT_MS),
)
def test_a_remote_stamp_too_far_ahead_is_refused_and_not_adopted(
    last: Timestamp | None, now_ms: int, beyond: int, max_drift_ms: int
) -> None:
    node = NODE if last is None else last.node
    clock = HybridClock(node, last=last, max_drift_ms=max_drift_ms)
    remote = stamp(now_ms + max_drift_ms + beyond, 0, OTHER_NODE)
    with pytest.raises(ClockDrift, match="ahead of our clock"):
        clock.receive(remote, now_ms)
    assert clock.last == last


def test_drift_limit_is_inclusive_and_defaults_to_five_minutes() -> None:
    clock = HybridClock(NODE)
    assert clock.max_drift_ms == MAX_DRIFT_MS == 300_000
    at_limit = stamp(NOW_MS + MAX_DRIFT_MS, 0, OTHER_NODE)
    assert clock.receive(at_limit, NOW_MS) == stamp(NOW_MS + MAX_DRIFT_MS, 1)
    with pytest.raises(ClockDrift) as info:
        HybridClock(NODE).receive(stamp(NOW_MS + MAX_DRIFT_MS + 1, 0, OTHER_NODE), NOW_MS)
    assert info.value.code == "clock_drift"
    assert isinstance(info.value, RemoteProtocolError)


def test_drift_is_checked_before_the_counter() -> None:
    clock = full_clock()
    with pytest.raises(ClockDrift):
        clock.receive(stamp(NOW_MS + MAX_DRIFT_MS + 1, MAX_COUNTER, OTHER_NODE), NOW_MS)
    assert clock.last == stamp(NOW_MS, MAX_COUNTER)


# --- construction and arguments -------------------------------------------------------------------


def test_clock_refuses_a_last_stamp_of_another_node() -> None:
    with pytest.raises(LocalProtocolError, match="of node"):
        HybridClock(NODE, last=stamp(1, 0, OTHER_NODE))


@pytest.mark.parametrize("node", ["", "x" * 129, None, b"node"])
def test_clock_refuses_a_bad_node(node: object) -> None:
    with pytest.raises(LocalProtocolError, match="node"):
        HybridClock(node)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_drift_ms", [-1, True, 1.5, None])
def test_clock_refuses_a_bad_max_drift(max_drift_ms: object) -> None:
    with pytest.raises(LocalProtocolError, match="max_drift_ms"):
        HybridClock(NODE, max_drift_ms=max_drift_ms)  # type: ignore[arg-type]


@pytest.mark.parametrize("now_ms", [-1, 2**48, True, 1.0, None, "1"])
def test_a_bad_wall_clock_reading_is_a_local_error(now_ms: object) -> None:
    clock = HybridClock(NODE, last=stamp(5))
    with pytest.raises(LocalProtocolError, match="now_ms"):
        clock.tick(now_ms)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="now_ms"):
        clock.receive(stamp(1, 0, OTHER_NODE), now_ms)  # type: ignore[arg-type]
    assert clock.last == stamp(5)


def test_clock_repr_names_node_and_last() -> None:
    assert repr(HybridClock(NODE, last=stamp(5))) == (
        f"HybridClock(node={NODE!r}, last=Timestamp(wall_ms=5, counter=0, node={NODE!r}))"
    )
