"""JobSpec: a job handler an app declares with `@app.job`, with its retries, timeout and backoff."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..storage.schema import check_name


@dataclass(frozen=True, slots=True)
class JobSpec:
    """`retries` after the first attempt (the seed's 3 by default), each `timeout` seconds at most,
    waiting `backoff` * 2^(attempt-1) seconds (half of it random, capped at `max_backoff`) between them."""

    name: str
    handler: Callable[..., Any]
    retries: int = 3
    timeout: float = 60.0
    backoff: float = 2.0
    max_backoff: float = 300.0

    def __post_init__(self) -> None:
        check_name(self.name, "job name")
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0 or self.max_backoff < self.backoff:
            raise ConfigError(f"Job {self.name!r}: retries must be >= 0, timeout > 0 and 0 <= backoff <= max_backoff.")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def delay(self, attempt: int) -> float:
        """Seconds before the attempt after `attempt` (1-based): exponential, with jitter so that
        jobs that failed together do not all come back together."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)
