"""Token buckets: a steady rate, a burst, and the wait reported when empty."""

from __future__ import annotations

import pytest

from nanotypedb.lib.ratelimit import Rate, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "per_second", "burst"),
    [("100/s", 100.0, 100), ("600/m", 10.0, 600), ("10/s burst 3", 10.0, 3), ("7200/h burst 5", 2.0, 5)],
)
def test_rates_parse(text: str, per_second: float, burst: int) -> None:
    assert Rate.parse(text) == Rate(per_second, burst)


@pytest.mark.parametrize("text", ["", "fast", "10/y", "0/s", "-5/s", "5/s burst none", "5/s burst 0"])
def test_bad_rates_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="100/s"):
        Rate.parse(text)


def test_a_burst_then_the_steady_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(2.0, 3)
    assert [limiter.acquire("k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k", rate) == pytest.approx(0.5)
    clock.now = 0.5
    assert limiter.acquire("k", rate) == 0.0
    assert limiter.acquire("other", rate) == 0.0  # buckets are per key


def test_memory_stays_bounded() -> None:
    limiter = RateLimiter(Clock(), max_keys=10)
    for i in range(100):
        limiter.acquire(i, Rate(1.0, 1))
    assert len(limiter._buckets) <= 10
