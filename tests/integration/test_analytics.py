"""Usage analytics through the public API: counts match the calls made, survive a restart, stay out of the data file."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from nanotypedb import App, ConfigError, Conflict, Ctx, NanoTypeDBError, Table, owner_policy
from nanotypedb.cli.backup import run_backup
from nanotypedb.jobs.context import JobCtx
from nanotypedb.service import Paths, create_environment
from nanotypedb.storage.analytics import AnalyticsStore
from nanotypedb.storage.environments import EnvironmentType
from nanotypedb.testing import HttpClient, TestServer, serve, wait_for

app = App("usage")
DAY = 86400


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    owner_id: str | None = None


@app.table
class Stamp(Table, table="stamps"):  # admin-only: written by the `stamp` job
    note: int


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str, stamp: bool = False) -> dict[str, Any]:
    row = ctx.db.insert("notes", {"text": text})
    if stamp:
        ctx.enqueue("stamp", {"note": row["id"]})
    return row


@app.mutation(name="editNote")
def edit_note(ctx: Ctx, id: int, text: str) -> dict[str, Any]:
    return ctx.db.update("notes", id, {"text": text})


@app.mutation(name="dropNote")
def drop_note(ctx: Ctx, id: int) -> None:
    ctx.db.delete("notes", id)


@app.mutation(name="failNote")
def fail_note(ctx: Ctx, text: str) -> None:
    ctx.db.insert("notes", {"text": text})
    raise Conflict("A note cannot be written twice.")  # rolled back: its insert is not a changed row


@app.query(name="ping", public=True)
def ping(ctx: Ctx) -> str:
    return "pong"


@app.job(name="stamp")
def stamp(ctx: JobCtx, payload: dict[str, Any]) -> None:
    """A plain `def` handler: it runs in a thread, so its commit reaches analytics from off the loop."""
    ctx.write_sync(lambda db: db.insert("stamps", {"note": payload["note"]}))


def fails(client: HttpClient, name: str, code: str, **args: Any) -> None:
    with pytest.raises(NanoTypeDBError) as caught:
        client.call(name, **args)
    assert caught.value.code == code


def analytics(server: TestServer, **args: Any) -> dict[str, Any]:
    result: dict[str, Any] = server.client(server.admin_key).call("getAnalytics", **args)
    return result


def counts(result: dict[str, Any], *, field: str = "count") -> dict[tuple[str, ...], int]:
    return {tuple(s["key"].values()): s["total"][field] for s in result["series"]}


def without_own(result: dict[str, Any]) -> dict[tuple[str, ...], int]:
    """Counts of a result, less the test's own getAnalytics calls."""
    return {k: n for k, n in counts(result).items() if k[0] != "getAnalytics"}


@contextmanager
def ws_session(server: TestServer, credential: str) -> Iterator[ClientConnection]:
    with connect(server.ws_url, additional_headers={"authorization": f"Bearer {credential}"}, open_timeout=5) as ws:
        yield ws


def ws_rpc(ws: ClientConnection, msg_id: int, name: str, **args: Any) -> dict[str, Any]:
    ws.send(json.dumps({"type": "rpc", "id": msg_id, "name": name, "args": args}))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return reply


def make_calls(server: TestServer) -> None:
    """The calls the counts are checked against (see EXPECTED_CALLS)."""
    alice, admin, anonymous = server.client(server.token("alice")), server.client(server.admin_key), server.client()
    ids = [alice.call("addNote", text=f"n{i}")["id"] for i in range(5)]
    alice.call("editNote", id=ids[0], text="edited")
    alice.call("editNote", id=ids[1], text="edited")
    alice.call("dropNote", id=ids[2])
    for _ in range(3):
        fails(alice, "failNote", "Conflict", text="twice")
    for _ in range(2):
        fails(alice, "addNote", "ValidationFailed", text=5)
    for _ in range(2):
        fails(alice, "noSuchFunction", "FunctionNotFound")
    for i in range(4):
        admin.call("addNote", text=f"a{i}")
    for _ in range(6):
        assert anonymous.call("ping") == "pong"
    fails(anonymous, "addNote", "Unauthenticated", text="x")
    with ws_session(server, server.token("alice")) as ws:
        assert ws_rpc(ws, 1, "addNote", text="over ws")["type"] == "result"


EXPECTED_CALLS = {
    ("addNote", "user", "ok"): 6,
    ("editNote", "user", "ok"): 2,
    ("dropNote", "user", "ok"): 1,
    ("failNote", "user", "Conflict"): 3,
    ("addNote", "user", "ValidationFailed"): 2,
    ("_unknown", "user", "FunctionNotFound"): 2,
    ("addNote", "admin", "ok"): 4,
    ("ping", "anonymous", "ok"): 6,
    ("addNote", "anonymous", "Unauthenticated"): 1,
}
EXPECTED_ROWS = {("notes", "insert"): 10, ("notes", "update"): 2, ("notes", "delete"): 1}


def sum_by(position: int) -> dict[str, int]:
    totals: dict[str, int] = {}
    for key, n in EXPECTED_CALLS.items():
        totals[key[position]] = totals.get(key[position], 0) + n
    return totals


def test_counts_match_the_calls_made_before_any_flush(tmp_path: Path) -> None:
    # A flush interval of an hour: everything below is read from memory, the caller's own calls at once.
    with serve(app, tmp_path, analytics_flush=3600) as server:
        make_calls(server)
        every = analytics(server, bucket="1m", group_by=["function", "caller", "status"])
        assert without_own(every) == EXPECTED_CALLS
        assert without_own(analytics(server, group_by="function")) == {
            (f,): n for f, n in sum_by(0).items() if f != "getAnalytics"
        }
        callers = counts(analytics(server, group_by="caller"))
        assert callers["user",] == sum_by(1)["user"]
        assert callers["anonymous",] == sum_by(1)["anonymous"]
        assert callers["admin",] == sum_by(1)["admin"] + 2  # two getAnalytics calls came before this one
        errors = counts(analytics(server, group_by="function"), field="errors")
        assert (errors["addNote",], errors["failNote",], errors["editNote",]) == (3, 3, 0)
        rows = analytics(server, group_by=["table", "action"])
        assert counts(rows, field="rows") == EXPECTED_ROWS
        assert _stored_calls(tmp_path) == 0  # nothing flushed yet


def test_latencies_are_present_and_sane(tmp_path: Path) -> None:
    with serve(app, tmp_path) as server:
        alice = server.client(server.token("alice"))
        started = time.perf_counter()
        for i in range(20):
            alice.call("addNote", text=f"n{i}")
        elapsed_ms = (time.perf_counter() - started) * 1000
        result = analytics(server, group_by="function", bucket="1m")
        (series,) = [s for s in result["series"] if s["key"] == {"function": "addNote"}]
        latency = series["total"]["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert 0 < latency["avg"] <= latency["max"]
        # The server's time of each call is part of the client's round trip.
        assert latency["avg"] * 20 <= elapsed_ms
        assert sum(p["count"] for p in series["points"]) == 20
        assert all(p["time"].endswith(":00Z") for p in series["points"])


def test_data_survives_a_restart(tmp_path: Path) -> None:
    with serve(app, tmp_path, analytics_flush=3600) as server:
        make_calls(server)
    assert _stored_calls(tmp_path) > 0  # the clean stop flushed
    with serve(app, tmp_path, analytics_flush=3600) as server:
        assert without_own(analytics(server, group_by=["function", "caller", "status"])) == EXPECTED_CALLS
        assert counts(analytics(server, group_by=["table", "action"]), field="rows") == EXPECTED_ROWS


def test_a_flush_writes_only_the_analytics_file(tmp_path: Path) -> None:
    env = tmp_path / "env" / "dev"
    with serve(app, tmp_path, analytics_flush=0.1, job_workers=0) as server:
        alice = server.client(server.token("alice"))
        for i in range(5):
            alice.call("addNote", text=f"n{i}")
        wait_for(lambda: _stored_calls(tmp_path, "addNote") == 5)
        before = _data_state(env)
        anonymous = server.client()
        for _ in range(30):
            anonymous.call("ping")
        wait_for(lambda: _stored_calls(tmp_path, "ping") == 30)
        assert _data_state(env) == before


def test_commits_of_job_threads_are_counted(tmp_path: Path) -> None:
    with serve(app, tmp_path, job_poll=0.05) as server:
        admin = server.client(server.admin_key)
        for i in range(3):
            admin.call("addNote", text=f"n{i}", stamp=True)
        wait_for(lambda: counts(analytics(server, group_by="table"), field="rows").get(("stamps",)) == 3)
        assert counts(analytics(server, group_by="table"), field="rows")["notes",] == 3


def test_retention_deletes_old_minutes(tmp_path: Path) -> None:
    now = int(time.time()) // 60 * 60
    store = AnalyticsStore(tmp_path / "env" / "dev" / "analytics.sqlite3")
    store.open()
    old, recent = now - 40 * DAY, now - 10 * DAY
    store.add([(old, "ping", "user", "ok", 3, 7, 0.1, 0.02), (recent, "ping", "user", "ok", 3, 5, 0.1, 0.02)], [], 0)
    store.add([], [(old, "notes", "insert", 2), (recent, "notes", "insert", 4)], 0)
    store.close()
    with serve(app, tmp_path, analytics_retention_days=30, analytics_flush=0.1) as server:
        span = {"from": now - 50 * DAY, "bucket": "1d"}
        assert counts(analytics(server, group_by="function", **span)) == {("ping",): 5}
        assert counts(analytics(server, group_by="table", **span), field="rows") == {("notes",): 4}
    with contextlib.closing(sqlite3.connect(tmp_path / "env" / "dev" / "analytics.sqlite3")) as conn:
        assert conn.execute("SELECT count(*) FROM calls WHERE minute < ?", (now - 30 * DAY,)).fetchone() == (0,)


def test_non_admins_are_refused(tmp_path: Path) -> None:
    with serve(app, tmp_path) as server:
        fails(server.client(server.token("alice")), "getAnalytics", "Forbidden")
        assert server.service is not None
        _, service_key = server.service.keys.create("a service", kind="service")
        fails(server.client(service_key), "getAnalytics", "Forbidden")
        fails(server.client(), "getAnalytics", "Unauthenticated")
        with ws_session(server, server.token("alice")) as ws:
            assert ws_rpc(ws, 1, "getAnalytics")["error"]["code"] == "Forbidden"


def test_admins_read_analytics_over_websocket(tmp_path: Path) -> None:
    with serve(app, tmp_path) as server:
        server.client().call("ping")
        with ws_session(server, server.admin_key) as ws:
            reply = ws_rpc(ws, 1, "getAnalytics", group_by="caller", bucket="1d")
        assert reply["type"] == "result"
        assert counts(reply["data"]) == {("anonymous",): 1}


BAD_ARGUMENTS = [
    ({"bucket": "1s"}, "bucket"),
    ({"bucket": "0m"}, "bucket"),
    ({"bucket": "hour"}, "bucket"),
    ({"bucket": "1m", "from": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "bucket"),
    ({"bucket": 60}, "bucket"),
    ({"group_by": "user"}, "group_by"),
    ({"group_by": []}, "group_by"),
    ({"group_by": ["function", "function"]}, "group_by"),
    ({"group_by": ["function", "table"]}, "group_by"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01"}, "to"),
    ({"from": -1}, "from"),
    ({"from": 1e20}, "from"),
    ({"from": True}, "from"),
    ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "from"),
    ({"since": "2026-12-01"}, "since"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with serve(app, tmp_path_factory.mktemp("analytics")) as server:
        yield server


@pytest.mark.parametrize(("args", "field"), BAD_ARGUMENTS, ids=lambda v: json.dumps(v))
def test_bad_arguments_get_clear_errors(shared: TestServer, args: dict[str, Any], field: str) -> None:
    server = shared
    response = server.client(server.admin_key).post("getAnalytics", args)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "ValidationFailed"
    assert error["details"][0]["field"].split(".")[0] == field
    assert "getAnalytics" in error["message"]


def test_analytics_off_counts_nothing_and_says_so(tmp_path: Path) -> None:
    with serve(app, tmp_path, analytics="off") as server:
        server.client().call("ping")
        fails(server.client(server.admin_key), "getAnalytics", "ServiceUnavailable")
    assert not (tmp_path / "env" / "dev" / "analytics.sqlite3").exists()


def test_each_environment_keeps_its_own_analytics(tmp_path: Path) -> None:
    # A staging server counts into env/staging/analytics.sqlite3, never into dev's folder, and answers for staging
    # alone; `backup --env staging` copies staging's file and nothing of dev.
    create_environment(Paths(tmp_path), "staging", EnvironmentType.STAGING)
    with serve(app, tmp_path, env="staging", analytics_flush=3600) as server:
        admin = server.client(server.admin_key)
        for i in range(3):
            admin.call("addNote", text=f"s{i}")
        server.client().call("ping")
    assert _stored_calls(tmp_path, "addNote", env="staging") == 3  # the clean stop flushed, into staging's file
    assert not (tmp_path / "env" / "dev" / "analytics.sqlite3").exists()
    with serve(app, tmp_path, analytics_flush=3600) as server:  # dev: its own file, none of staging's counts
        server.client().call("ping")
        assert without_own(analytics(server, group_by="function")) == {("ping",): 1}
    assert _stored_calls(tmp_path, "ping", env="dev") == 1
    assert _stored_calls(tmp_path, "ping", env="staging") == 1
    written = run_backup(tmp_path, tmp_path / "copy", "staging")
    copy = tmp_path / "copy"
    assert copy / "env" / "staging" / "analytics.sqlite3" in written
    assert _stored_calls(copy, "addNote", env="staging") == 3
    assert not (copy / "env" / "dev").exists()


@pytest.mark.parametrize("settings", [{"analytics_flush": 0}, {"analytics_retention_days": 0}])
def test_bad_analytics_settings_stop_start_up(tmp_path: Path, settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="--analytics-"):
        TestServer(app, tmp_path, **settings).start()


def _stored_calls(data_dir: Path, function: str | None = None, *, env: str = "dev") -> int:
    """Calls in the analytics file of `env`, as a flush left it (read beside the server)."""
    path = Paths(data_dir).env_analytics(env)
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        sql, params = "SELECT coalesce(sum(count), 0) FROM calls", ()
        if function is not None:
            sql, params = sql + " WHERE function = ?", (function,)
        return int(conn.execute(sql, params).fetchone()[0])


def _data_state(env: Path) -> tuple[int, int, int]:
    """The data file's version and the sizes of the file and its write-ahead log."""
    with contextlib.closing(sqlite3.connect(env / "db.sqlite3")) as conn:
        version = int(conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
    wal = env / "db.sqlite3-wal"
    return version, (env / "db.sqlite3").stat().st_size, wal.stat().st_size if wal.exists() else 0
