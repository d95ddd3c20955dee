"""How long to wait before each reconnection attempt: exponential, capped, with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """`first` doubles at each attempt up to `cap`; each delay is drawn between half and all of that, so that
    clients dropped together by a restart do not all come back in the same millisecond."""

    first: timedelta = timedelta(milliseconds=250)
    cap: timedelta = timedelta(seconds=5)

    def delay(self, attempt: int) -> timedelta:
        ceiling = min(self.cap, self.first * (1 << min(attempt, 32)))
        return ceiling * random.uniform(0.5, 1.0)
