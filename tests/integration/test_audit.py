"""The audit log through a real server: an entry per changed row and per administrative act, written in the
change's own transaction, chained by hash; verifyAuditLog finds tampering; exports are admin-only and safe."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from nanotypedb import App, Ctx, Table
from nanotypedb.audit import export
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.errors import (
    AuditExportTooLarge,
    Forbidden,
    NanoTypeDBError,
    RowNotFound,
    Unauthenticated,
    ValidationFailed,
)
from nanotypedb.functions.registry import FunctionKind
from nanotypedb.jobs.context import JobCtx
from nanotypedb.storage import audit as store
from nanotypedb.testing import TestServer, serve, wait_for

app = App("audited")


@app.table
class Note(Table, table="notes"):  # admin-only (no policy)
    text: str
    api_token: str | None = None  # a secret column: never in an entry


@app.mutation(name="addNotes")
def add_notes(ctx: Ctx, texts: list[str]) -> list[int]:
    return [ctx.db.insert("notes", {"text": t})["id"] for t in texts]


@app.mutation(name="addThenFail")
def add_then_fail(ctx: Ctx, text: str) -> None:
    ctx.db.insert("notes", {"text": text})
    raise RowNotFound("Failed after writing.")


@app.mutation(name="touchNothing")
def touch_nothing(ctx: Ctx) -> int:
    return 0


@app.mutation(name="addSecret")
def add_secret(ctx: Ctx, text: str, token: str) -> int:
    return int(ctx.db.insert("notes", {"text": text, "api_token": token})["id"])


@app.mutation(name="queueNote")
def queue_note(ctx: Ctx, text: str, job: str = "writeNote") -> int:
    return ctx.enqueue(job, {"text": text})


@app.job(name="writeNote", backoff=0.05)
async def write_note(ctx: JobCtx, payload: dict[str, Any]) -> None:
    await ctx.write(lambda db: db.insert("notes", {"text": payload["text"]}))


@app.job(name="doomed", retries=1, backoff=0.01)
async def doomed(ctx: JobCtx, payload: Any) -> None:
    raise RuntimeError("no luck")


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path / "data") as running:
        yield running


def entries(server: TestServer, **where: Any) -> list[dict[str, Any]]:
    """The environment's entries, read straight from the file."""
    assert server.service is not None
    conn = sqlite3.connect(server.service.engine.path)
    try:
        rows = conn.execute(f"SELECT {store.COLUMNS} FROM _audit ORDER BY seq").fetchall()
    finally:
        conn.close()
    found = [store.as_dict(r) for r in rows]
    return [e for e in found if all(e[k] == v for k, v in where.items())]


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


def verify(server: TestServer) -> dict[str, Any]:
    report: dict[str, Any] = server.client(server.admin_key).call("verifyAuditLog")
    return report


def env_chain(report: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in report["chains"] if c["chain"].startswith("env:"))


# -- entries --------------------------------------------------------------------


def test_the_task_mutations_each_leave_an_entry_with_who_what_and_before_after(server: TestServer) -> None:
    user = server.client(server.token("alice"))
    task = user.call("createTask", title="write the audit log")
    user.call("updateTask", id=task["id"], title="write it well")
    user.call("completeTask", id=task["id"])
    user.call("deleteTask", id=task["id"])
    found = entries(server, table="tasks")
    assert [e["action"] for e in found] == ["insert", "update", "update", "delete"]
    assert [e["function"] for e in found] == ["createTask", "updateTask", "completeTask", "deleteTask"]
    for e in found:
        assert (e["actor_kind"], e["actor_id"], e["environment"], e["row_id"]) == ("user", "alice", "dev", task["id"])
        assert e["client"] == "127.0.0.1" and e["request_id"]
    insert, update, complete, delete = found
    assert insert["before"] is None and insert["after"]["title"] == "write the audit log"
    assert update["before"]["title"] == "write the audit log" and update["after"]["title"] == "write it well"
    assert complete["before"]["status"] == "pending" and complete["after"]["status"] == "completed"
    assert delete["before"]["status"] == "completed" and delete["after"] is None
    assert len({e["request_id"] for e in found}) == 4
    assert verify(server)["ok"]


def test_the_request_id_of_the_reply_is_the_one_in_the_entry(server: TestServer) -> None:
    response = server.client(server.token("bob")).post("createTask", {"title": "traced"})
    (entry,) = entries(server, table="tasks")
    assert entry["request_id"] == response.headers["x-request-id"]


def test_a_websocket_mutation_names_its_client_and_request(server: TestServer) -> None:
    headers = {"authorization": f"Bearer {server.token('carol')}"}
    with connect(server.ws_url, additional_headers=headers, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "rpc", "id": 1, "name": "createTask", "args": {"title": "over ws"}}))
        reply = json.loads(ws.recv(timeout=5))
    assert reply["type"] == "result"
    (entry,) = entries(server, table="tasks")
    assert (entry["actor_id"], entry["client"], entry["function"]) == ("carol", "127.0.0.1", "createTask")
    assert entry["request_id"]


def test_a_mutation_writing_three_rows_leaves_three_entries_sharing_its_request_id(audited: TestServer) -> None:
    ids = audited.client(audited.admin_key).call("addNotes", texts=["a", "b", "c"])
    found = entries(audited, table="notes")
    assert [e["row_id"] for e in found] == ids
    assert len({e["request_id"] for e in found}) == 1
    assert [e["seq"] for e in found] == list(range(found[0]["seq"], found[0]["seq"] + 3))


def test_a_failing_mutation_leaves_no_entry_and_the_chain_still_verifies(audited: TestServer) -> None:
    admin = audited.client(audited.admin_key)
    before = entries(audited)
    with pytest.raises(RowNotFound):
        admin.call("addThenFail", text="never")
    assert entries(audited) == before
    admin.call("addNotes", texts=["after"])
    assert verify(audited)["ok"]


def test_a_mutation_that_changes_nothing_records_nothing(audited: TestServer) -> None:
    before = entries(audited)
    audited.client(audited.admin_key).call("touchNothing")
    assert entries(audited) == before


def test_a_rolled_back_mutation_in_a_group_commit_leaves_no_entry_and_the_others_keep_theirs(
    audited: TestServer,
) -> None:
    service = audited.service
    assert service is not None
    admin_client = audited.client(audited.admin_key)
    admin_client.call("addNotes", texts=["warm up"])  # starts the writer task on the server's loop
    loop = service.engine._loop
    assert loop is not None
    principal = service.authenticate(audited.admin_key)
    add = service.app.functions.get("addNotes")
    fail = service.app.functions.get("addThenFail")
    assert add is not None and fail is not None and add.kind is FunctionKind.MUTATION
    runtime = service.runtime

    async def together() -> list[Any]:
        calls = [
            runtime.invoke(add, principal, {"texts": ["one"]}, "rid-one"),
            runtime.invoke(fail, principal, {"text": "gone"}, "rid-gone"),
            runtime.invoke(add, principal, {"texts": ["two", "three"]}, "rid-two"),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    largest = service.engine.stats.largest_batch
    results = asyncio.run_coroutine_threadsafe(together(), loop).result(10)
    assert isinstance(results[1], RowNotFound)
    assert service.engine.stats.largest_batch >= 3 > largest  # they shared one transaction
    rids = [e["request_id"] for e in entries(audited, table="notes")]
    assert "rid-gone" not in rids and rids.count("rid-one") == 1 and rids.count("rid-two") == 2
    assert verify(audited)["ok"]


def test_job_handler_writes_are_audited_as_the_system(audited: TestServer) -> None:
    admin = audited.client(audited.admin_key)
    job_id = admin.call("queueNote", text="from a job")
    entry = wait_for(lambda: entries(audited, function="writeNote"))[0]
    assert (entry["actor_kind"], entry["actor_id"], entry["action"]) == ("system", "jobs", "insert")
    assert entry["request_id"] == f"job-{job_id}-1" and entry["after"]["text"] == "from a job"


def test_redriving_and_purging_jobs_are_audited(audited: TestServer) -> None:
    admin = audited.client(audited.admin_key)
    admin.call("queueNote", text="x", job="doomed")
    wait_for(lambda: admin.call("listJobs", status="dead")["jobs"], timeout=10)
    assert admin.call("redriveJobs", queue="doomed") == {"redriven": 1}
    (redrive,) = entries(audited, action="jobs.redrive")
    assert redrive["actor_kind"] == "admin" and redrive["function"] == "redriveJobs"
    assert redrive["after"] == {"ids": None, "queue": "doomed", "count": 1}
    wait_for(lambda: admin.call("listJobs", status="dead")["jobs"], timeout=10)
    admin.call("purgeJobs")
    (purge,) = entries(audited, action="jobs.purge")
    assert purge["after"]["count"] == 1 and purge["after"]["status"] == "dead"


def test_migrations_applied_at_start_are_audited(server: TestServer) -> None:
    found = entries(server, action="migration.apply")
    assert len(found) == len(tasks_app.migrations) >= 1
    assert found[0]["row_id"] == 1 and found[0]["actor_kind"] == "system"
    assert set(found[0]["after"]) == {"number", "name", "checksum"}


def test_key_creation_and_revocation_are_audited_in_the_system_chain_without_the_key(
    audited: TestServer,
) -> None:
    service = audited.service
    assert service is not None
    record, plaintext = service.keys.create("ops", origin=store.Origin("admin", "k_test", "keys create"))
    assert service.keys.revoke(record.id, origin=store.Origin("admin", "k_test", "keys revoke"))
    conn = sqlite3.connect(service.paths.system_db)
    try:
        rows = conn.execute(f"SELECT {store.COLUMNS} FROM _audit ORDER BY seq").fetchall()
        key_hash = conn.execute("SELECT hash FROM _api_keys WHERE id = ?", (record.id,)).fetchone()[0]
    finally:
        conn.close()
    found = [store.as_dict(r) for r in rows if r[7] == record.id]
    assert [e["action"] for e in found] == ["key.create", "key.revoke"]
    assert found[1]["before"]["revoked_at"] is None and found[1]["after"]["revoked_at"]
    text = json.dumps([store.as_dict(r) for r in rows])
    assert plaintext not in text and key_hash not in text
    assert all(c["ok"] for c in verify(audited)["chains"])


def test_secret_columns_are_redacted(audited: TestServer) -> None:
    audited.client(audited.admin_key).call("addSecret", text="t", token="tok-very-secret")
    (entry,) = entries(audited, table="notes")
    assert entry["after"]["api_token"] == store.REDACTED
    assert "tok-very-secret" not in json.dumps(entries(audited))


def test_with_audit_off_nothing_is_recorded(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", audit="off") as running:
        running.client(running.admin_key).call("addNotes", texts=["x"])
        assert entries(running) == []
        assert verify(running)["ok"]


# -- tampering --------------------------------------------------------------------


@pytest.fixture
def chain(audited: TestServer) -> TestServer:
    """A server with a few more entries than its migrations and keys."""
    audited.client(audited.admin_key).call("addNotes", texts=[f"n{i}" for i in range(6)])
    assert verify(audited)["ok"]
    return audited


def _db(server: TestServer) -> Path:
    assert server.service is not None
    return server.service.engine.path


def _problems(report: dict[str, Any]) -> list[tuple[str, int]]:
    return [(p["kind"], p["seq"]) for p in env_chain(report)["problems"]]


def test_an_edited_entry_is_found(chain: TestServer) -> None:
    seq = entries(chain, table="notes")[2]["seq"]
    tamper(_db(chain), f'UPDATE _audit SET after = \'{{"text": "forged"}}\' WHERE seq = {seq}')
    report = verify(chain)
    assert not report["ok"], (report, entries(chain))
    assert _problems(report) == [("edited", seq)]


def test_an_entry_edited_with_its_hash_recomputed_is_found(chain: TestServer) -> None:
    seq = entries(chain, table="notes")[2]["seq"]
    conn = sqlite3.connect(_db(chain), isolation_level=None)
    try:
        row = list(conn.execute(f"SELECT {store.COLUMNS} FROM _audit WHERE seq = ?", (seq,)).fetchone())
        row[store.FIELDS.index("actor_id")] = "someone-else"
        forged = store.entry_hash(row[-2], row[:-2])
        conn.execute("UPDATE _audit SET actor_id = 'someone-else', hash = ? WHERE seq = ?", (forged, seq))
    finally:
        conn.close()
    assert _problems(verify(chain)) == [("edited", seq)]


def test_a_deleted_entry_in_the_middle_is_found(chain: TestServer) -> None:
    seq = entries(chain, table="notes")[3]["seq"]
    tamper(_db(chain), f"DELETE FROM _audit WHERE seq = {seq}")
    assert _problems(verify(chain)) == [("deleted", seq)]


def test_deleting_the_newest_entries_is_found(chain: TestServer) -> None:
    last = entries(chain)[-1]["seq"]
    tamper(_db(chain), f"DELETE FROM _audit WHERE seq >= {last - 1}")
    (problem,) = env_chain(verify(chain))["problems"]
    assert (problem["kind"], problem["seq"], problem["last_seq"]) == ("deleted", last - 1, last)


def test_an_inserted_entry_is_found_even_with_a_valid_hash(chain: TestServer) -> None:
    last = entries(chain)[-1]
    fields = [last["seq"] + 1, last["time"], "dev", "admin", "k_forged", "addNotes", "notes", 99, "insert"]
    fields += [None, '{"text":"forged"}', "rid", "127.0.0.1"]
    digest = store.entry_hash(last["hash"], fields)
    marks = ", ".join("?" * len(store.FIELDS))
    conn = sqlite3.connect(_db(chain), isolation_level=None)
    try:
        conn.execute(f"INSERT INTO _audit ({store.COLUMNS}) VALUES ({marks})", (*fields, last["hash"], digest))
    finally:
        conn.close()
    assert _problems(verify(chain)) == [("inserted", last["seq"] + 1)]


def test_an_entry_slipped_in_between_is_found(chain: TestServer) -> None:
    # Make room by moving the newest entry up one, then forge an entry into the hole it leaves.
    found = entries(chain)
    last, before = found[-1], found[-2]
    fields = [last["seq"], last["time"], "dev", "admin", "k_forged", "addNotes", "notes", 99, "insert"]
    fields += [None, '{"text":"forged"}', "rid", "127.0.0.1"]
    digest = store.entry_hash(before["hash"], fields)
    marks = ", ".join("?" * len(store.FIELDS))
    conn = sqlite3.connect(_db(chain), isolation_level=None)
    try:
        conn.execute(f"UPDATE _audit SET seq = seq + 1 WHERE seq = {last['seq']}")
        conn.execute(f"INSERT INTO _audit ({store.COLUMNS}) VALUES ({marks})", (*fields, before["hash"], digest))
    finally:
        conn.close()
    # The real entry, pushed past the head, shows as inserted; the forgery in its place as edited.
    assert _problems(verify(chain)) == [("inserted", last["seq"] + 1), ("edited", last["seq"])]


# -- access and export ------------------------------------------------------------


def test_only_admins_may_export_or_verify(server: TestServer) -> None:
    user = server.client(server.token("mallory"))
    for name in ("exportAuditLog", "verifyAuditLog"):
        with pytest.raises(Forbidden):
            user.call(name)
        with pytest.raises(Unauthenticated):
            server.client().call(name)
    response = user.http.get("/api/audit/export")
    assert response.status_code == 403 and response.json()["error"]["code"] == "Forbidden"
    response = server.client().http.get("/api/audit/export")
    assert response.status_code == 401 and response.json()["error"]["code"] == "Unauthenticated"


def test_export_json_and_csv_with_filters(server: TestServer) -> None:
    alice, bob = server.client(server.token("alice")), server.client(server.token("bob"))
    alice.call("createTask", title="a1")
    bob.call("createTask", title="b1")
    admin = server.client(server.admin_key)
    mine = admin.call("exportAuditLog", actor="user:alice", table="tasks")
    assert [e["after"]["title"] for e in mine] == ["a1"]
    assert [e["after"]["title"] for e in admin.call("exportAuditLog", actor="bob")] == ["b1"]
    assert admin.call("exportAuditLog", since="2999-01-01") == []
    assert len(admin.call("exportAuditLog", until="2999-01-01T00:00:00+02:00", table="tasks")) == 2
    text = admin.call("exportAuditLog", format="csv", table="tasks")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [json.loads(r["after"])["title"] for r in rows] == ["a1", "b1"]
    assert list(rows[0]) == list(store.FIELDS)


@pytest.mark.parametrize(
    "args",
    [
        {"format": "xml"},
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"since": "2026-02-01", "until": "2026-01-01"},
    ],
)
def test_bad_export_arguments_are_refused_clearly(server: TestServer, args: dict[str, str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        server.client(server.admin_key).call("exportAuditLog", **args)
    assert caught.value.message
    response = server.client(server.admin_key).http.get("/api/audit/export", params=args)
    assert response.status_code == 400 and response.json()["error"]["code"] == "ValidationFailed"


def test_a_too_large_export_points_to_the_download(server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from nanotypedb.audit import admin as audit_admin

    monkeypatch.setattr(audit_admin, "MAX_EXPORT_ENTRIES", 3)
    user = server.client(server.token("alice"))
    for i in range(4):
        user.call("createTask", title=f"t{i}")
    with pytest.raises(AuditExportTooLarge) as caught:
        server.client(server.admin_key).call("exportAuditLog", format="csv", table="tasks")
    assert caught.value.details["download"] == "/api/audit/export?format=csv&table=tasks"
    assert isinstance(caught.value, NanoTypeDBError)


FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "'quoted", 'plain, "with"\nnewline']


@pytest.mark.parametrize("title", FORMULAS)
def test_csv_cells_that_look_like_formulas_are_neutralised_and_round_trip(server: TestServer, title: str) -> None:
    user = server.client(server.token(title))  # the actor id is a cell of its own
    user.call("createTask", title=title)
    for text in (
        server.client(server.admin_key).call("exportAuditLog", format="csv", table="tasks"),
        server.client(server.admin_key).http.get("/api/audit/export", params={"format": "csv"}).text,
    ):
        rows = [r for r in csv.DictReader(io.StringIO(text, newline="")) if r["table"] == "tasks"]
        (row,) = rows
        if title[0] in export.FORMULA_STARTS:
            assert row["actor_id"] == "'" + title
        else:
            assert row["actor_id"] == title
        assert export.restore(row["actor_id"]) == title
        assert json.loads(row["after"])["title"] == title  # inside JSON the cell starts with `{`
        assert not row["after"].startswith(export.FORMULA_STARTS)


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_the_download_streams_every_entry_in_order(server: TestServer, fmt: str) -> None:
    user = server.client(server.token("alice"))
    for i in range(5):
        user.call("createTask", title=f"t{i}")
    response = server.client(server.admin_key).http.get("/api/audit/export", params={"format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(export.MEDIA_TYPES[fmt].split(";")[0])
    if fmt == "json":
        got = response.json()
    elif fmt == "ndjson":
        got = [json.loads(line) for line in response.text.splitlines()]
    else:
        got = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(e["seq"]) for e in got] == [e["seq"] for e in entries(server)]
    assert "attachment" in response.headers["content-disposition"]


def test_an_empty_download_is_still_valid(server: TestServer) -> None:
    response = server.client(server.admin_key).http.get("/api/audit/export", params={"since": "2999-01-01"})
    assert response.json() == []


@pytest.mark.slow
def test_a_million_entry_download_streams_in_constant_memory(audited: TestServer) -> None:
    """The server's memory stays far below the size of the data while it sends a million entries."""
    path = _db(audited)
    n = 1_000_000
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        start = store.parse_head(conn.execute(store.HEAD).fetchone()[0])[0]
        # Valid-looking entries, written by SQL in one go: what is measured is the download.
        conn.execute(
            f"""WITH RECURSIVE n(i) AS (SELECT {start + 1} UNION ALL SELECT i + 1 FROM n WHERE i < {start + n})
            INSERT INTO _audit ({store.COLUMNS})
            SELECT i, '2026-01-01T00:00:00.000000Z', 'dev', 'user', 'u' || (i % 97), 'createTask', 'tasks', i,
                   'insert', NULL, '{{"title":"task ' || i || '","status":"pending"}}', 'rid' || i, '127.0.0.1',
                   printf('%064d', i - 1), printf('%064d', i)
            FROM n"""
        )
        conn.execute("UPDATE _meta SET value = ? WHERE key = 'audit_head'", (f"{start + n} {n:064d}",))
        conn.execute("COMMIT")
    finally:
        conn.close()
    baseline = _rss()
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.monotonic()
    total, lines = 0, 0
    try:
        with audited.client(audited.admin_key).http.stream(
            "GET", "/api/audit/export", params={"format": "csv"}, timeout=120
        ) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                total += len(chunk)
                lines += chunk.count(b"\n")
    finally:
        sampling.set()
        sampler.join()
    assert lines >= n
    assert total > 100_000_000  # over 100 MB sent …
    # … while this process (the server and the client both) grew by a small fraction of that.
    print(f"RSS grew by {(peak[0] - baseline) / 1e6:.1f} MB while sending {total / 1e6:.0f} MB")
    assert peak[0] - baseline < 40_000_000, (peak[0] - baseline, total)
    assert time.monotonic() - began < 60


def _rss() -> int:
    """This process's resident memory, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")
