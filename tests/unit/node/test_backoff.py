"""Bootstrap redial schedule: doubling from the minimum, capped, jittered within [d/2, d]."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.bootstrap import backoff_delay


def test_schedule_doubles_then_caps() -> None:
    top = [backoff_delay(n, 0.5, 30.0, lambda: 1.0) for n in range(10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    bottom = [backoff_delay(n, 0.5, 30.0, lambda: 0.0) for n in range(3)]
    assert bottom == [0.25, 0.5, 1.0]


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    rand=st.floats(min_value=0.0, max_value=1.0),
    min_s=st.floats(min_value=0.01, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
)
def test_delay_is_within_half_and_whole_of_the_capped_schedule(
    attempt: int, rand: float, min_s: float, extra: float
) -> None:
    max_s = min_s + extra
    delay = backoff_delay(attempt, min_s, max_s, lambda: rand)
    ceiling = min(max_s, min_s * 2 ** min(attempt, 62))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= max_s
