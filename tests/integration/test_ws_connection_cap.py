"""--ws-max-connections: past the cap a connection is told why and closed with 1013 (try again
later); a freed place is taken again; the Python client raises the server's error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from nanotypedb.client import AsyncClient
from nanotypedb.demo.tasks import app
from nanotypedb.errors import ServiceUnavailable
from nanotypedb.testing import TestServer, serve, wait_for


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path / "data", ws_max_connections=2) as server:
        yield server


def ping(ws: ClientConnection) -> dict[str, object]:
    ws.send(json.dumps({"type": "ping", "id": "p"}))
    answer: dict[str, object] = json.loads(ws.recv(timeout=5))
    return answer


def refused(server: TestServer) -> float:
    families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text)
    return next(s.value for f in families for s in f.samples if s.name == "nanotypedb_websocket_refused_total")


def test_past_the_cap_a_connection_is_told_why_and_closed_until_a_place_frees(capped: TestServer) -> None:
    with connect(capped.ws_url, open_timeout=5) as first:
        with connect(capped.ws_url, open_timeout=5) as second:
            assert ping(first)["type"] == ping(second)["type"] == "pong"
            told_why_and_closed(capped)
            assert refused(capped) == 1
            assert ping(first)["type"] == "pong"  # the open ones are untouched
        wait_for(lambda: capped.service is not None and capped.service.connections == 1)
        with connect(capped.ws_url, open_timeout=5) as again:
            assert ping(again)["type"] == "pong"


def told_why_and_closed(server: TestServer) -> None:
    with connect(server.ws_url, open_timeout=5) as third:
        said = json.loads(third.recv(timeout=5))
        assert said["type"] == "error" and said["id"] is None
        assert said["error"]["code"] == "ServiceUnavailable"
        assert "2 WebSocket connections" in said["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            third.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


def test_the_python_client_raises_the_servers_reason(capped: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(capped.ws_url, capped.token("alice")), AsyncClient(capped.ws_url, capped.token("bob")):
            with pytest.raises(ServiceUnavailable, match="try again later"):
                async with AsyncClient(capped.ws_url, capped.token("carol")):
                    pass

    asyncio.run(main())
