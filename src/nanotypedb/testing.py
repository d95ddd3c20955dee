"""Public test helpers: run an app on a real server on 127.0.0.1 and call it over HTTP and WebSocket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from .app import App
from .auth.tokens import mint_token
from .errors import from_dict
from .server.cors import parse_origins
from .server.routes import WS_PROTOCOL, build_asgi
from .service import Service
from .settings import Config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestServer:
    """A Service behind uvicorn on a free port of 127.0.0.1, in a thread of this process.

    Settings are keyword arguments: `TestServer(app, data_dir, env="staging")` serves the environment
    `staging`, which must be registered first (`nanotypedb env create`, or `create_environment`).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, data_dir: Path, **settings: Any) -> None:
        self.port = free_port()
        # Tests call fast and embed only when they ask to (embedding_provider="hashing" or "local").
        values = {"rate_limit": "100000/s burst 100000", "embedding_provider": "none", **settings}
        self.config = Config.from_mapping({"data_dir": data_dir, "port": self.port, **values})
        self.app = app
        self.service: Service | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: list[HttpClient] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> TestServer:
        parse_origins(self.config.cors_origins)
        self.service = Service(self.app, self.config)
        try:
            self.service.open()
        except BaseException:
            self.service.close()  # a refused start must not leave the key store open
            raise
        config = uvicorn.Config(
            build_asgi(self.service),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws=WS_PROTOCOL,
            ws_max_size=self.config.ws_max_frame_bytes * 4,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        if self.service is not None:
            self.service.close()

    @property
    def admin_key(self) -> str:
        assert self.service is not None
        if self.service.first_admin_key is None:
            env = self.service.environment.name
            _, self.service.first_admin_key = self.service.keys.create("test admin", environment=env)
        return self.service.first_admin_key

    def token(self, user: str, **options: Any) -> str:
        """A user token signed with this server's secret, for its environment (unless `environment=` says otherwise)."""
        assert self.service is not None
        options.setdefault("environment", self.service.environment.name)
        return mint_token(self.service.secret, user, **options)

    def client(self, credential: str | None = None) -> HttpClient:
        """An HTTP client calling as `credential` (a token or API key); closed when the server stops."""
        client = HttpClient(self.url, credential)
        self._clients.append(client)
        return client


class HttpClient:
    """A small synchronous HTTP client for tests: `call` returns data or raises the typed error."""

    def __init__(self, url: str, credential: str | None = None) -> None:
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        # Plain http to 127.0.0.1: skipping the TLS context saves ~50 ms per client.
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30, verify=False)
        self.last_version = 0

    def post(self, name: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.http.post(f"/api/rpc/{name}", json=body if body is not None else {}, **kwargs)

    def call(self, name: str, /, **args: Any) -> Any:
        response = self.post(name, args)
        payload = response.json()
        if "error" in payload:
            raise from_dict(payload["error"])
        self.last_version = payload["version"]
        return payload["data"]

    def close(self) -> None:
        self.http.close()


@contextmanager
def serve(app: App, data_dir: Path, **settings: Any) -> Iterator[TestServer]:
    """`with serve(app, tmp_path) as server:` — a running server, stopped cleanly afterwards."""
    server = TestServer(app, data_dir, **settings).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(check: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> Any:
    """Call `check` until it returns something true, and return that; fail the test after `timeout` seconds.

    For what a server does in the background (a job, an embedding): poll, rather than sleep a guess.
    """
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {check}"
        time.sleep(step)
    return value
