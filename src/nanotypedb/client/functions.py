"""The server's function list (`GET /api/functions`), which carries each mutation's optimistic declaration."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import NanoTypeDBError, from_dict
from .errors import ConnectionLost

TIMEOUT_SECONDS = 10


def functions_url(ws_url: str) -> str:
    """`ws://host:port/ws` → `http://host:port/api/functions` (and `wss` → `https`)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    base = parts.path.removesuffix("/").removesuffix("/ws")
    return urlunsplit((scheme, parts.netloc, f"{base}/api/functions", "", ""))


def fetch(url: str, token: str | None = None) -> dict[str, dict[str, Any]]:
    """Each function's description by name, as the caller `token` may see them (blocking: run it in a thread)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_SECONDS) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            raise _http_error(url, exc) from None
    except OSError as exc:  # URLError included
        raise ConnectionLost(f"Could not read the function list at {url}: {exc}.") from exc
    return {f["name"]: f for f in body["functions"]}


def _http_error(url: str, exc: urllib.error.HTTPError) -> NanoTypeDBError:
    try:
        return from_dict(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError):
        return ConnectionLost(f"The function list at {url} answered HTTP {exc.code}.")


async def load(ws_url: str, token: str | None) -> dict[str, dict[str, Any]]:
    return await asyncio.to_thread(fetch, functions_url(ws_url), token)


def optimistic_spec(functions: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The function's optimistic declaration as an object, or None when it has none."""
    spec = functions.get(name, {}).get("optimistic")
    return spec if isinstance(spec, dict) and spec.get("kind") in ("insert", "update", "delete", "custom") else None
