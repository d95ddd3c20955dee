"""Semantic subscriptions over /ws: rows whose meaning matches a description are pushed, under RLS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from nanotypedb.demo.tasks import app
from nanotypedb.testing import TestServer, serve

# The hashing embedder matches words, not meaning: titles that share words with the
# description score high, others near zero. Enough to test the plumbing, deterministically.
MILK = "buy milk and bread"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path, embedding_provider="hashing", job_poll=0.05, embedding_backoff=0.05) as srv:
        yield srv


@contextmanager
def session(server: TestServer, user: str) -> Iterator[ClientConnection]:
    headers = {"authorization": f"Bearer {server.token(user)}"}
    with connect(server.ws_url, additional_headers=headers, open_timeout=5) as ws:
        yield ws


def send(ws: ClientConnection, **msg: Any) -> None:
    ws.send(json.dumps(msg))


def until(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
        if msg["type"] == kind:
            return msg


def semantic(ws: ClientConnection, sub_id: Any, description: str = MILK, threshold: float = 0.5) -> dict[str, Any]:
    send(ws, type="subscribeSemantic", id=sub_id, topic="tasks", description=description, threshold=threshold)
    return until(ws, "result")


def test_a_matching_new_row_is_pushed_and_others_are_not(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with session(server, "alice") as ws:
        reply = semantic(ws, "s")
        assert reply["id"] == "s" and reply["data"] == {"topic": "tasks", "threshold": 0.5}
        alice.call("createTask", title="fix the car brakes")
        alice.call("createTask", title="buy milk and bread today")
        pushed = until(ws, "semantic")
        assert pushed["id"] == "s"
        assert pushed["data"]["title"] == "buy milk and bread today"
        assert pushed["data"]["vector_status"] == "indexed"
        assert 0.5 <= pushed["data"]["_score"] <= 1.0
        # The car task was indexed too, and never pushed: nothing else is waiting.
        send(ws, type="ping", id="p")
        assert until(ws, "pong")["id"] == "p"


def test_an_edit_that_now_matches_is_pushed(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="call the plumber")
    with session(server, "alice") as ws:
        semantic(ws, 1)
        alice.call("updateTask", id=task["id"], title="buy milk and bread")
        assert until(ws, "semantic")["data"]["id"] == task["id"]


def test_another_users_rows_are_never_pushed(server: TestServer) -> None:
    alice, bob = server.client(server.token("alice")), server.client(server.token("bob"))
    with session(server, "bob") as ws:
        semantic(ws, "b")
        alice.call("createTask", title="buy milk and bread")  # the best match there is, but alice's
        bob.call("createTask", title="buy milk and bread for bob")
        pushed = until(ws, "semantic")
        assert pushed["data"]["owner_id"] == "bob"


def test_unsubscribe_stops_the_pushes(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    with session(server, "alice") as ws:
        semantic(ws, "s")
        send(ws, type="unsubscribe", id="s")
        alice.call("createTask", title="buy milk and bread")
        semantic(ws, "t", description="fix the car", threshold=0.5)
        alice.call("createTask", title="fix the car")
        assert until(ws, "semantic")["id"] == "t"  # the first push on this socket is the second subscription's


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        ({"topic": "nope", "description": "x", "threshold": 0.5}, "ValidationFailed"),
        ({"topic": "tasks", "description": "", "threshold": 0.5}, "ValidationFailed"),
        ({"topic": "tasks", "description": "x", "threshold": 2}, "ValidationFailed"),
        ({"topic": "tasks", "description": "x", "threshold": True}, "ValidationFailed"),
        ({"description": "x"}, "MalformedMessage"),
    ],
)
def test_a_refused_semantic_subscription_gets_an_error(server: TestServer, msg: dict[str, Any], code: str) -> None:
    with session(server, "alice") as ws:
        send(ws, type="subscribeSemantic", id=9, **msg)
        error = until(ws, "error")
        assert (error["id"], error["error"]["code"]) == (9, code)


def test_a_server_that_does_not_embed_refuses_semantic_subscriptions(tmp_path: Path) -> None:
    with serve(app, tmp_path) as srv, session(srv, "alice") as ws:  # embeddings off
        send(ws, type="subscribeSemantic", id=1, topic="tasks", description="milk", threshold=0.5)
        assert until(ws, "error")["error"]["code"] == "ValidationFailed"


def test_search_tasks_finds_the_callers_best_matches(server: TestServer) -> None:
    alice, bob = server.client(server.token("alice")), server.client(server.token("bob"))
    for title in ("fix the car", "buy milk and bread", "water the garden plants"):
        alice.call("createTask", title=title)
    bob.call("createTask", title="buy milk and bread now")
    deadline = time.monotonic() + 5
    while {t["vector_status"] for t in alice.call("listTasks") + bob.call("listTasks")} != {"indexed"}:
        assert time.monotonic() < deadline, "the tasks were not indexed"
        time.sleep(0.02)
    found = alice.call("searchTasks", query="milk and bread", k=2)
    assert found[0]["title"] == "buy milk and bread"
    assert all(t["owner_id"] == "alice" for t in found) and len(found) == 2
    assert found[0]["_score"] >= found[1]["_score"]
