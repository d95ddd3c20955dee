"""Row-level security over the WebSocket: the same isolation as over HTTP, and identity per connection.

A connection signs in with an `auth` message or an `Authorization: Bearer` header at the
handshake; a bad token is refused without closing the connection; a later `auth` switches who
the connection calls as.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from nanotypedb.auth.tokens import mint_token
from nanotypedb.testing import TestServer

TIMEOUT = 10


class Socket:
    """One /ws connection: send a message with a fresh id and wait for the reply with that id."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.next_id = 1

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        msg_id = message.setdefault("id", self._new_id())
        self.conn.send(json.dumps(message))
        while True:
            reply: dict[str, Any] = json.loads(self.conn.recv(timeout=TIMEOUT))
            if reply.get("id") == msg_id:
                return reply

    def auth(self, token: str | None) -> dict[str, Any]:
        return self.request({"type": "auth", "id": 0, "token": token})

    def rpc(self, name: str, **args: Any) -> dict[str, Any]:
        return self.request({"type": "rpc", "name": name, "args": args})

    def call(self, name: str, **args: Any) -> Any:
        """The data of a successful call (fails the test on an error reply)."""
        reply = self.rpc(name, **args)
        assert reply["type"] == "result", reply
        return reply["data"]

    def error_code(self, name: str, **args: Any) -> str:
        reply = self.rpc(name, **args)
        assert reply["type"] == "error", reply
        return str(reply["error"]["code"])

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id


@contextmanager
def socket(server: TestServer, token: str | None = None, *, header: str | None = None) -> Iterator[Socket]:
    """A connection that signs in with an `auth` message (`token`) or at the handshake (`header`)."""
    headers = {"Authorization": f"Bearer {header}"} if header else None
    with connect(server.ws_url, additional_headers=headers, open_timeout=TIMEOUT) as conn:
        ws = Socket(conn)
        if token is not None:
            assert ws.auth(token)["type"] == "result"
        yield ws


@dataclass
class Seeded:
    server: TestServer
    ids: dict[str, list[int]]

    def token(self, user: str) -> str:
        return self.server.token(user)


@pytest.fixture
def seeded(server: TestServer) -> Seeded:
    """alice and bob, each with three tasks created over the WebSocket, bob's newest."""
    ids: dict[str, list[int]] = {"alice": [], "bob": []}
    with socket(server, server.token("alice")) as alice, socket(server, server.token("bob")) as bob:
        for i in range(3):
            for name, ws in (("alice", alice), ("bob", bob)):
                ids[name].append(ws.call("createTask", title=f"{name} {i}")["id"])
    return Seeded(server, ids)


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def _newest_first(ids: list[int]) -> list[int]:
    return sorted(ids, reverse=True)


def _walk(ws: Socket, limit: int, cursor: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _ in range(50):
        page = ws.call("listTasksPage", limit=limit, cursor=cursor)
        rows += page["items"]
        if page["is_done"]:
            return rows
        cursor = page["cursor"]
    raise AssertionError("the pages never end")


@pytest.mark.parametrize("how", ["auth message", "handshake header"])
@pytest.mark.parametrize("user", ["alice", "bob"])
def test_each_user_reads_only_their_own_tasks(seeded: Seeded, user: str, how: str) -> None:
    token = seeded.token(user)
    opened = socket(seeded.server, token) if how == "auth message" else socket(seeded.server, header=token)
    with opened as ws:
        mine = _newest_first(seeded.ids[user])

        assert _ids(ws.call("listTasks")) == mine
        assert _ids(ws.call("listTasks", limit=1)) == mine[:1]
        assert _ids(_walk(ws, limit=2)) == mine
        assert ws.call("countTasks") == 3


def test_another_users_cursor_yields_only_your_rows(seeded: Seeded) -> None:
    with socket(seeded.server, seeded.token("bob")) as bob:
        bobs_cursor = bob.call("listTasksPage", limit=1)["cursor"]
    with socket(seeded.server, seeded.token("alice")) as alice:
        assert _ids(_walk(alice, limit=1, cursor=bobs_cursor)) == _newest_first(seeded.ids["alice"])


@pytest.mark.parametrize(
    ("name", "args"),
    [("getTask", {}), ("updateTask", {"title": "mine now"}), ("completeTask", {}), ("deleteTask", {})],
)
def test_another_users_task_is_not_found_and_unchanged(seeded: Seeded, name: str, args: dict[str, Any]) -> None:
    task_id = seeded.ids["bob"][0]
    with socket(seeded.server, seeded.token("bob")) as bob, socket(seeded.server, seeded.token("alice")) as alice:
        before = bob.call("getTask", id=task_id)

        assert alice.error_code(name, id=task_id, **args) == "RowNotFound"
        assert alice.error_code(name, id=10**9, **args) == "RowNotFound"

        assert bob.call("getTask", id=task_id) == before


def test_an_admin_key_sees_every_row(seeded: Seeded) -> None:
    with socket(seeded.server, header=seeded.server.admin_key) as admin:
        assert admin.call("countTasks") == 6
        assert admin.call("getTask", id=seeded.ids["bob"][0])["owner_id"] == "bob"


def test_an_unauthenticated_connection_reaches_nothing(seeded: Seeded) -> None:
    with socket(seeded.server) as ws:
        assert ws.error_code("listTasks") == "Unauthenticated"
        assert ws.error_code("getTask", id=seeded.ids["alice"][0]) == "Unauthenticated"
        assert ws.error_code("createTask", title="anonymous") == "Unauthenticated"


def test_the_auth_reply_names_the_caller(server: TestServer) -> None:
    with socket(server) as ws:
        reply = ws.auth(server.token("alice"))

    assert reply["type"] == "result"
    assert (reply["data"]["kind"], reply["data"]["id"]) == ("user", "alice")


def test_a_bad_token_is_refused_and_the_connection_stays_usable(server: TestServer) -> None:
    with socket(server) as ws:
        refused = ws.auth("not-a-jwt")

        assert (refused["type"], refused["id"], refused["error"]["code"]) == ("error", 0, "InvalidToken")
        assert ws.request({"type": "ping", "id": 7})["type"] == "pong"
        assert ws.error_code("listTasks") == "Unauthenticated"  # the bad token granted nothing
        assert ws.auth(server.token("alice"))["type"] == "result"
        assert ws.call("listTasks") == []


def test_a_token_from_another_server_is_refused(server: TestServer) -> None:
    forged = mint_token("another-servers-secret-" + "z" * 32, "alice")
    with socket(server) as ws:
        assert ws.auth(forged)["error"]["code"] == "InvalidToken"
        assert ws.error_code("listTasks") == "Unauthenticated"


def test_re_auth_switches_identity(seeded: Seeded) -> None:
    with socket(seeded.server, seeded.token("alice")) as ws:
        assert _ids(ws.call("listTasks")) == _newest_first(seeded.ids["alice"])

        assert ws.auth(seeded.token("bob"))["data"]["id"] == "bob"
        assert _ids(ws.call("listTasks")) == _newest_first(seeded.ids["bob"])
        assert ws.error_code("getTask", id=seeded.ids["alice"][0]) == "RowNotFound"

        ws.auth(None)  # signing out leaves an anonymous connection
        assert ws.error_code("listTasks") == "Unauthenticated"


def test_a_bad_handshake_header_is_refused_with_the_reason(server: TestServer) -> None:
    with socket(server, header="not-a-jwt") as ws:
        first = json.loads(ws.conn.recv(timeout=TIMEOUT))
        with pytest.raises(ConnectionClosed) as closed:
            ws.conn.recv(timeout=TIMEOUT)

    assert (first["type"], first["error"]["code"]) == ("error", "InvalidToken")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
