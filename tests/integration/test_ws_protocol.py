"""The WebSocket protocol over /ws: ping, rpc, auth, and how bad frames and busy connections are answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from nanotypedb import App, Ctx, Table, owner_policy
from nanotypedb.testing import TestServer, serve

app = App("wire")


@app.table
class Item(Table, table="items", policy=owner_policy("owner_id")):
    name: str
    owner_id: str | None = None


@app.query()
def echo(ctx: Ctx, n: int) -> int:
    return n


@app.query(public=True)
def whoami(ctx: Ctx) -> dict[str, Any]:
    return {"kind": ctx.user.kind.value, "id": ctx.user.id}


@app.mutation(name="addItem")
def add_item(ctx: Ctx, name: str) -> dict[str, Any]:
    return ctx.db.insert("items", {"name": name})


@app.action()
async def slow(ctx: Ctx, n: int = 0) -> int:
    await asyncio.sleep(0.3)
    return n


@app.query()
def unserializable(ctx: Ctx) -> dict[str, Any]:
    return {"value": object()}


@app.query()
def broken(ctx: Ctx) -> None:
    raise ValueError("secret detail")


@app.query(rate="2/m burst 2")
def scarce(ctx: Ctx) -> int:
    return 1


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    """Small frames and two calls in flight per connection."""
    data = tmp_path_factory.mktemp("tight") / "data"
    with serve(app, data, ws_max_frame_bytes=1000, ws_max_in_flight=2) as server:
        yield server


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with serve(app, tmp_path_factory.mktemp("roomy") / "data") as server:
        yield server


@contextmanager
def session(server: TestServer, user: str | None = "alice") -> Iterator[ClientConnection]:
    headers = {"authorization": f"Bearer {server.token(user)}"} if user else {}
    with connect(server.ws_url, additional_headers=headers, open_timeout=5) as ws:
        yield ws


def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return message


def exchange(ws: ClientConnection, frame: str | dict[str, Any]) -> dict[str, Any]:
    ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return receive(ws)


def rpc(msg_id: Any, function: str, /, **args: Any) -> dict[str, Any]:
    return {"type": "rpc", "id": msg_id, "name": function, "args": args}


def assert_error(message: dict[str, Any], code: str, msg_id: Any = None) -> dict[str, Any]:
    assert message["type"] == "error"
    assert message["id"] == msg_id
    error: dict[str, Any] = message["error"]
    assert error["code"] == code
    assert error["message"] and error["request_id"]
    assert "Traceback" not in json.dumps(message) and "secret detail" not in json.dumps(message)
    return error


def assert_alive(ws: ClientConnection) -> None:
    assert exchange(ws, {"type": "ping", "id": "alive"}) == {"type": "pong", "id": "alive"}


def test_ping_pong(tight: TestServer) -> None:
    with session(tight) as ws:
        assert exchange(ws, {"type": "ping", "id": 7}) == {"type": "pong", "id": 7}


def test_rpc_result_carries_version(tight: TestServer) -> None:
    with session(tight) as ws:
        first = exchange(ws, rpc(1, "addItem", name="a"))
        second = exchange(ws, rpc(2, "addItem", name="b"))
        assert first["type"] == "result" and first["id"] == 1 and first["data"]["owner_id"] == "alice"
        assert second["version"] == first["version"] + 1
        read = exchange(ws, rpc(3, "echo", n=5))
        assert read == {"type": "result", "id": 3, "data": 5, "version": read["version"]}
        assert read["version"] >= second["version"]


@pytest.mark.parametrize(
    ("frame", "msg_id"),
    [
        ("not json", None),
        ('{"type": "ping",', None),
        ("[1, 2]", None),
        ('"ping"', None),
        ('{"id": 1}', 1),
        ('{"type": "teleport", "id": 2}', 2),
        ('{"type": 5, "id": 3}', 3),
        ('{"type": "rpc", "name": "echo", "args": {"n": 1}}', None),
        ('{"type": "rpc", "id": 4, "name": "echo", "args": [1]}', 4),
        ('{"type": "rpc", "id": 5, "args": {}}', 5),
        ('{"type": "auth", "id": 6, "token": 42}', 6),
    ],
)
def test_malformed_frame_is_answered(tight: TestServer, frame: str, msg_id: Any) -> None:
    with session(tight) as ws:
        assert_error(exchange(ws, frame), "MalformedMessage", msg_id)
        assert_alive(ws)


def test_binary_frame_is_read_as_json(tight: TestServer) -> None:
    with session(tight) as ws:
        ws.send(b'{"type": "ping", "id": "bin"}')
        assert receive(ws) == {"type": "pong", "id": "bin"}


def test_oversized_frame(tight: TestServer) -> None:
    with session(tight) as ws:
        big = json.dumps(rpc(1, "echo", n=1, pad="x" * 2000))
        assert 1000 < len(big) < 4000
        assert_error(exchange(ws, big), "PayloadTooLarge")
        assert_alive(ws)
        assert exchange(ws, rpc(2, "echo", n=2))["data"] == 2


def test_oversized_multibyte_frame(tight: TestServer) -> None:
    """The limit is in bytes: 400 four-byte characters are 1600 bytes."""
    with session(tight) as ws:
        frame = json.dumps({"type": "ping", "id": "😀" * 400}, ensure_ascii=False)
        assert len(frame) < 1000 < len(frame.encode())
        assert_error(exchange(ws, frame), "PayloadTooLarge")
        assert_alive(ws)


def test_in_flight_limit(tight: TestServer) -> None:
    with session(tight) as ws:
        for i in range(6):
            ws.send(json.dumps(rpc(i, "slow", n=i)))
        replies = {m["id"]: m for m in (receive(ws) for _ in range(6))}
        assert set(replies) == set(range(6))
        done = [i for i, m in replies.items() if m["type"] == "result"]
        limited = [i for i, m in replies.items() if m["type"] == "error"]
        assert 1 <= len(done) <= 2 and len(limited) >= 4
        assert all(replies[i]["data"] == i for i in done)
        for i in limited:
            assert assert_error(replies[i], "RateLimited", i)["details"]["retry_after"] > 0
        # The slots are free again once the replies are in.
        ws.send(json.dumps(rpc("a", "slow")))
        ws.send(json.dumps(rpc("b", "slow")))
        assert {m["type"] for m in (receive(ws), receive(ws))} == {"result"}


def test_function_errors_over_ws(tight: TestServer) -> None:
    with session(tight) as ws:
        assert_error(exchange(ws, rpc(1, "nope")), "FunctionNotFound", 1)
        error = assert_error(exchange(ws, rpc(2, "echo", n=False)), "ValidationFailed", 2)
        assert [(d["field"], d["type"]) for d in error["details"]] == [("n", "int_type")]
        assert_error(exchange(ws, rpc(3, "echo", n=1, extra=1)), "ValidationFailed", 3)
        assert_error(exchange(ws, rpc(4, "broken")), "InternalError", 4)
        assert_alive(ws)


def test_unserializable_result_gets_an_error_reply(tight: TestServer) -> None:
    with session(tight) as ws:
        assert_error(exchange(ws, rpc(9, "unserializable")), "InternalError", 9)
        assert_alive(ws)


def test_rate_limit_over_ws(tight: TestServer) -> None:
    with session(tight, "ws-rate") as ws:
        assert [exchange(ws, rpc(i, "scarce"))["type"] for i in range(2)] == ["result", "result"]
        error = assert_error(exchange(ws, rpc(2, "scarce")), "RateLimited", 2)
        assert error["details"]["retry_after"] > 0
    with session(tight, "ws-rate-other") as ws:
        assert exchange(ws, rpc(1, "scarce"))["type"] == "result"


def test_anonymous_rpc_needs_a_signed_in_caller(tight: TestServer) -> None:
    with session(tight, None) as ws:
        assert_error(exchange(ws, rpc(1, "echo", n=1)), "Unauthenticated", 1)
        assert exchange(ws, rpc(2, "whoami"))["data"] == {"kind": "anonymous", "id": None}


def test_auth_message_changes_the_caller(tight: TestServer) -> None:
    with session(tight, None) as ws:
        signed_in = exchange(ws, {"type": "auth", "id": 1, "token": tight.token("bob")})
        assert signed_in["type"] == "result" and signed_in["data"] == {"kind": "user", "id": "bob"}
        assert exchange(ws, rpc(2, "whoami"))["data"] == {"kind": "user", "id": "bob"}
        assert exchange(ws, {"type": "auth", "id": 3, "token": None})["data"]["kind"] == "anonymous"
        assert exchange(ws, rpc(4, "whoami"))["data"] == {"kind": "anonymous", "id": None}


def test_a_call_runs_as_the_caller_of_its_own_moment(tight: TestServer) -> None:
    """An rpc sent just before an `auth` runs as the caller who sent it, not the next one."""
    with session(tight, "alice") as ws:
        for i in range(20):
            ws.send(json.dumps(rpc(f"w{i}", "whoami")))
            ws.send(json.dumps({"type": "auth", "id": f"a{i}", "token": tight.token("bob" if i % 2 == 0 else "alice")}))
            replies = {}
            while len(replies) < 2:
                msg = receive(ws)
                replies[msg["id"]] = msg
            assert replies[f"w{i}"]["data"]["id"] == ("alice" if i % 2 == 0 else "bob")


def test_failed_auth_keeps_the_connection(tight: TestServer) -> None:
    with session(tight, "carol") as ws:
        assert_error(exchange(ws, {"type": "auth", "id": 1, "token": "garbage"}), "InvalidToken", 1)
        assert_alive(ws)
        assert exchange(ws, rpc(2, "whoami"))["data"]["id"] != "carol"


def test_bad_handshake_credential_is_explained_then_closed(tight: TestServer) -> None:
    with connect(tight.ws_url, additional_headers={"authorization": "Bearer garbage"}) as ws:
        assert_error(receive(ws), "InvalidToken")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_server_survives_abuse(tight: TestServer) -> None:
    with session(tight) as ws:
        for frame in ("{", "[]", '{"type": "rpc"}', "x" * 3000):
            assert exchange(ws, frame)["type"] == "error"
    with session(tight) as ws:
        assert_alive(ws)
        assert exchange(ws, rpc(1, "echo", n=1))["data"] == 1


def test_pipelined_rpcs_get_matching_ids(roomy: TestServer) -> None:
    ids: list[int | str] = [*range(40), *(f"s{i}" for i in range(10))]
    with session(roomy) as ws:
        for n, msg_id in enumerate(ids):
            ws.send(json.dumps(rpc(msg_id, "echo", n=n)))
        replies = [receive(ws) for _ in ids]
    assert sorted((str(r["id"]), r["data"]) for r in replies) == sorted((str(i), n) for n, i in enumerate(ids))
    assert all(r["type"] == "result" for r in replies)
