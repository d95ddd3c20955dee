"""Token buckets keyed by (caller, function): a steady rate with a burst allowance."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` calls per second on average, up to `burst` at once."""

    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse "100/s", "600/m" or "100/s burst 200"; raise ValueError saying what is expected."""
        head, _, burst = text.partition("burst")
        count, _, unit = head.strip().partition("/")
        seconds = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip() or "s")
        try:
            rate = float(count) / seconds if seconds else 0.0
            size = int(burst) if burst.strip() else max(1, int(float(count)))
        except ValueError:
            rate, size = 0.0, 0
        if rate <= 0 or size < 1:
            raise ValueError(f"{text!r} is not a rate: write e.g. '100/s', '600/m' or '100/s burst 200'.")
        return cls(rate, size)


class RateLimiter:
    """A bucket per key, refilled lazily; stale buckets are dropped so memory stays bounded."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def acquire(self, key: Hashable, rate: Rate) -> float:
        """Take one token; return 0 when allowed, else the seconds to wait."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / rate.per_second

    def _store(self, key: Hashable, tokens: float, now: float) -> None:
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # A full table of buckets means many idle callers: forget them all (each
            # restarts with a full burst, which errs on the side of letting calls through).
            self._buckets.clear()
        self._buckets[key] = (tokens, now)
