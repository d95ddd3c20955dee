"""Live queries over /ws, speaking the raw protocol: first results, precise re-runs, consistency, limits."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from nanotypedb import App, Ctx, Table, owner_policy
from nanotypedb.live.hub import Hub
from nanotypedb.testing import TestServer, serve


class Wire:
    """A raw protocol connection that keeps what it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    def send(self, **msg: Any) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        self.seen.append(msg)
        return msg

    def next(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        while True:
            msg = self.recv(timeout)
            if msg["type"] == kind:
                return msg

    def subscribe(self, sub_id: Any, name: str, **args: Any) -> dict[str, Any]:
        """Subscribe and return the first result's entry."""
        self.send(type="subscribe", id=sub_id, name=name, args=args)
        return self.entry(sub_id)

    def entry(self, sub_id: Any) -> dict[str, Any]:
        while True:
            msg = self.next("transition")
            for entry in msg["updates"]:
                if entry["id"] == sub_id:
                    return {**entry, "version": msg["version"]}

    def until(self, sub_id: Any, titles: list[str]) -> None:
        """Read transitions until subscription `sub_id` holds rows with these titles."""
        while [t["title"] for t in self.entry(sub_id)["data"]] != titles:
            pass

    def rpc(self, name: str, **args: Any) -> dict[str, Any]:
        self.send(type="rpc", id=f"rpc-{name}-{len(self.seen)}", name=name, args=args)
        return self.next("result")

    def quiet(self) -> list[dict[str, Any]]:
        """Everything that arrives before a ping's pong: proves nothing else was pending."""
        self.send(type="ping", id="sync")
        got = []
        while (msg := self.recv())["type"] != "pong":
            got.append(msg)
        return got


@contextmanager
def wire(server: TestServer, credential: str | None, **options: Any) -> Iterator[Wire]:
    headers = {"authorization": f"Bearer {credential}"} if credential else {}
    with connect(server.ws_url, additional_headers=headers, open_timeout=5, max_size=None, **options) as ws:
        yield Wire(ws)


def hub(server: TestServer) -> Hub:
    assert server.service is not None
    return server.service.hub


def settle(server: TestServer, w: Wire) -> list[dict[str, Any]]:
    """Wait until the hub has handled every commit so far and sent what it had to, then return
    what reached `w` meanwhile (the pong after it proves nothing else is on its way)."""
    assert server.service is not None
    live, engine = server.service.hub, server.service.engine
    deadline = time.monotonic() + 5
    while live.processed < engine.version or live._dirty or live._fresh or live._deliverer is not None:
        assert time.monotonic() < deadline, "the hub did not catch up"
        time.sleep(0.002)
    return w.quiet()


def test_first_result_then_an_update_with_the_writers_version(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with wire(server, server.token("alice")) as w:
        first = w.subscribe(1, "listTasks", limit=10)
        assert first["data"] == []
        assert first["reads"] == [
            {"table": "tasks", "kind": "rows", "filters": {}, "order": [["id", "desc"]], "limit": 10}
        ]
        created = alice.post("createTask", {"title": "from http"}).json()
        update = w.entry(1)
        assert [t["title"] for t in update["data"]] == ["from http"]
        assert update["version"] == created["version"]


def test_two_connections_of_one_user_see_each_others_writes(server: TestServer) -> None:
    token = server.token("alice")
    with wire(server, token) as a, wire(server, token) as b:
        a.subscribe("a", "listTasks")
        b.subscribe("b", "listTasks")
        a.rpc("createTask", title="by a")
        assert [t["title"] for t in b.entry("b")["data"]] == ["by a"]
        b.rpc("createTask", title="by b")
        a.until("a", ["by b", "by a"])


def test_rls_holds_for_live_queries_in_every_update(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with wire(server, server.token("bob")) as bob:
        bob.subscribe(1, "listTasks")
        bob.subscribe(2, "listTasks", owner_id="alice")  # asking for alice's rows narrows, never widens
        bob.subscribe(3, "countTasks")
        for i in range(5):
            alice.call("createTask", title=f"secret {i}")
        bob.rpc("createTask", title="mine")
        settle(server, bob)
    for msg in bob.seen:
        assert "secret" not in json.dumps(msg), msg
    last = {e["id"]: e for m in bob.seen if m["type"] == "transition" for e in m["updates"]}
    assert [t["title"] for t in last[1]["data"]] == ["mine"]
    assert last[2]["data"] == []
    assert last[3]["data"] == 1


def test_another_users_writes_rerun_nothing(server: TestServer) -> None:
    bob = server.client(server.token("bob"))
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "listTasks")
        w.subscribe(2, "countTasks")
        w.subscribe(3, "countTasks", status="completed")
        settle(server, w)
        before = hub(server).stats.reruns
        for i in range(10):
            bob.call("createTask", title=f"b{i}")
        created = bob.call("createTask", title="last")
        bob.call("updateTask", id=created["id"], title="edited")
        bob.call("deleteTask", id=created["id"])
        assert settle(server, w) == []
        assert hub(server).stats.reruns == before


def test_a_write_to_a_column_a_count_does_not_read_reruns_no_count(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="t")
    with wire(server, server.token("alice")) as w:
        w.subscribe("n", "countTasks", status="pending")
        settle(server, w)
        before = hub(server).stats.reruns
        alice.call("updateTask", id=task["id"], title="renamed")  # title and updated_at: not counted columns
        assert settle(server, w) == []
        assert hub(server).stats.reruns == before
        alice.call("completeTask", id=task["id"])  # status: the count changes
        assert w.entry("n")["data"] == 0
        assert hub(server).stats.reruns == before + 1


def test_a_rerun_with_the_same_result_is_not_resent(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    old = alice.call("createTask", title="old")
    alice.call("createTask", title="new")
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "listTasks", limit=1)  # only the newest row
        settle(server, w)
        before = hub(server).stats.reruns
        alice.call("updateTask", id=old["id"], title="old, edited")
        assert settle(server, w) == []
        assert hub(server).stats.reruns == before + 1  # re-run (it read alice's rows), not re-sent


def test_identical_subscriptions_share_one_run(server: TestServer) -> None:
    token = server.token("alice")
    with wire(server, token) as a, wire(server, token) as b, wire(server, server.token("bob")) as c:
        for w in (a, b):
            w.subscribe(1, "listTasks", limit=5)
            w.subscribe(2, "listTasks", **{"limit": 5})
        c.subscribe(1, "listTasks", limit=5)  # another caller: its own query
        assert len(hub(server).queries) == 2
        assert hub(server).stats.reruns == 2  # a subscriber joining a live query runs nothing
        before = hub(server).stats.reruns
        server.client(token).call("createTask", title="shared")
        for w in (a, b):
            assert {e["id"] for e in w.next("transition")["updates"]} == {1, 2}
        assert hub(server).stats.reruns == before + 1


def test_connections_due_the_same_transition_share_its_frame_and_each_gets_it_whole(server: TestServer) -> None:
    """Connections without compression get one frame built once; a compressed one, its own."""
    token = server.token("alice")
    plain = [wire(server, token, compression=None) for _ in range(3)]
    with plain[0] as a, plain[1] as b, plain[2] as c, wire(server, token) as deflated, wire(server, token) as other:
        assert deflated.ws.protocol.extensions and not a.ws.protocol.extensions
        for w in (a, b, c, deflated):
            w.subscribe(1, "listTasks", limit=5)
        other.subscribe("x", "listTasks", limit=5)  # same query, another id: another frame
        before = hub(server).stats.shared_frames
        for i in range(3):
            server.client(token).call("createTask", title=f"shared {i}")
            expected = [f"shared {j}" for j in range(i, -1, -1)]
            for w in (a, b, c, deflated):
                w.until(1, expected)
            other.until("x", expected)
        settle(server, a)
        # Each write: one of the three plain connections builds the frame, two reuse it.
        assert hub(server).stats.shared_frames - before == 6
        assert [m["version"] for m in a.seen if m["type"] == "transition"] == [
            m["version"] for m in deflated.seen if m["type"] == "transition"
        ]


def test_subscriptions_of_a_connection_advance_together(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with wire(server, server.token("alice")) as w:
        w.send(type="subscribe", id="list", name="listTasks", args={})
        w.send(type="subscribe", id="count", name="countTasks", args={})
        state: dict[str, Any] = {}
        while len(state) < 2:  # the two first results may come in one transition or two
            state.update({e["id"]: e["data"] for e in w.next("transition")["updates"]})
        for i in range(20):
            alice.call("createTask", title=f"t{i}")
        versions = []
        while state.get("count") != 20:
            msg = w.next("transition")
            versions.append(msg["version"])
            for entry in msg["updates"]:
                state[entry["id"]] = entry["data"]
            # After each transition the two results describe the same database.
            assert len(state["list"]) == state["count"]
        assert versions == sorted(versions)
        assert len(set(versions)) == len(versions)


def test_a_mutations_reply_comes_before_the_transition_that_holds_it(server: TestServer) -> None:
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "listTasks")
        for i in range(30):
            w.send(type="rpc", id=f"m{i}", name="createTask", args={"title": f"t{i}"})
        replies: dict[str, int] = {}
        highest = 0
        while len(replies) < 30 or highest < max(replies.values()):
            msg = w.recv()
            if msg["type"] == "result":
                assert msg["version"] > highest, "a transition already held this write"
                replies[msg["id"]] = msg["version"]
            elif msg["type"] == "transition":
                highest = msg["version"]
                titles = {t["title"] for t in msg["updates"][0]["data"]} if msg["updates"] else set()
                assert titles <= {f"t{i}" for i in range(30)}


def test_a_connection_is_held_back_only_until_its_own_reply_and_never_by_a_failed_write(server: TestServer) -> None:
    with wire(server, server.token("alice")) as writer, wire(server, server.token("alice")) as watcher:
        writer.subscribe(1, "listTasks")
        watcher.subscribe(1, "listTasks")
        start = len(writer.seen)
        writer.send(type="rpc", id="bad", name="createTask", args={})  # refused: no title
        writer.send(type="rpc", id="good", name="createTask", args={"title": "held"})
        writer.send(type="rpc", id="worse", name="createTask", args={"title": 7})
        order = [(m["type"], m.get("id")) for m in (writer.recv() for _ in range(4))]
        good = next(m for m in writer.seen[start:] if m.get("id") == "good")
        transition = next(m for m in writer.seen[start:] if m["type"] == "transition")
        # The reply first, then the transition that holds its row; the refusals hold nothing.
        assert order.index(("result", "good")) < order.index(("transition", None))
        assert transition["version"] >= good["version"]
        assert [t["title"] for t in transition["updates"][0]["data"]] == ["held"]
        assert {("error", "bad"), ("error", "worse")} <= set(order)
        # Another connection subscribed to the same query is not held by the writer's reply.
        assert [t["title"] for t in watcher.entry(1)["data"]] == ["held"]
        assert writer.quiet() == [] and watcher.quiet() == []
    assert not hub(server)._replying  # every request it waited on was settled


def test_a_write_that_changes_no_result_is_still_acknowledged(server: TestServer) -> None:
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "countTasks", status="completed")
        reply = w.rpc("createTask", title="pending one")
        ack = w.next("transition")
        assert ack["updates"] == []
        assert ack["version"] >= reply["version"]


def test_a_query_that_raises_sends_an_error_then_recovers(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with wire(server, server.token("alice")) as w:
        first = w.subscribe(1, "getTask", id=1)
        assert first["error"]["code"] == "RowNotFound"
        assert "request_id" not in first["error"]
        alice.call("createTask", title="now it exists")
        assert w.entry(1)["data"]["title"] == "now it exists"


def test_unsubscribe_stops_updates(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "listTasks")
        w.send(type="unsubscribe", id=1)
        w.send(type="unsubscribe", id="never")  # unknown: ignored
        settle(server, w)
        alice.call("createTask", title="unseen")
        assert settle(server, w) == []
        assert hub(server).queries == {}


def test_subscribing_again_after_unsubscribing_gets_the_current_result(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "countTasks")
        w.send(type="unsubscribe", id=1)
        alice.call("createTask", title="t")
        assert w.subscribe(1, "countTasks")["data"] == 1


def test_disconnect_frees_every_subscription(server: TestServer) -> None:
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "listTasks")
        w.subscribe(2, "countTasks")
    server.client(server.token("alice")).call("createTask", title="after")
    with wire(server, server.token("alice")) as w:
        settle(server, w)
    assert hub(server).queries == {}
    assert hub(server).index.empty


def test_ten_thousand_subscribe_cycles_leave_nothing_behind(server: TestServer) -> None:
    with wire(server, server.token("alice")) as w:
        for i in range(10_000):
            w.send(type="subscribe", id=i, name="countTasks", args={"status": "pending" if i % 2 else "completed"})
            w.send(type="unsubscribe", id=i)
        settle(server, w)
        live = hub(server)
        assert live.queries == {}
        assert live.index.empty
        assert live._fresh == {}
        assert live._dirty == set()
        assert w.subscribe("last", "countTasks")["data"] == 0


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ({"name": "nope", "args": {}}, "FunctionNotFound"),
        ({"name": "createTask", "args": {"title": "x"}}, "BadRequest"),
        ({"name": "listJobs", "args": {}}, "BadRequest"),  # reads the queue, whose bookkeeping no commit announces
        ({"name": "listTasks", "args": {"limit": "ten"}}, "ValidationFailed"),
        ({"name": "listTasks", "args": {"bogus": 1}}, "ValidationFailed"),
        ({"name": "listTasks", "args": []}, "MalformedMessage"),
        ({"name": 5, "args": {}}, "MalformedMessage"),
    ],
)
def test_a_refused_subscribe_gets_an_error_and_keeps_nothing(
    server: TestServer, msg: dict[str, Any], code: str
) -> None:
    with wire(server, server.token("alice")) as w:
        w.send(type="subscribe", id=7, **msg)
        reply = w.next("error")
        assert (reply["id"], reply["error"]["code"]) == (7, code)
        assert hub(server).queries == {}


@pytest.mark.parametrize("sub_id", [None, True, 1.5, {"a": 1}, [1]])
def test_a_subscription_id_must_be_a_string_or_an_integer(server: TestServer, sub_id: Any) -> None:
    with wire(server, server.token("alice")) as w:
        w.send(type="subscribe", id=sub_id, name="listTasks", args={})
        assert w.next("error")["error"]["code"] == "MalformedMessage"


def test_a_duplicate_subscription_id_is_refused(server: TestServer) -> None:
    with wire(server, server.token("alice")) as w:
        w.subscribe(1, "listTasks")
        w.send(type="subscribe", id=1, name="countTasks", args={})
        error = w.next("error")
        assert (error["id"], error["error"]["code"]) == (1, "MalformedMessage")
        assert len(hub(server).queries) == 1


def test_an_anonymous_caller_cannot_subscribe_to_a_private_query(server: TestServer) -> None:
    with wire(server, None) as w:
        w.send(type="subscribe", id=1, name="listTasks", args={})
        assert w.next("error")["error"]["code"] == "Unauthenticated"


# -- an app of its own for limits, public queries and auth changes -------------------

app = App("live")


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    owner_id: str | None = None


@app.query()
def notes(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("notes").order_by("id").all()


@app.query(public=True)
def whoami(ctx: Ctx) -> str | None:
    return ctx.user.id


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str) -> dict[str, Any]:
    return ctx.db.insert("notes", {"text": text})


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path, ws_max_subscriptions=2) as srv:
        yield srv


def test_subscriptions_per_connection_are_bounded(small: TestServer) -> None:
    with wire(small, small.token("alice")) as w:
        w.subscribe(1, "notes")
        w.subscribe(2, "whoami")
        w.send(type="subscribe", id=3, name="notes", args={})
        error = w.next("error")
        assert (error["id"], error["error"]["code"]) == (3, "RateLimited")
        w.send(type="unsubscribe", id=2)
        assert w.subscribe(3, "notes")["data"] == []


def test_signing_in_as_another_caller_reruns_every_subscription(small: TestServer) -> None:
    small.client(small.token("alice")).call("addNote", text="alice's")
    with wire(small, small.token("alice")) as w:
        assert [n["text"] for n in w.subscribe("n", "notes")["data"]] == ["alice's"]
        assert w.subscribe("me", "whoami")["data"] == "alice"
        w.send(type="auth", id="a", token=small.token("bob"))
        assert w.next("result")["data"]["id"] == "bob"
        got = {}
        while len(got) < 2:
            got.update({e["id"]: e["data"] for e in w.next("transition")["updates"]})
        assert got == {"n": [], "me": "bob"}


def test_signing_out_ends_private_subscriptions_and_keeps_public_ones(small: TestServer) -> None:
    with wire(small, small.token("alice")) as w:
        w.subscribe("n", "notes")
        w.subscribe("me", "whoami")
        w.send(type="auth", id="out", token=None)
        error = w.next("error")
        assert (error["id"], error["error"]["code"]) == ("n", "Unauthenticated")
        assert w.entry("me")["data"] is None
        small.client(small.token("alice")).call("addNote", text="not for anonymous")
        assert all("not for anonymous" not in json.dumps(m) for m in settle(small, w))


def test_a_revoked_key_stops_its_subscriptions(small: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from nanotypedb.server import ws as ws_module

    monkeypatch.setattr(ws_module, "KEY_RECHECK_SECONDS", 0.0)
    assert small.service is not None
    record, key = small.service.keys.create("live test")
    with wire(small, key) as w:
        w.subscribe("n", "notes")
        small.service.keys.revoke(record.id)
        small.client(small.token("alice")).call("addNote", text="after revocation")
        error = w.next("error")
        assert (error["id"], error["error"]["code"]) == ("n", "Unauthenticated")
        assert all("after revocation" not in json.dumps(m) for m in w.seen)


class RawReader:
    """A WebSocket client on a bare socket with a small receive buffer, that reads only when told:
    a client library reads in the background, so it never lets the server's sends back up."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]

    def send(self, msg: dict[str, Any]) -> None:
        payload = json.dumps(msg).encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def recv(self) -> dict[str, Any]:
        head = self._take(2)
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8))[0]
        result: dict[str, Any] = json.loads(self._take(size))
        return result

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def test_a_slow_reader_is_skipped_ahead_to_the_latest_result(tmp_path: Path) -> None:
    with serve(app, tmp_path) as srv:
        writer = srv.client(srv.token("alice"))
        reader = RawReader(srv.ws_url, srv.token("alice"))
        try:
            reader.send({"type": "subscribe", "id": "n", "name": "notes", "args": {}})
            assert reader.recv()["updates"][0]["data"] == []
            # Stop reading while the results grow far past what the sockets can buffer (30 MB in all).
            for i in range(150):
                writer.call("addNote", text=f"{i}:{'x' * 2_500}")
            frames, last = 0, []
            while len(last) < 150:
                msg = reader.recv()
                frames += 1
                last = msg["updates"][0]["data"] if msg["updates"] else last
            assert [n["text"].split(":")[0] for n in last] == [str(i) for i in range(150)]
            assert frames < 75, "every intermediate result was queued for a client that was not reading"
        finally:
            reader.sock.close()
