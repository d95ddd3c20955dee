"""/metrics and /readyz on a real server: calls counted, access enforced, gauges read, readiness reported."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from nanotypedb import App, Ctx, Table, owner_policy
from nanotypedb.jobs.context import JobCtx
from nanotypedb.testing import TestServer, serve

app = App("ops")


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    owner_id: str | None = None


@app.query(name="listNotes")
def list_notes(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("notes").all()


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str) -> dict[str, Any]:
    row = ctx.db.insert("notes", {"text": text})
    ctx.enqueue("touch", {"note": row["id"]})
    return row


@app.job(name="touch")
async def touch(ctx: JobCtx, payload: dict[str, Any]) -> None:
    """Does nothing: the tests only count how jobs end."""


def samples(server: TestServer, credential: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    response = metrics(server, credential)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def metrics(server: TestServer, credential: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {credential}"} if credential else {}
    return httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)


def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[TestServer]:
    """No job workers: queued jobs stay queued."""
    with serve(app, tmp_path / "data", job_workers=0) as server:
        yield server


def test_metrics_count_each_call_by_function_and_outcome(idle: TestServer) -> None:
    alice = idle.client(idle.token("alice"))
    for i in range(3):
        alice.call("addNote", text=f"n{i}")
    alice.post("addNote", {"text": 7})  # ValidationFailed
    alice.post("noSuchFunction", {})
    found = samples(idle)
    assert found[("nanotypedb_calls_total", (("code", "ok"), ("function", "addNote")))] == 3
    assert found[("nanotypedb_calls_total", (("code", "ValidationFailed"), ("function", "addNote")))] == 1
    assert found[("nanotypedb_calls_total", (("code", "FunctionNotFound"), ("function", "_unknown")))] == 1
    assert found[("nanotypedb_call_duration_seconds_count", (("code", "ok"), ("function", "addNote")))] == 3
    assert found[("nanotypedb_commits_total", ())] == 3
    assert found[("nanotypedb_wal_checkpoints_total", ())] >= 0
    assert found[("nanotypedb_wal_writer_checkpoints_total", ())] == 0
    assert found[("nanotypedb_jobs_queued", (("status", "pending"),))] == 3


def test_websocket_calls_connections_and_subscriptions_are_counted(idle: TestServer) -> None:
    headers = {"authorization": f"Bearer {idle.token('alice')}"}
    with connect(idle.ws_url, additional_headers=headers, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "rpc", "id": 1, "name": "addNote", "args": {"text": "a"}}))
        ws.send(json.dumps({"type": "subscribe", "id": "s", "name": "listNotes", "args": {}}))
        kinds = {json.loads(ws.recv(timeout=5))["type"] for _ in range(2)}
        assert "result" in kinds
        found = samples(idle)
        assert found[("nanotypedb_websocket_connections", ())] == 1
        assert found[("nanotypedb_live_subscriptions", ())] == 1
        assert found[("nanotypedb_calls_total", (("code", "ok"), ("function", "addNote")))] == 1
    until(lambda: samples(idle)[("nanotypedb_websocket_connections", ())] == 0)
    assert samples(idle)[("nanotypedb_live_subscriptions", ())] == 0


def test_rate_limit_refusals_are_counted(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", rate_limit="1/m burst 1", job_workers=0) as server:
        alice = server.client(server.token("alice"))
        assert alice.post("listNotes").status_code == 200
        assert alice.post("listNotes").status_code == 429
        found = samples(server)
        assert found[("nanotypedb_rate_limited_total", ())] == 1
        assert found[("nanotypedb_calls_total", (("code", "RateLimited"), ("function", "listNotes")))] == 1


def test_job_outcomes_are_counted_and_the_queue_drains(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", job_workers=2, job_poll=0.05) as server:
        server.client(server.token("alice")).call("addNote", text="x")
        until(lambda: samples(server)[("nanotypedb_jobs_total", (("outcome", "done"),))] == 1)
        found = samples(server)
        assert found[("nanotypedb_jobs_total", (("outcome", "failed"),))] == 0
        assert found[("nanotypedb_jobs_queued", (("status", "pending"),))] == 0


def test_metrics_with_access_key_need_an_admin_key(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", metrics_access="key", job_workers=0) as server:
        anonymous = metrics(server)
        assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "Unauthenticated")
        assert anonymous.json()["error"]["request_id"] == anonymous.headers["x-request-id"]
        user = metrics(server, server.token("alice"))
        assert (user.status_code, user.json()["error"]["code"]) == (403, "Forbidden")
        assert ("nanotypedb_websocket_connections", ()) in samples(server, server.admin_key)


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", metrics_access="off", job_workers=0) as server:
        response = metrics(server, server.admin_key)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "NotFound")


def test_each_server_has_its_own_metrics(tmp_path: Path) -> None:
    with serve(app, tmp_path / "a", job_workers=0) as a, serve(app, tmp_path / "b", job_workers=0) as b:
        a.client(a.token("alice")).call("listNotes")
        assert samples(a)[("nanotypedb_calls_total", (("code", "ok"), ("function", "listNotes")))] == 1
        assert ("nanotypedb_calls_total", (("code", "ok"), ("function", "listNotes"))) not in samples(b)


def test_readyz_reports_ready_with_running_workers(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", job_workers=1) as server:
        response = httpx.get(f"{server.url}/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert body["checks"] == {"databases": True, "started": True, "job_workers": True}


def test_readyz_without_workers_does_not_wait_for_them(idle: TestServer) -> None:
    response = httpx.get(f"{idle.url}/readyz")
    assert response.status_code == 200
    assert "job_workers" not in response.json()["checks"]


def test_readyz_is_503_once_the_database_is_closed(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data", job_workers=1) as server:
        assert server.service is not None
        server.service.engine.close()
        response = httpx.get(f"{server.url}/readyz")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "ServiceUnavailable"
        assert error["details"]["checks"]["databases"] is False
        assert "databases" in error["message"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # the process is still up
        assert metrics(server).status_code == 200  # /metrics still answers, without the queue
