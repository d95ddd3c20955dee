"""Random identifiers: request ids and secrets."""

from __future__ import annotations

import secrets


def request_id() -> str:
    """A short random id that names one request in logs and error replies."""
    return secrets.token_hex(8)


def secret_token(nbytes: int = 32) -> str:
    """A URL-safe random secret of nbytes of entropy."""
    return secrets.token_urlsafe(nbytes)
