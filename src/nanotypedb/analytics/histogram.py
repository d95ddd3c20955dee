"""Latency bins: which bin a call's duration falls in, and percentiles estimated back from bin counts.

Bins double in width, from 50 µs to 13 s, so a percentile is known within its bin (a factor of
two) whatever the time range it is aggregated over; adding two histograms is adding their counts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping

# Upper bounds in seconds, 0.05 ms · 2^k: bin i holds durations in (BOUNDS[i-1], BOUNDS[i]], and
# bin len(BOUNDS) the slower ones (up to the largest seen).
BOUNDS: tuple[float, ...] = tuple(0.00005 * 2**k for k in range(19))


def bin_of(seconds: float) -> int:
    """The bin of one duration (C-speed bisect: this runs on every call)."""
    return bisect_left(BOUNDS, seconds)


def quantile(bins: Mapping[int, int], q: float, largest: float) -> float:
    """The `q` quantile (0 < q ≤ 1) of the durations counted in `bins`, in seconds: linear within its
    bin (as Prometheus does), never above `largest`, the slowest duration actually seen."""
    total = sum(bins.values())
    if total == 0:
        return 0.0
    rank, seen = q * total, 0
    for i in sorted(bins):
        count = bins[i]
        if count and seen + count >= rank:
            lower = BOUNDS[i - 1] if i > 0 else 0.0
            upper = BOUNDS[i] if i < len(BOUNDS) else max(largest, lower)
            return min(lower + (upper - lower) * (rank - seen) / count, largest)
        seen += count
    return largest
