"""Identifiers: request ids and secrets."""

from __future__ import annotations

import itertools
import secrets

# A random prefix per process and a counter: unique across restarts and processes, and far
# cheaper per request than asking the OS for fresh random bytes each time.
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def request_id() -> str:
    """A short id that names one request in logs and error replies."""
    return f"{_PREFIX}{next(_COUNTER):08x}"


def secret_token(nbytes: int = 32) -> str:
    """A URL-safe random secret of nbytes of entropy."""
    return secrets.token_urlsafe(nbytes)
