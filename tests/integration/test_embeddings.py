"""Embedded tables end to end: the bundled tasks app against a real misbehaving provider on 127.0.0.1.

A task's title is embedded by the built-in `_embed` job: `vector_status` goes pending → indexed | failed, the job
retries through timeouts, 500s and 429s, is dead-lettered when the provider keeps failing and re-driven once it
recovers; the AI gateway's cache spares the provider a text it has seen; a stale job never overwrites a newer
vector; `searchTasks` ranks the caller's tasks only. Everything goes through HTTP (`createTask`, `searchTasks`,
`listJobs`, `redriveJobs`); the files are read only to check what was stored.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from _misbehaving import MisbehavingProvider

from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.testing import HttpClient, TestServer, serve, wait_for

DIMS = 8
MODEL = "mini"
BACKOFF = 0.05  # the `_embed` job's first retry waits 0.025-0.05 s, then doubling


@pytest.fixture
def provider() -> Iterator[MisbehavingProvider]:
    # `timeout` holds a request 1 s: past a server's 0.5 s embedding timeout, within a patient server's 5 s.
    with MisbehavingProvider(dims=DIMS, hang=1.0) as running:
        yield running


@contextlib.contextmanager
def embedding_server(tmp_path: Path, provider: MisbehavingProvider, **settings: Any) -> Iterator[TestServer]:
    """The tasks app embedding through `provider`, with fast retries and polling."""
    values = {
        "embedding_provider": "openai",
        "embedding_url": provider.url,
        "embedding_model": MODEL,
        "embedding_dims": DIMS,
        "embedding_timeout": 0.5,
        "embedding_backoff": BACKOFF,
        "job_poll": 0.05,
        **settings,
    }
    with serve(tasks_app, tmp_path / "data", **values) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, provider: MisbehavingProvider) -> Iterator[TestServer]:
    with embedding_server(tmp_path, provider) as running:
        yield running


def status_of(client: HttpClient, task_id: int) -> str | None:
    return client.call("getTask", id=task_id)["vector_status"]


def wait_status(client: HttpClient, task_id: int, status: str, timeout: float = 5.0) -> dict[str, Any]:
    wait_for(lambda: status_of(client, task_id) == status, timeout)
    return dict(client.call("getTask", id=task_id))


def embed_jobs(admin: HttpClient, status: str | None = None) -> list[dict[str, Any]]:
    args = {"queue": "_embed"} | ({"status": status} if status else {})
    return list(admin.call("listJobs", **args)["jobs"])


def cosine(a: str, b: str) -> float:
    va, vb = (np.asarray(MisbehavingProvider.vector(t, DIMS), dtype=np.float64) for t in (a, b))
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


@contextlib.contextmanager
def read_file(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to one of the server's SQLite files, closed afterwards."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def db_file(server: TestServer) -> Path:
    return Path(server.config.data_dir) / "env" / "dev" / "db.sqlite3"


def ai_file(server: TestServer) -> Path:
    return Path(server.config.data_dir) / "env" / "dev" / "ai.sqlite3"


def stored_hash(server: TestServer, task_id: int) -> str | None:
    with read_file(db_file(server)) as conn:
        row = conn.execute(
            "SELECT content_hash FROM _vectors WHERE tbl = 'tasks' AND row_id = ?", (task_id,)
        ).fetchone()
    return None if row is None else str(row[0])


def title_hash(title: str) -> str:
    """The content hash of a task whose embedded content is this title (`embed=("title",)`)."""
    return hashlib.sha256(orjson.dumps([title])).hexdigest()


# --- 1. pending → indexed, and search ---------------------------------------------------------------------------


def test_a_created_task_goes_pending_then_indexed_and_search_ranks_by_cosine(
    server: TestServer, provider: MisbehavingProvider
) -> None:
    alice = server.client(server.token("alice"))
    titles = ["write the release notes", "water the plants", "book the venue", "fix the flaky test"]
    created = [alice.call("createTask", title=t) for t in titles]
    assert [t["vector_status"] for t in created] == ["pending"] * 4  # as committed, before any job ran
    for task in created:
        wait_status(alice, task["id"], "indexed")
    assert sorted(provider.texts) == sorted(titles)
    assert all(r.model == MODEL for r in provider.requests)
    for task in created:
        assert stored_hash(server, task["id"]) == title_hash(task["title"])

    query = "water the plants"
    found = alice.call("searchTasks", query=query, k=10)
    assert found[0]["title"] == query
    assert found[0]["_score"] == pytest.approx(1.0, abs=1e-5)
    # The provider's vectors are fixed per text: the ranking is their cosine with the query's, best first.
    expected = sorted(titles, key=lambda t: cosine(query, t), reverse=True)
    assert [r["title"] for r in found] == expected
    assert [r["_score"] for r in found] == pytest.approx([cosine(query, t) for t in expected], abs=1e-5)
    assert [r["title"] for r in alice.call("searchTasks", query=query, k=2)] == expected[:2]


def test_search_with_the_hashing_embedder_ranks_shared_words_first(tmp_path: Path) -> None:
    with serve(tasks_app, tmp_path / "data", embedding_provider="hashing", job_poll=0.05) as server:
        alice = server.client(server.token("alice"))
        titles = ["write the search docs", "buy milk and eggs", "water the garden plants"]
        created = [alice.call("createTask", title=t) for t in titles]
        for task in created:
            wait_status(alice, task["id"], "indexed")
        found = alice.call("searchTasks", query="search docs", k=3)
        assert found[0]["title"] == "write the search docs"
        scores = [r["_score"] for r in found]
        assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]
        assert alice.call("searchTasks", query="milk eggs", k=1)[0]["title"] == "buy milk and eggs"


def test_an_edit_of_other_columns_keeps_the_vector(server: TestServer, provider: MisbehavingProvider) -> None:
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="renew the passport")
    wait_status(alice, task["id"], "indexed")
    sent = provider.count
    done = alice.call("completeTask", id=task["id"])
    assert (done["status"], done["vector_status"]) == ("completed", "indexed")
    time.sleep(0.2)
    assert embed_jobs(server.client(server.admin_key)) == []
    assert provider.count == sent  # no new embedding for an unchanged title


def test_search_refuses_a_k_out_of_range(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    for k in (0, 1001):
        response = alice.post("searchTasks", {"query": "anything", "k": k})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "ValidationFailed"), response.text


def test_without_a_provider_tasks_are_not_embedded_and_search_is_unavailable(tmp_path: Path) -> None:
    with serve(tasks_app, tmp_path / "data", embedding_provider="none", job_poll=0.05) as server:
        alice = server.client(server.token("alice"))
        task = alice.call("createTask", title="no embeddings here")
        assert task["vector_status"] is None
        assert server.client(server.admin_key).call("listJobs")["counts"]["pending"] == 0
        response = alice.post("searchTasks", {"query": "no embeddings here"})
        assert (response.status_code, response.json()["error"]["code"]) == (503, "ServiceUnavailable")


# --- 2. failures, retries with backoff, recovery ----------------------------------------------------------------


def test_a_timeout_a_500_and_a_429_are_retried_with_backoff_then_the_task_is_indexed(
    server: TestServer, provider: MisbehavingProvider
) -> None:
    provider.script("timeout", "500", "429")  # the fourth request, the job's last attempt, succeeds
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="survive a flaky provider")
    wait_status(alice, task["id"], "indexed")
    assert [r.mode for r in provider.requests] == ["timeout", "500", "429", "ok"]
    assert provider.texts == ["survive a flaky provider"] * 4
    assert stored_hash(server, task["id"]) == title_hash("survive a flaky provider")
    assert embed_jobs(server.client(server.admin_key)) == []  # done: it left the queue
    with read_file(ai_file(server)) as conn:
        calls = conn.execute("SELECT at, latency_ms, error, reason FROM calls ORDER BY at").fetchall()
    assert [c[2] for c in calls] == ["UpstreamError", "UpstreamError", "UpstreamError", None]
    assert "timeout" in calls[0][3] and "HTTP 500" in calls[1][3] and "429" in calls[2][3]
    # Exponential backoff: the n-th retry waits at least half of BACKOFF * 2^(n-1) after the failure.
    ends = [at + latency / 1000 for at, latency, _, _ in calls]
    waits = [start - end for start, end in zip([c[0] for c in calls[1:]], ends, strict=False)]
    for n, wait in enumerate(waits, start=1):
        assert wait >= BACKOFF * 2 ** (n - 1) / 2 - 0.005, waits


def test_a_retrying_job_shows_each_failure_in_its_history_while_it_is_pending(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    with embedding_server(tmp_path, provider, embedding_retries=10, embedding_timeout=0.3) as server:
        alice = server.client(server.token("alice"))
        admin = server.client(server.admin_key)
        provider.always("timeout")
        task = alice.call("createTask", title="keep trying")

        def failed_with(text: str) -> list[dict[str, Any]] | None:
            jobs = embed_jobs(admin)
            if len(jobs) == 1 and any(text in e["error"] for e in jobs[0]["errors"]):
                return jobs
            return None

        (job,) = wait_for(lambda: failed_with("timeout"))
        assert job["payload"] == {"table": "tasks", "id": task["id"], "hash": title_hash("keep trying")}
        assert job["max_attempts"] == 11
        assert status_of(alice, task["id"]) == "pending"  # not failed before its last attempt
        provider.always("500")
        wait_for(lambda: failed_with("HTTP 500"))
        provider.always("429")
        (job,) = wait_for(lambda: failed_with("429"))
        assert job["status"] in ("pending", "running")
        errors = job["errors"]
        assert [e["attempt"] for e in errors] == list(range(1, len(errors) + 1))
        assert all(e["error"].startswith("UpstreamError: ") for e in errors)
        assert all("timeout" in e["error"] or "HTTP 500" in e["error"] or "429" in e["error"] for e in errors)
        assert status_of(alice, task["id"]) == "pending"
        provider.always("ok")
        wait_status(alice, task["id"], "indexed", timeout=5)
        assert admin.call("listJobs")["counts"] == {"pending": 0, "running": 0, "dead": 0}
        assert alice.call("searchTasks", query="keep trying", k=1)[0]["id"] == task["id"]


# --- 3. dead letter, then re-drive ------------------------------------------------------------------------------


def test_a_persistent_failure_is_dead_lettered_as_failed_and_a_redrive_after_recovery_indexes_it(
    server: TestServer, provider: MisbehavingProvider
) -> None:
    alice = server.client(server.token("alice"))
    admin = server.client(server.admin_key)
    provider.always("500")
    task = alice.call("createTask", title="doomed until redriven")
    wait_status(alice, task["id"], "failed")
    (job,) = wait_for(lambda: embed_jobs(admin, "dead"))
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("dead", 4, 4)  # the seed's 3 retries
    assert [e["attempt"] for e in job["errors"]] == [1, 2, 3, 4]
    assert all("HTTP 500" in e["error"] and "the model crashed" in e["error"] for e in job["errors"])
    assert provider.count == 4
    assert stored_hash(server, task["id"]) is None
    # A search needs the provider too (for its query): it fails with 502, saying why.
    response = alice.post("searchTasks", {"query": "doomed until redriven"})
    assert (response.status_code, response.json()["error"]["code"]) == (502, "UpstreamError")
    assert response.json()["error"]["details"]["status"] == 500
    # The dead job stays dead: nobody retries it.
    time.sleep(0.3)
    assert provider.count == 5  # the search's own request
    assert admin.call("listJobs")["counts"]["dead"] == 1

    provider.always("ok")
    assert admin.call("redriveJobs", ids=[job["id"]]) == {"redriven": 1}
    wait_status(alice, task["id"], "indexed")
    assert admin.call("listJobs")["counts"] == {"pending": 0, "running": 0, "dead": 0}
    assert stored_hash(server, task["id"]) == title_hash("doomed until redriven")
    assert alice.call("searchTasks", query="doomed until redriven", k=1)[0]["id"] == task["id"]


# --- 4. the gateway's cache -------------------------------------------------------------------------------------


def test_the_cache_answers_a_repeated_text_without_calling_the_provider(
    server: TestServer, provider: MisbehavingProvider
) -> None:
    alice = server.client(server.token("alice"))
    bob = server.client(server.token("bob"))
    first = alice.call("createTask", title="same title")
    wait_status(alice, first["id"], "indexed")
    second = bob.call("createTask", title="same title")
    wait_status(bob, second["id"], "indexed")
    assert provider.texts == ["same title"]  # one call for both tasks
    # A search for the same text is a cache hit too.
    assert [r["id"] for r in alice.call("searchTasks", query="same title")] == [first["id"]]
    assert [r["id"] for r in bob.call("searchTasks", query="same title")] == [second["id"]]
    assert provider.count == 1
    with read_file(ai_file(server)) as conn:
        hits, misses = conn.execute("SELECT sum(cache_hits), sum(cache_misses) FROM counters").fetchone()
    assert (hits, misses) == (3, 1)


def test_a_failed_call_caches_nothing(server: TestServer, provider: MisbehavingProvider) -> None:
    provider.script("500")
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="not cached when failing")
    wait_status(alice, task["id"], "indexed")
    assert provider.texts == ["not cached when failing"] * 2


# --- 5. a stale job does not overwrite --------------------------------------------------------------------------


def test_a_stale_job_does_not_overwrite_the_vector_of_a_newer_title(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    # A patient server: the provider's first answer takes 1 s (`timeout` mode), within the 5 s timeout.
    with embedding_server(tmp_path, provider, embedding_timeout=5.0) as server:
        alice = server.client(server.token("alice"))
        provider.script("timeout")
        task = alice.call("createTask", title="old title")
        wait_for(lambda: provider.count == 1)  # the first job is at the provider, holding the old title
        edited = alice.call("updateTask", id=task["id"], title="new title")
        assert edited["vector_status"] == "pending"
        wait_status(alice, task["id"], "indexed")
        wait_for(lambda: embed_jobs(server.client(server.admin_key)) == [])
        assert provider.texts == ["old title", "new title"]  # the old job did get its vector, late
        time.sleep(0.2)  # nothing else is on its way
        assert stored_hash(server, task["id"]) == title_hash("new title")
        assert status_of(alice, task["id"]) == "indexed"
        (found,) = alice.call("searchTasks", query="new title", k=1)
        assert (found["id"], found["title"]) == (task["id"], "new title")
        assert found["_score"] == pytest.approx(1.0, abs=1e-5)
        (old,) = alice.call("searchTasks", query="old title", k=1)
        assert old["_score"] == pytest.approx(cosine("old title", "new title"), abs=1e-5)


def test_a_stale_job_failing_its_last_attempt_does_not_mark_the_newer_title_failed(
    server: TestServer, provider: MisbehavingProvider
) -> None:
    alice = server.client(server.token("alice"))
    admin = server.client(server.admin_key)
    # The first job fails three times, and its last attempt is held at the provider past the 0.5 s timeout.
    provider.script("500", "500", "500", "timeout")
    task = alice.call("createTask", title="first draft")
    wait_for(lambda: provider.count == 4)
    alice.call("updateTask", id=task["id"], title="second draft")  # while the last attempt is in flight
    (dead,) = wait_for(lambda: embed_jobs(admin, "dead"))
    assert dead["payload"]["hash"] == title_hash("first draft") and len(dead["errors"]) == 4
    wait_status(alice, task["id"], "indexed")  # never `failed`: that verdict was about the first draft
    wait_for(lambda: embed_jobs(admin, "pending") == [] and embed_jobs(admin, "running") == [])
    assert stored_hash(server, task["id"]) == title_hash("second draft")
    assert provider.texts == ["first draft"] * 4 + ["second draft"]


# --- 6. row-level security --------------------------------------------------------------------------------------


def test_a_users_search_never_returns_another_users_tasks(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    bob = server.client(server.token("bob"))
    alices = [alice.call("createTask", title=f"alice secret {i}") for i in range(6)]
    bobs = [bob.call("createTask", title=t) for t in ("bob groceries", "bob dentist")]
    for task in alices:
        wait_status(alice, task["id"], "indexed")
    for task in bobs:
        wait_status(bob, task["id"], "indexed")
    # Alice's titles are the best matches (score 1) of these queries; bob still sees only his own.
    for i in range(6):
        found = bob.call("searchTasks", query=f"alice secret {i}", k=10)
        assert sorted(r["id"] for r in found) == sorted(t["id"] for t in bobs)
        assert all(r["owner_id"] == "bob" for r in found)
    found = alice.call("searchTasks", query="alice secret 3", k=3)
    assert found[0]["id"] == alices[3]["id"] and all(r["owner_id"] == "alice" for r in found)
    assert len(found) == 3
    admin = server.client(server.admin_key)
    assert len(admin.call("searchTasks", query="alice secret 3", k=10)) == 8  # an admin sees every row


def test_anonymous_callers_cannot_search(server: TestServer, provider: MisbehavingProvider) -> None:
    alice = server.client(server.token("alice"))
    task = alice.call("createTask", title="private plans")
    wait_status(alice, task["id"], "indexed")
    sent = provider.count
    response = server.client().post("searchTasks", {"query": "plans of somebody else"})
    assert (response.status_code, response.json()["error"]["code"]) == (401, "Unauthenticated")
    assert "private plans" not in response.text
    assert provider.count == sent  # refused before any embedding


# --- 7. deletion ------------------------------------------------------------------------------------------------


def test_a_deleted_task_leaves_the_search_results_and_its_vector_the_file(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    keep = alice.call("createTask", title="keep me")
    drop = alice.call("createTask", title="drop me")
    for task in (keep, drop):
        wait_status(alice, task["id"], "indexed")
    assert alice.call("searchTasks", query="drop me", k=1)[0]["id"] == drop["id"]
    alice.call("deleteTask", id=drop["id"])
    assert [r["id"] for r in alice.call("searchTasks", query="drop me", k=10)] == [keep["id"]]
    assert stored_hash(server, drop["id"]) is None


def test_deleting_a_task_while_its_job_is_queued_ends_the_job_quietly(
    server: TestServer, provider: MisbehavingProvider
) -> None:
    alice = server.client(server.token("alice"))
    provider.always("500")
    task = alice.call("createTask", title="short-lived")
    wait_for(lambda: provider.count >= 1)
    alice.call("deleteTask", id=task["id"])
    provider.always("ok")
    wait_for(lambda: embed_jobs(server.client(server.admin_key)) == [])  # the retry sees no row: done
    assert stored_hash(server, task["id"]) is None
    assert alice.call("searchTasks", query="short-lived", k=10) == []


# --- the index survives a restart -------------------------------------------------------------------------------


def test_vectors_survive_a_restart_without_embedding_the_rows_again(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    with embedding_server(tmp_path, provider) as server:
        alice = server.client(server.token("alice"))
        task = alice.call("createTask", title="remember me")
        wait_status(alice, task["id"], "indexed")
        assert alice.call("searchTasks", query="remember me", k=1)[0]["id"] == task["id"]
    sent = provider.count
    with embedding_server(tmp_path, provider) as server:
        alice = server.client(server.token("alice"))
        (found,) = alice.call("searchTasks", query="remember me", k=1)
        assert found["id"] == task["id"] and found["_score"] == pytest.approx(1.0, abs=1e-5)
    assert provider.count == sent  # the row's vector from the file, the query's from the cache


# --- shutdown -----------------------------------------------------------------------------------------------------


def test_stopping_the_server_closes_its_connections_to_the_provider(tmp_path: Path) -> None:
    problems: list[str] = []
    hooks = sys.unraisablehook, threading.excepthook
    with MisbehavingProvider(dims=DIMS) as provider:  # keep-alive, as real providers do
        server = TestServer(
            tasks_app,
            tmp_path / "data",
            embedding_provider="openai",
            embedding_url=provider.url,
            embedding_model=MODEL,
            embedding_dims=DIMS,
            job_poll=0.05,
        ).start()
        try:
            alice = server.client(server.token("alice"))
            task = alice.call("createTask", title="a kept-alive connection")
            wait_status(alice, task["id"], "indexed")
            sys.unraisablehook = lambda u: problems.append(f"{u.exc_type.__name__}: {u.exc_value}")
            threading.excepthook = lambda e: problems.append(f"{e.exc_type.__name__}: {e.exc_value}")
        finally:
            try:
                server.stop()
                if server.service is not None and server.service.ai is not None:
                    for embedder in server.service.ai.embedders.values():
                        vars(embedder).pop("_client", None)  # let go of a leaked pool now, not at exit
                gc.collect()  # so its transports are freed (and reported) while the hooks listen
            finally:
                sys.unraisablehook, threading.excepthook = hooks
    assert problems == [], problems


def test_with_dimensions_learned_from_the_provider_a_fresh_server_indexes_and_searches(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:  # 0, the default: the first answer's
        alice = server.client(server.token("alice"))
        task = alice.call("createTask", title="learn my size")
        wait_status(alice, task["id"], "indexed")
        assert alice.call("searchTasks", query="learn my size", k=1)[0]["id"] == task["id"]


def test_with_dimensions_learned_from_the_provider_a_cached_query_works_after_a_restart(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:
        alice = server.client(server.token("alice"))
        task = alice.call("createTask", title="cached before the restart")
        wait_status(alice, task["id"], "indexed")
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:
        alice = server.client(server.token("alice"))
        response = alice.post("searchTasks", {"query": "cached before the restart", "k": 1})
        assert response.status_code == 200, response.text


def test_with_dimensions_learned_from_the_provider_a_cached_title_is_indexed_after_a_restart(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:
        alice = server.client(server.token("alice"))
        first = alice.call("createTask", title="a title seen before")
        wait_status(alice, first["id"], "indexed")
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:
        alice = server.client(server.token("alice"))
        admin = server.client(server.admin_key)
        second = alice.call("createTask", title="a title seen before")
        wait_for(lambda: status_of(alice, second["id"]) != "pending" or embed_jobs(admin, "dead"), timeout=3)
        assert status_of(alice, second["id"]) == "indexed", embed_jobs(admin)


def test_with_dimensions_learned_from_the_provider_vectors_survive_a_restart(
    tmp_path: Path, provider: MisbehavingProvider
) -> None:
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:
        alice = server.client(server.token("alice"))
        task = alice.call("createTask", title="remember my size")
        wait_status(alice, task["id"], "indexed")
    with embedding_server(tmp_path, provider, embedding_dims=0) as server:
        alice = server.client(server.token("alice"))
        # A query the provider has not seen (a cached one fails, see above): the only task is the best match.
        assert [r["id"] for r in alice.call("searchTasks", query="something new", k=1)] == [task["id"]]
