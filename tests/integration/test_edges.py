"""Edges found in review: rule combinations, limits counted in bytes, expiring tokens, actions and bad settings."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from nanotypedb import ALLOW, App, ConfigError, Ctx, Policy, RowNotFound, SchemaError, Table, match
from nanotypedb.auth.policy import CALLER
from nanotypedb.testing import TestServer, serve

app = App("edges")


@app.table
class Note(Table, table="notes", policy=Policy(read=match(owner=CALLER), update=ALLOW, delete=ALLOW, insert=ALLOW)):
    body: str
    owner: str | None = None


@app.mutation()
def add_note(ctx: Ctx, body: str, owner: str) -> dict[str, Any]:
    return ctx.db.insert("notes", {"body": body, "owner": owner})


@app.mutation()
def edit_note(ctx: Ctx, id: int, body: str) -> dict[str, Any]:
    return ctx.db.update("notes", id, {"body": body})


@app.mutation()
def drop_note(ctx: Ctx, id: int) -> dict[str, Any]:
    return ctx.db.delete("notes", id)


@app.query()
def echo_name(ctx: Ctx, name: str) -> str:
    return name


@app.mutation()
def add_and_return_object(ctx: Ctx, body: str) -> Any:
    ctx.db.insert("notes", {"body": body, "owner": ctx.user.id})
    return object()


@app.query(public=True)
def count_notes(ctx: Ctx) -> int:
    return len(ctx.db.query("notes").all()) if not ctx.user.is_anonymous else -1


@app.action()
async def relay(ctx: Ctx, name: str) -> Any:
    return await ctx.run_query("echo_name", name=name)


@app.action()
async def wrong_kind(ctx: Ctx) -> Any:
    return await ctx.run_mutation("echo_name", name="x")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path / "data") as server:
        yield server


def test_update_and_delete_need_the_read_rule_too(running: TestServer) -> None:
    bob = running.client(running.token("bob"))
    note = bob.call("add_note", body="bob's", owner="bob")
    alice = running.client(running.token("alice"))
    with pytest.raises(RowNotFound):
        alice.call("edit_note", id=note["id"], body="mine now")
    with pytest.raises(RowNotFound):
        alice.call("drop_note", id=note["id"])
    assert bob.call("edit_note", id=note["id"], body="still bob's")["body"] == "still bob's"


def test_an_argument_named_name_passes_through_actions(running: TestServer) -> None:
    alice = running.client(running.token("alice"))
    assert alice.call("relay", name="n") == "n"


def test_run_mutation_refuses_a_query(running: TestServer) -> None:
    response = running.client(running.token("alice")).post("wrong_kind", {})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


def test_a_result_json_cannot_carry_rolls_the_mutation_back_over_websocket(running: TestServer) -> None:
    token = running.token("alice")
    with connect(running.ws_url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"type": "rpc", "id": 1, "name": "add_and_return_object", "args": {"body": "x"}}))
        reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "error" and reply["error"]["code"] == "InternalError"
    assert running.client(token).call("count_notes") == 0


def test_anonymous_callers_list_only_public_functions(running: TestServer) -> None:
    anonymous = httpx.get(f"{running.url}/api/functions").json()["functions"]
    assert [f["name"] for f in anonymous] == ["count_notes"]
    paths = httpx.get(f"{running.url}/openapi.json").json()["paths"]
    assert "/api/rpc/count_notes" in paths and "/api/rpc/add_note" not in paths
    signed_in = httpx.get(
        f"{running.url}/api/functions", headers={"authorization": f"Bearer {running.token('alice')}"}
    ).json()["functions"]
    assert "add_note" in {f["name"] for f in signed_in}


def test_the_frame_limit_counts_bytes_not_characters(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", ws_max_frame_bytes=1000) as server, connect(server.ws_url) as ws:
        text = "€" * 400  # 400 characters, 1,200 UTF-8 bytes
        ws.send(json.dumps({"type": "rpc", "id": 1, "name": "echo_name", "args": {"name": text}}, ensure_ascii=False))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["error"]["code"] == "PayloadTooLarge"
        ws.send(json.dumps({"type": "ping", "id": 2}))
        assert json.loads(ws.recv(timeout=5))["type"] == "pong"


def test_a_token_that_expires_on_an_open_socket_stops_working(running: TestServer) -> None:
    token = running.token("alice", ttl=dt.timedelta(seconds=1))
    with connect(running.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "id": 0, "token": token}))
        assert json.loads(ws.recv(timeout=5))["type"] == "result"
        time.sleep(1.2)
        ws.send(json.dumps({"type": "rpc", "id": 1, "name": "echo_name", "args": {"name": "x"}}))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["error"]["code"] == "InvalidToken"
        ws.send(json.dumps({"type": "rpc", "id": 2, "name": "echo_name", "args": {"name": "x"}}))
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == "Unauthenticated"


@pytest.mark.parametrize("rate", ["fast", "10/y", "0/s", "-1/s", "5/s burst x"])
def test_a_malformed_rate_is_a_config_error(rate: str) -> None:
    other = App("rates")
    with pytest.raises(ConfigError):

        @other.query(rate=rate)
        def q(ctx: Ctx) -> int:
            return 1


def test_a_malformed_default_rate_limit_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError), serve(app, tmp_path / "data", rate_limit="lots"):
        pass


def test_async_queries_are_refused_at_declaration() -> None:
    other = App("async")
    with pytest.raises(ConfigError):

        @other.query()
        async def q(ctx: Ctx) -> int:
            return 1


def test_a_unique_index_over_duplicates_is_a_schema_error(tmp_path: Path) -> None:
    from nanotypedb.storage.engine import SqliteEngine
    from nanotypedb.storage.schema import column

    class Loose(Table, table="things"):
        code: str

    class Strict(Table, table="things"):
        code: str = column(unique=True)

    engine = SqliteEngine(tmp_path / "db.sqlite3")
    engine.open([Loose.__schema__])
    for _ in range(2):
        engine.write_sync(lambda tx: tx.insert(tx.table("things"), {"code": "same"}))
    engine.close()
    again = SqliteEngine(tmp_path / "db.sqlite3")
    with pytest.raises(SchemaError) as raised:
        again.open([Strict.__schema__])
    assert "things" in raised.value.message and "code" in raised.value.message


@pytest.mark.parametrize(
    "args",
    [["token", "--user", ""], ["serve", "--rate-limit", "lots"], ["token", "--user", "a", "--secret", "short"]],
)
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    command = [sys.executable, "-m", "nanotypedb", *args, "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_a_revoked_key_stops_working_on_an_open_socket(running: TestServer) -> None:
    assert running.service is not None
    record, key = running.service.keys.create("short-lived")
    with connect(running.ws_url, additional_headers={"authorization": f"Bearer {key}"}) as ws:
        ws.send(json.dumps({"type": "rpc", "id": 1, "name": "echo_name", "args": {"name": "x"}}))
        assert json.loads(ws.recv(timeout=5))["type"] == "result"
        running.service.keys.revoke(record.id)
        time.sleep(1.1)
        ws.send(json.dumps({"type": "rpc", "id": 2, "name": "echo_name", "args": {"name": "x"}}))
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == "InvalidToken"
