"""The write path end to end: concurrent writers over HTTP, rollback of a failing mutation, group commit."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from nanotypedb import App, Ctx, Table, owner_policy
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.testing import TestServer, serve

app = App("writes")


@app.table
class Item(Table, table="items", policy=owner_policy("owner_id")):
    label: str
    owner_id: str | None = None


@app.mutation()
def add_two_then_fail(ctx: Ctx, label: str) -> None:
    ctx.db.insert("items", {"label": label})
    ctx.db.insert("items", {"label": label + " again"})
    raise ValueError("the function's own bug")


@app.mutation()
def add(ctx: Ctx, label: str) -> dict[str, Any]:
    return ctx.db.insert("items", {"label": label})


@app.query()
def count(ctx: Ctx) -> int:
    return ctx.db.count("items")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path / "data", durability="full") as server:
        yield server


def test_a_mutation_that_raises_leaves_no_trace(running: TestServer) -> None:
    alice = running.client(running.token("alice"))
    alice.call("add", label="kept")
    before = alice.last_version
    response = alice.post("add_two_then_fail", {"label": "lost"})
    assert response.status_code == 500
    body = response.text
    assert "the function's own bug" not in body and "Traceback" not in body and "INSERT" not in body
    assert alice.call("count") == 1
    assert alice.last_version == before


def test_fifty_concurrent_writers_lose_nothing_and_versions_are_gapless(running: TestServer) -> None:
    async def writer(client: httpx.AsyncClient, who: int) -> list[int]:
        versions = []
        for i in range(4):
            reply = await client.post("/api/rpc/add", json={"label": f"{who}-{i}"})
            assert reply.status_code == 200, reply.text
            versions.append(reply.json()["version"])
        return versions

    async def main() -> list[list[int]]:
        headers = {"authorization": f"Bearer {running.token('alice')}"}
        async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=30) as client:
            return await asyncio.gather(*(writer(client, w) for w in range(50)))

    start = running.service.engine.version if running.service else 0
    per_writer = asyncio.run(main())
    versions = sorted(v for vs in per_writer for v in vs)
    assert versions == list(range(start + 1, start + 201))  # each acknowledged write has its own version
    assert all(vs == sorted(vs) for vs in per_writer)  # one writer's versions only increase
    assert running.client(running.token("alice")).call("count") == 200


def test_concurrent_writes_share_commits_at_full_durability(running: TestServer) -> None:
    assert running.service is not None
    stats = running.service.engine.stats
    before_commits, before_mutations = stats.group_commits, stats.mutations
    token = running.token("alice")

    def burst() -> None:
        with httpx.Client(base_url=running.url, headers={"authorization": f"Bearer {token}"}) as client:
            for i in range(10):
                assert client.post("/api/rpc/add", json={"label": str(i)}).status_code == 200

    threads = [threading.Thread(target=burst) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mutations = stats.mutations - before_mutations
    commits = stats.group_commits - before_commits
    assert mutations == 160
    assert commits < mutations  # some mutations shared one commit, and so one fsync
    assert stats.largest_batch > 1


def test_a_restarted_server_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve(tasks_app, data) as server:
        alice = server.client(server.token("alice"))
        made = [alice.call("createTask", title=f"t{i}")["id"] for i in range(20)]
        alice.call("completeTask", id=made[0])
        alice.call("deleteTask", id=made[1])
        secret_token = server.token("alice")
    with serve(tasks_app, data) as again:
        alice = again.client(secret_token)
        ids = [t["id"] for t in alice.call("listTasks", limit=100)]
        assert sorted(ids) == sorted(made[:1] + made[2:])
        assert alice.call("getTask", id=made[0])["status"] == "completed"


def test_a_query_records_its_read_set(tmp_path: Path) -> None:
    from nanotypedb.auth.principal import user
    from nanotypedb.functions.db import Db
    from nanotypedb.storage.engine import SqliteEngine

    engine = SqliteEngine(tmp_path / "db.sqlite3")
    engine.open(app.tables.values())
    try:
        read = engine.read_sync(lambda tx: Db(tx, user("alice")).query("items").where(label="x").all())
        (only,) = read.read_set.reads
        assert only.table == "items"
        assert dict(only.filters) == {"label": "x", "owner_id": "alice"}  # RLS's condition is a filter too
        assert read.read_set.touches("items", {"label": "x", "owner_id": "alice"})
        assert not read.read_set.touches("items", {"label": "x", "owner_id": "bob"})
        assert not read.read_set.touches("other", None)
    finally:
        engine.close()


def test_each_read_sees_one_snapshot_while_writes_go_on(tmp_path: Path) -> None:
    from nanotypedb.storage.engine import SqliteEngine
    from nanotypedb.storage.query import Select

    engine = SqliteEngine(tmp_path / "db.sqlite3")
    engine.open(app.tables.values())
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            engine.write_sync(lambda tx: tx.insert(tx.table("items"), {"label": "x"}))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(200):
            # Each mutation inserts one row, so in any snapshot the count equals the version.
            read = engine.read_sync(
                lambda tx: (tx.count(Select(tx.table("items"))), tx.count(Select(tx.table("items"))))
            )
            first, second = read.value
            assert first == second == read.version
    finally:
        stop.set()
        writer.join()
        engine.close()


def test_at_normal_durability_a_lone_call_commits_at_once_and_concurrent_ones_share(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", durability="normal") as server:
        assert server.service is not None
        stats = server.service.engine.stats
        token = server.token("alice")
        with connect(server.ws_url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
            for i in range(5):
                ws.send(json.dumps({"type": "rpc", "id": i, "name": "add", "args": {"label": str(i)}}))
                assert json.loads(ws.recv(timeout=5))["type"] == "result"
        assert stats.largest_batch == 1 and stats.group_commits == stats.mutations == 5
        assert server.service.runtime.active == 0  # every counted call was uncounted

        async def burst() -> None:
            headers = {"authorization": f"Bearer {server.token('alice')}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
                replies = await asyncio.gather(*(client.post("/api/rpc/add", json={"label": "x"}) for _ in range(64)))
            assert all(r.status_code == 200 for r in replies)

        asyncio.run(burst())
        assert stats.mutations == 69
        assert stats.group_commits < stats.mutations and stats.largest_batch > 1
