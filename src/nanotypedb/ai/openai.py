"""OpenAICompatible: any `/v1/embeddings` endpoint of the OpenAI shape (OpenAI, Ollama, vLLM, LM Studio, llama.cpp).

Every failure becomes an `UpstreamError` (502) whose details say which provider, the HTTP status when there was
one, and why; a 429 also carries the provider's `Retry-After` as `retry_after` (seconds). The API key goes only
into the `Authorization` header: no message, detail or log line contains it.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np

from ..errors import UpstreamError
from .embedder import Vectors, normalise

MAX_BATCH = 256  # inputs per request: OpenAI accepts 2,048, but smaller bodies fail and retry more cheaply


class OpenAICompatible:
    """POST {base_url}/v1/embeddings {"model", "input": [...]} → {"data": [{"embedding", "index"}]}."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dims: int | None = None,
        timeout: float = 30.0,
        *,
        name: str = "openai",
    ) -> None:
        base = base_url.rstrip("/")
        self.url = base + "/embeddings" if base.endswith("/v1") else base + "/v1/embeddings"
        self.name = name
        self.model = model
        self.dims = dims or 0  # 0: learned from the first answer, then every answer must match it
        self.timeout = timeout
        self._key = api_key or None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks and logs
        return f"OpenAICompatible({self.url!r}, model={self.model!r}, dims={self.dims})"

    async def embed(self, texts: list[str]) -> Vectors:
        chunks = [texts[i : i + MAX_BATCH] for i in range(0, len(texts), MAX_BATCH)]
        parts = [await self._request(chunk) for chunk in chunks]
        return np.concatenate(parts) if parts else np.zeros((0, self.dims), dtype=np.float32)

    async def aclose(self) -> None:
        """Close the HTTP connections (the embedder opens new ones if used again)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _request(self, texts: list[str]) -> Vectors:
        try:
            response = await self._http().post(self.url, json={"model": self.model, "input": texts})
        except httpx.TimeoutException:
            raise self._error(f"no answer within {self.timeout:g} s (timeout)") from None
        except httpx.HTTPError as exc:
            raise self._error(f"could not reach {self.url}: {type(exc).__name__}") from None
        if response.status_code == 429:
            raise self._rate_limited(response)
        if not response.is_success:
            raise self._error(f"HTTP {response.status_code}: {self._excerpt(response)}", status=response.status_code)
        return self._vectors(response, len(texts))

    def _http(self) -> httpx.AsyncClient:
        # One client (and connection pool) per event loop: a pool cannot move between loops.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            self._client = httpx.AsyncClient(headers=headers, timeout=self.timeout, trust_env=False)
            self._loop = loop
        return self._client

    def _vectors(self, response: httpx.Response, count: int) -> Vectors:
        try:
            items = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            rows = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._error(f"malformed answer, expected {{'data': [{{'embedding', 'index'}}]}} ({exc!r})") from None
        if len(rows) != count:
            raise self._error(f"{len(rows)} embeddings for {count} texts")
        widths = {len(row) for row in rows}
        if len(widths) > 1 or (self.dims and widths != {self.dims}):
            found = " and ".join(str(w) for w in sorted(widths))
            raise self._error(f"embeddings of {found} dimensions, expected {self.dims or 'one width'}")
        self.dims = self.dims or widths.pop()
        return normalise(np.array(rows, dtype=np.float32).reshape(count, self.dims))

    def _rate_limited(self, response: httpx.Response) -> UpstreamError:
        retry_after = _retry_after(response.headers)
        extra = {} if retry_after is None else {"retry_after": retry_after}
        wait = "" if retry_after is None else f", retry after {retry_after:g} s"
        return self._error(f"rate limited by the provider (HTTP 429{wait})", status=429, **extra)

    def _excerpt(self, response: httpx.Response) -> str:
        text = " ".join(response.text[:200].split()) or response.reason_phrase
        return text.replace(self._key, "***") if self._key else text

    def _error(self, reason: str, *, status: int | None = None, **extra: Any) -> UpstreamError:
        details: dict[str, Any] = {"provider": self.name, "reason": reason, **extra}
        if status is not None:
            details["status"] = status
        message = f"The embedding provider {self.name!r} (model {self.model!r}) failed: {reason}."
        return UpstreamError(message, details=details)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds, given either as seconds or as an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
