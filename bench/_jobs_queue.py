"""PLACEHOLDER: no-op jobs per second through the durable queue (target >= 1,000/s).

The queue's API has not landed yet; fill in `noop_jobs_per_second` when it does: enqueue
N no-op jobs from mutations, run the in-process workers, and time the last completion.
"""

from __future__ import annotations

from pathlib import Path

from _jobs_report import Line, not_measured

MEASUREMENT = "no-op jobs"
CASE = "enqueue in mutations, in-process workers"


def noop_jobs_per_second(workdir: Path) -> float | None:
    """Jobs completed per second, or None while the queue is not there to measure."""
    print("no-op jobs per second: not measured yet (the queue's API has not landed)")
    return None


def measure(workdir: Path) -> list[Line]:
    rate = noop_jobs_per_second(workdir)
    return [not_measured(MEASUREMENT, CASE) if rate is None else Line(MEASUREMENT, CASE, per_s=rate)]
