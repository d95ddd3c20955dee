"""The WebSocket protocol: ping, malformed frames, limits; the connection and server stay up through each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from nanotypedb import App, Ctx
from nanotypedb.testing import TestServer, serve

app = App("frames")


@app.query(public=True)
def hello(ctx: Ctx, name: str = "world") -> str:
    return f"hello {name}"


@app.action(public=True)
async def slow(ctx: Ctx) -> str:
    await asyncio.sleep(0.3)
    return "done"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path / "data", ws_max_in_flight=2, ws_max_frame_bytes=2000) as server:
        yield server


def _exchange(ws: ClientConnection, frame: str) -> dict[str, Any]:
    ws.send(frame)
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return reply


def _still_alive(ws: ClientConnection) -> None:
    assert _exchange(ws, '{"type": "ping", "id": 99}') == {"type": "pong", "id": 99}


def test_ping_and_rpc(running: TestServer) -> None:
    with connect(running.ws_url) as ws:
        _still_alive(ws)
        reply = _exchange(ws, json.dumps({"type": "rpc", "id": 1, "name": "hello", "args": {"name": "ws"}}))
        assert reply["type"] == "result" and reply["id"] == 1 and reply["data"] == "hello ws"
        assert isinstance(reply["version"], int)


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"id": 1}',
        '{"type": "teleport", "id": 1}',
        '{"type": "rpc", "name": "hello", "args": {}}',
        '{"type": "rpc", "id": 1, "name": "hello", "args": [1]}',
        '{"type": "rpc", "id": 1, "name": 5, "args": {}}',
        '{"type": "auth", "id": 1, "token": 5}',
    ],
)
def test_a_malformed_frame_gets_an_error_and_the_connection_stays_up(running: TestServer, frame: str) -> None:
    with connect(running.ws_url) as ws:
        reply = _exchange(ws, frame)
        assert reply["type"] == "error"
        assert reply["error"]["code"] == "MalformedMessage"
        assert reply["error"]["request_id"]
        _still_alive(ws)


def test_a_frame_over_the_limit_is_refused_and_the_connection_stays_up(running: TestServer) -> None:
    with connect(running.ws_url) as ws:
        reply = _exchange(ws, json.dumps({"type": "rpc", "id": 1, "name": "hello", "args": {"name": "x" * 3000}}))
        assert reply["error"]["code"] == "PayloadTooLarge"
        _still_alive(ws)


def test_calls_beyond_the_in_flight_bound_are_refused(running: TestServer) -> None:
    with connect(running.ws_url) as ws:
        for i in range(4):
            ws.send(json.dumps({"type": "rpc", "id": i, "name": "slow", "args": {}}))
        replies = [json.loads(ws.recv(timeout=5)) for _ in range(4)]
        codes = sorted(r.get("error", {}).get("code", "ok") for r in replies)
        assert codes == ["RateLimited", "RateLimited", "ok", "ok"]
        _still_alive(ws)


def test_pipelined_calls_each_get_their_own_id(running: TestServer) -> None:
    with connect(running.ws_url) as ws:
        for i in range(2):
            ws.send(json.dumps({"type": "rpc", "id": f"call-{i}", "name": "hello", "args": {"name": str(i)}}))
        replies = {r["id"]: r["data"] for r in (json.loads(ws.recv(timeout=5)) for _ in range(2))}
        assert replies == {"call-0": "hello 0", "call-1": "hello 1"}


def test_the_server_serves_new_connections_after_abuse(running: TestServer) -> None:
    with connect(running.ws_url) as ws:
        for frame in ["{", "[]", "null", '"x"', "{}"]:
            ws.send(frame)
            assert json.loads(ws.recv(timeout=5))["type"] == "error"
    with connect(running.ws_url) as ws:
        _still_alive(ws)
