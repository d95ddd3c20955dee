"""The query cache: served from memory until a commit touches what the query read, never across callers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.functions.cache import QueryCache
from nanotypedb.testing import TestServer, serve


@pytest.fixture
def cache_server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(tasks_app, tmp_path / "data") as server:
        yield server


def _cache(server: TestServer) -> QueryCache:
    assert server.service is not None
    return server.service.runtime.cache


def test_a_repeated_query_is_a_hit_and_a_touching_write_evicts_it(cache_server: TestServer) -> None:
    alice = cache_server.client(cache_server.token("alice"))
    alice.call("createTask", title="one")
    cache = _cache(cache_server)
    first = alice.call("listTasks")
    hits = cache.hits
    assert alice.call("listTasks") == first
    assert cache.hits == hits + 1
    alice.call("createTask", title="two")
    assert [t["title"] for t in alice.call("listTasks")] == ["two", "one"]  # fresh, not the cached list


def test_another_users_write_keeps_the_entry(cache_server: TestServer) -> None:
    alice = cache_server.client(cache_server.token("alice"))
    bob = cache_server.client(cache_server.token("bob"))
    alice.call("listTasks")
    cache = _cache(cache_server)
    bob.call("createTask", title="bob's")
    hits = cache.hits
    alice.call("listTasks")
    assert cache.hits == hits + 1  # bob's row cannot match owner_id = alice


def test_callers_never_share_an_entry(cache_server: TestServer) -> None:
    alice = cache_server.client(cache_server.token("alice"))
    bob = cache_server.client(cache_server.token("bob"))
    alice.call("createTask", title="alice's")
    assert [t["title"] for t in alice.call("listTasks")] == ["alice's"]
    assert bob.call("listTasks") == []  # same function and arguments, other caller
    assert cache_server.client(cache_server.admin_key).call("countTasks") == 1


def test_claims_other_than_expiry_key_the_entry(cache_server: TestServer) -> None:
    plain = cache_server.client(cache_server.token("alice"))
    admin_role = cache_server.client(cache_server.token("alice", extra_claims={"role": "editor"}))
    plain.call("listTasks")
    misses = _cache(cache_server).misses
    admin_role.call("listTasks")
    assert _cache(cache_server).misses == misses + 1


def test_writes_from_another_thread_evict_too(cache_server: TestServer) -> None:
    from nanotypedb.auth.principal import user
    from nanotypedb.functions.db import Db

    alice = cache_server.client(cache_server.token("alice"))
    assert alice.call("countTasks") == 0
    assert cache_server.service is not None
    cache_server.service.engine.write_sync(lambda tx: Db(tx, user("alice")).insert("tasks", {"title": "sync"}))
    assert alice.call("countTasks") == 1


def test_a_result_is_not_kept_when_the_cache_is_off(tmp_path: Path) -> None:
    with serve(tasks_app, tmp_path / "data", query_cache_entries=0) as server:
        alice = server.client(server.token("alice"))
        alice.call("listTasks")
        alice.call("listTasks")
        assert len(_cache(server)) == 0 and _cache(server).hits == 0


def test_the_reply_carries_the_current_version(cache_server: TestServer) -> None:
    alice = cache_server.client(cache_server.token("alice"))
    bob = cache_server.client(cache_server.token("bob"))
    alice.call("listTasks")
    bob.call("createTask", title="moves the version on")
    alice.call("listTasks")
    assert alice.last_version == bob.last_version
