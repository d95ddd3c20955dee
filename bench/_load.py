"""Closed-loop load: N clients, each awaiting one operation at a time, for a bounded window.

Each client loops until the window closes; an operation counts (for ops/s and for latency)
when it completes inside the measured window, after a short warm-up that is discarded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from _clients import OpError

C = TypeVar("C")
Op = Callable[[C, int], Awaitable[object]]
CpuProbe = Callable[[], float]  # cumulative CPU seconds of one process


@dataclass
class Measurement:
    """What one bounded run produced: completed operations, their latencies and failures."""

    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, by process

    @property
    def ops(self) -> int:
        return len(self.latencies_s)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float | None:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[rank] * 1000

    def note_error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:400]


@dataclass
class _Window(Generic[C]):
    op: Op[C]
    start: float
    end: float
    result: Measurement
    counter: itertools.count[int]

    async def drive(self, client: C) -> None:
        """Run `op` back to back until the window closes; a dropped connection ends the client."""
        while (t0 := time.perf_counter()) < self.end:
            try:
                await self.op(client, next(self.counter))
            except OpError as exc:
                self.result.note_error(exc)
                continue
            except Exception as exc:  # a dropped connection (OSError, ConnectionClosed, EOF)
                self.result.note_error(exc)
                return
            t1 = time.perf_counter()
            if self.start <= t1 <= self.end:
                self.result.latencies_s.append(t1 - t0)


async def measure(
    clients: Sequence[C],
    op: Op[C],
    warmup: float,
    duration: float,
    probes: Mapping[str, CpuProbe] | None = None,
) -> Measurement:
    """Drive every client concurrently: `warmup` seconds discarded, then `duration` measured.

    `probes` are sampled across the window, to show whether the server or the load
    generator was the one running out of CPU.
    """
    start = time.perf_counter() + warmup
    window = _Window(op, start, start + duration, Measurement(duration), itertools.count())
    sampling = _sample_cpu(probes or {}, start, start + duration, window.result)
    await asyncio.gather(sampling, *(window.drive(client) for client in clients))
    return window.result


async def _sample_cpu(probes: Mapping[str, CpuProbe], start: float, end: float, into: Measurement) -> None:
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    t0, before = time.perf_counter(), {name: probe() for name, probe in probes.items()}
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    elapsed = time.perf_counter() - t0
    for name, probe in probes.items():
        into.cpu[name] = round((probe() - before[name]) / elapsed, 3)
