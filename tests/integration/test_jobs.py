"""The job queue through the public API: jobs written with their mutation, retried, dead-lettered, re-driven."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanotypedb import App, Ctx, RowNotFound, Table, owner_policy
from nanotypedb.jobs.context import JobCtx
from nanotypedb.storage import jobs as store
from nanotypedb.testing import TestServer, serve, wait_for

app = App("queue")


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    seen: int = 0  # how many times the `mark` job ran for this note
    owner_id: str | None = None


@app.table
class Attempt(Table, table="attempts"):  # admin-only: written by jobs
    key: str
    at: float


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str, job: str = "mark", fail: bool = False) -> dict[str, Any]:
    row = ctx.db.insert("notes", {"text": text})
    ctx.enqueue(job, {"note": row["id"], "key": text})
    if fail:
        raise RowNotFound("The mutation failed after queueing its job.")
    return row


@app.query(name="getNote")
def get_note(ctx: Ctx, id: int) -> dict[str, Any] | None:
    return ctx.db.get("notes", id)


@app.query(name="queueFromQuery")
def queue_from_query(ctx: Ctx) -> int:
    return ctx.enqueue("mark", {})


def _record(db: Any, key: str) -> int:
    db.insert("attempts", {"key": key, "at": time.time()})
    return int(db.count("attempts", key=key))


@app.job(name="mark", backoff=0.05)
async def mark(ctx: JobCtx, payload: dict[str, Any]) -> None:
    def write(db: Any) -> None:
        note = db.get("notes", payload["note"])
        db.update("notes", note["id"], {"seen": note["seen"] + 1})
        _record(db, payload["key"])

    await ctx.write(write)


@app.job(name="flaky", retries=3, backoff=0.1)
async def flaky(ctx: JobCtx, payload: dict[str, Any]) -> None:
    """Fails on its first two attempts, then marks the note."""
    count = await ctx.write(lambda db: _record(db, payload["key"]))
    if count < 3:
        raise RuntimeError(f"attempt {count} failed")
    await mark(ctx, payload)


@app.job(name="broken", retries=2, backoff=0.02)
def broken(ctx: JobCtx, payload: dict[str, Any]) -> None:
    """A plain `def` handler (run in a thread) that always fails."""
    ctx.write_sync(lambda db: _record(db, payload["key"]))
    raise ValueError(f"cannot handle {payload['key']}")


@app.job(name="slow", retries=0, timeout=0.2)
async def slow(ctx: JobCtx, payload: dict[str, Any]) -> None:
    await asyncio.sleep(5)


@app.job(name="chain", backoff=0.05)
async def chain(ctx: JobCtx, payload: dict[str, Any]) -> None:
    await ctx.write(lambda db: db.enqueue("mark", payload))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path, job_poll=0.05) as srv:
        yield srv


def jobs_of(server: TestServer) -> list[store.Job]:
    assert server.service is not None
    return server.service.engine.read_sync(lambda tx: store.listing(tx.conn, None, None, 1000)).value


def attempts(server: TestServer, key: str) -> list[float]:
    assert server.service is not None
    rows = server.service.engine.read_sync(
        lambda tx: tx.conn.execute("SELECT at FROM attempts WHERE key = ? ORDER BY id", (key,)).fetchall()
    ).value
    return [r[0] for r in rows]


def test_a_committed_mutations_job_runs_once_and_leaves_the_queue(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    note = alice.call("addNote", text="one")
    wait_for(lambda: alice.call("getNote", id=note["id"])["seen"] == 1)
    wait_for(lambda: jobs_of(server) == [])
    assert len(attempts(server, "one")) == 1


def test_a_rolled_back_mutation_queues_nothing(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    response = alice.post("addNote", {"text": "ghost", "fail": True})
    assert response.status_code == 404
    time.sleep(0.3)
    assert jobs_of(server) == []
    assert attempts(server, "ghost") == []


def test_a_failing_job_is_retried_with_growing_waits_then_succeeds(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    note = alice.call("addNote", text="flaky", job="flaky")
    wait_for(lambda: alice.call("getNote", id=note["id"])["seen"] == 1)
    times = attempts(server, "flaky")
    assert len(times) == 4  # three attempts of `flaky` (the third succeeds), one mark
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert first_wait >= 0.05  # backoff 0.1 s, at least half of it
    assert second_wait >= 0.1  # doubled


def test_a_job_that_always_fails_is_dead_lettered_with_its_history(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    alice.call("addNote", text="doomed", job="broken")
    dead = wait_for(lambda: [j for j in jobs_of(server) if j.status == "dead"])
    (job,) = dead
    assert job.attempts == 3 and job.max_attempts == 3
    assert [e["attempt"] for e in job.errors] == [1, 2, 3]
    assert all(e["error"] == "ValueError: cannot handle doomed" for e in job.errors)
    assert len(attempts(server, "doomed")) == 3


def test_a_job_past_its_timeout_fails(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    alice.call("addNote", text="sleepy", job="slow")
    (job,) = wait_for(lambda: [j for j in jobs_of(server) if j.status == "dead"])
    assert job.errors[0]["error"] == "Timeout: the handler ran longer than 0.2 s."


def test_a_job_whose_worker_died_is_claimed_again_after_its_lease(server: TestServer) -> None:
    assert server.service is not None
    alice = server.client(server.token("alice"))

    def orphan(tx: Any) -> int:
        tx.conn.execute("INSERT INTO notes (text, seen, owner_id) VALUES ('orphan', 0, 'alice')")
        note_id = tx.conn.execute("SELECT max(id) FROM notes").fetchone()[0]
        # Claimed by a worker that then died: running, its lease already over.
        tx.conn.execute(
            "INSERT INTO _jobs (queue, payload, status, attempts, max_attempts, run_at, lease_until, worker,"
            " created_at) VALUES ('mark', ?, 'running', 1, 4, 0, ?, 'dead-worker', 0)",
            (f'{{"note": {note_id}, "key": "orphan"}}', time.time() - 1),
        )
        return int(note_id)

    note_id = server.service.engine.write_sync(orphan).value
    wait_for(lambda: alice.call("getNote", id=note_id)["seen"] == 1)


def test_a_handler_can_queue_more_jobs_atomically_with_its_write(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    note = alice.call("addNote", text="chained", job="chain")
    wait_for(lambda: alice.call("getNote", id=note["id"])["seen"] == 1)


def test_queueing_an_unknown_job_fails_the_mutation_and_writes_nothing(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    response = alice.post("addNote", {"text": "lost", "job": "nobody"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalError"
    assert jobs_of(server) == []
    assert alice.call("getNote", id=1) is None


def test_a_query_cannot_queue_jobs(server: TestServer) -> None:
    response = server.client(server.token("alice")).post("queueFromQuery", {})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "Forbidden")


def test_admins_list_redrive_and_purge_dead_jobs(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    admin = server.client(server.admin_key)
    alice.call("addNote", text="first", job="broken")
    alice.call("addNote", text="second", job="broken")
    wait_for(lambda: admin.call("listJobs", status="dead")["counts"]["dead"] == 2)
    listed = admin.call("listJobs", status="dead")
    assert [j["payload"]["key"] for j in listed["jobs"]] == ["first", "second"]
    first_id = listed["jobs"][0]["id"]
    assert admin.call("redriveJobs", ids=[first_id]) == {"redriven": 1}
    # Re-driven, it fails its three attempts again and is dead once more.
    wait_for(lambda: len(attempts(server, "first")) == 6)
    wait_for(lambda: admin.call("listJobs", status="dead")["counts"]["dead"] == 2)
    assert admin.call("purgeJobs", status="dead") == {"purged": 2}
    assert admin.call("listJobs")["counts"] == {"pending": 0, "running": 0, "dead": 0}


@pytest.mark.parametrize("name", ["listJobs", "redriveJobs", "purgeJobs"])
def test_only_admins_manage_jobs(server: TestServer, name: str) -> None:
    response = server.client(server.token("alice")).post(name, {})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "Forbidden")


def test_jobs_queued_before_a_restart_run_after_it(tmp_path: Path) -> None:
    with serve(app, tmp_path, job_workers=0) as srv:  # no workers: the job stays queued
        note = srv.client(srv.token("alice")).call("addNote", text="later")
        time.sleep(0.2)
        assert [j.status for j in jobs_of(srv)] == ["pending"]
    with serve(app, tmp_path, job_poll=0.05) as srv:
        alice = srv.client(srv.token("alice"))
        wait_for(lambda: alice.call("getNote", id=note["id"])["seen"] == 1)
