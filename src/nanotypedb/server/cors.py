"""CORS: which other origins' web pages may call the HTTP API (`--cors-origins`), through Starlette's CORSMiddleware."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from ..errors import ConfigError

# Callers send bearer tokens, never cookies: no credentials mode, and no cookie a page could ride on.
ALLOW_METHODS = ("GET", "POST")
ALLOW_HEADERS = ("authorization", "content-type")
EXPOSE_HEADERS = ("retry-after", "x-request-id")
MAX_AGE_SECONDS = 600


def parse_origins(value: str) -> list[str]:
    """`http://localhost:5173,https://app.example.com` or `*`; empty: none. Anything else is a ConfigError."""
    origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
            raise ConfigError(
                f"--cors-origins: {origin!r} is not an origin: write scheme://host[:port] "
                "(e.g. http://localhost:5173), several separated by commas, or *."
            )
    if "*" in origins and len(origins) > 1:
        raise ConfigError("--cors-origins: * already allows every origin; give either * or a list of origins.")
    return origins


def with_cors(app: ASGIApp, value: str) -> ASGIApp:
    """`app` answering CORS preflights and marking its responses readable by the allowed origins."""
    origins = parse_origins(value)
    if not origins:
        return app  # same origin only: browsers refuse other pages' reads, as without a CORS header
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=MAX_AGE_SECONDS,
    )
