"""MisbehavingProvider: a real OpenAI-compatible embeddings server on 127.0.0.1 that fails on demand, then recovers.

It serves `POST /v1/embeddings` ({"model", "input": [...]} → {"data": [{"embedding", "index"}], "model"}) from a
thread of the test process, with deterministic vectors (`MisbehavingProvider.vector(text)`), and records every
request it gets. Tell it how to answer the next requests, in order, then it goes back to answering properly:

    from _misbehaving import MisbehavingProvider

    with MisbehavingProvider(dims=8) as provider:          # provider.url = "http://127.0.0.1:PORT"
        provider.script("timeout", "500", "429")           # the next three requests fail so, the fourth succeeds
        provider.always("500")                             # every request fails until told otherwise
        provider.always("ok")                              # recovered
        provider.count                                     # requests received so far
        provider.texts                                     # every text received, in order
        provider.requests[-1].authorization                # the Authorization header of the last request

Modes (`MODES`): "ok"; "timeout" (holds the request for `hang` seconds, 5 by default, past a client's timeout,
then answers properly); "500" (HTTP 500 with a JSON error); "429" (HTTP 429 with `Retry-After: retry_after`,
2 by default); "malformed" (HTTP 200 whose body is not JSON); "wrong_dims" (vectors of dims + 1); "wrong_count"
(one vector fewer than texts). With `api_key=`, a request without `Authorization: Bearer <api_key>` gets 401.
With `keep_alive=False`, every answer says `Connection: close` and the server closes the connection after it, so a
client keeps no connection open between requests (by default connections are kept alive, as real providers do).
`MisbehavingProvider.refused_url()` is a URL of 127.0.0.1 where nothing listens (connection refused).

For retry and dead-letter tests: point the embedder's base URL at `provider.url`, script the failures, and count
requests. Nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MODES = ("ok", "timeout", "500", "429", "malformed", "wrong_dims", "wrong_count")


@dataclass(frozen=True)
class Request:
    """One request as the server received it, and the mode it was answered in."""

    path: str
    model: str | None
    texts: list[str]
    authorization: str | None
    mode: str


class MisbehavingProvider:
    """The server; a context manager that starts it on a free port of 127.0.0.1 and stops it."""

    def __init__(
        self,
        dims: int = 8,
        *,
        api_key: str | None = None,
        hang: float = 5.0,
        retry_after: int = 2,
        keep_alive: bool = True,
    ) -> None:
        self.dims = dims
        self.keep_alive = keep_alive
        self.api_key = api_key
        self.hang = hang
        self.retry_after = retry_after
        self.requests: list[Request] = []
        self._script: deque[str] = deque()
        self._default = "ok"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        # A short poll interval: stop() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def texts(self) -> list[str]:
        return [text for request in self.requests for text in request.texts]

    def script(self, *modes: str) -> None:
        """Answer the next requests in these modes, one each, then as `always` says (by default, properly)."""
        self._check(modes)
        with self._lock:
            self._script.extend(modes)

    def always(self, mode: str) -> None:
        """Answer every request in this mode once the script is used up."""
        self._check((mode,))
        with self._lock:
            self._default = mode

    @classmethod
    def vector(cls, text: str, dims: int = 8) -> list[float]:
        """The deterministic vector served for a text (not normalised: the client normalises it)."""
        digest = hashlib.sha256(text.encode()).digest() * (dims // 8 + 1)
        return [(b - 127.5) / 127.5 for b in struct.unpack(f"{dims}B", digest[:dims])]

    @staticmethod
    def refused_url() -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"http://127.0.0.1:{port}"  # closed again: a connection there is refused

    def start(self) -> MisbehavingProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases requests held in "timeout"
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MisbehavingProvider:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _next_mode(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _answer(self, body: dict[str, Any], mode: str) -> tuple[int, dict[str, str], bytes]:
        texts = [str(t) for t in body.get("input", [])]
        if mode == "timeout":
            self._stopping.wait(self.hang)
        if mode == "500":
            return 500, {}, b'{"error": {"message": "the model crashed", "type": "server_error"}}'
        if mode == "429":
            return 429, {"Retry-After": str(self.retry_after)}, b'{"error": {"message": "slow down"}}'
        if mode == "malformed":
            return 200, {}, b'{"data": [{"embedding": [0.1, '
        dims = self.dims + 1 if mode == "wrong_dims" else self.dims
        rows = [{"object": "embedding", "index": i, "embedding": self.vector(t, dims)} for i, t in enumerate(texts)]
        if mode == "wrong_count":
            rows = rows[:-1]
        return 200, {}, json.dumps({"object": "list", "data": rows, "model": body.get("model")}).encode()

    def _check(self, modes: tuple[str, ...]) -> None:
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            raise ValueError(f"unknown modes {unknown}: expected some of {MODES}")


def _handler(provider: MisbehavingProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real providers (and so httpx reuses connections)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw or b"{}")
            auth = self.headers.get("Authorization")
            if self.path != "/v1/embeddings":
                return self._send(404, {}, b'{"error": {"message": "not found"}}')
            if provider.api_key is not None and auth != f"Bearer {provider.api_key}":
                return self._send(401, {}, b'{"error": {"message": "invalid api key"}}')
            mode = provider._next_mode()
            texts = [str(t) for t in body.get("input", [])]
            provider.requests.append(Request(self.path, body.get("model"), texts, auth, mode))
            self._send(*provider._answer(body, mode))

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                if not provider.keep_alive:
                    self.send_header("Connection", "close")  # also makes the handler close the connection
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (its timeout): nobody to answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests assert on provider.requests instead

    return Handler
