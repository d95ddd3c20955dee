"""The client's local state without a server: stacked optimistic effects, how each ends, custom updates, the
subscription iterator's skip-ahead, and the reconnection backoff."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pytest

from nanotypedb.client import AsyncClient, Backoff, Store, Subscription
from nanotypedb.client.local import LocalState

COLUMNS = ["id", "title", "status", "owner_id"]
INSERT = {
    "kind": "insert",
    "table": "tasks",
    "columns": COLUMNS,
    "defaults": {"status": "pending"},
    "owner": "owner_id",
}
DELETE = {"kind": "delete", "table": "tasks", "id": "id"}
READS = [{"table": "tasks", "kind": "rows", "filters": {}, "order": [["id", "desc"]], "limit": 10}]


@dataclass
class Query:
    name: str = "listTasks"
    args: dict[str, Any] = field(default_factory=dict)
    data: Any = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=lambda: READS)


def shown(state: LocalState, query: Query) -> list[Any]:
    return [row["id"] for row in state.views({1: query})[1]]


def test_pending_mutations_stack_and_each_ends_on_its_own() -> None:
    state, query = LocalState(), Query(data=[{"id": 1, "title": "a"}])
    first = state.add("createTask", {"title": "b"}, INSERT, "alice")
    second = state.add("deleteTask", {"id": 1}, DELETE, "alice")
    third = state.add("createTask", {"title": "c"}, INSERT, "alice")
    assert shown(state, query) == ["optimistic:3", "optimistic:1"]
    state.remove(second)  # refused: the deleted row comes back, the inserts stay
    assert shown(state, query) == ["optimistic:3", "optimistic:1", 1]
    state.confirm(first, {"id": 2, "title": "b", "status": "pending", "owner_id": "alice"}, version=5, seen=4)
    assert shown(state, query) == ["optimistic:3", 2, 1]  # the server's row, real id, until a transition at 5
    state.drop_seen(4)
    assert first in state.pending
    query.data = [{"id": 2, "title": "b"}, {"id": 1, "title": "a"}]
    state.drop_seen(5)
    assert state.pending == [third]
    assert shown(state, query) == ["optimistic:3", 2, 1]


def test_an_answer_already_seen_drops_the_mutation_at_once() -> None:
    state = LocalState()
    mutation = state.add("createTask", {"title": "b"}, INSERT, None)
    state.confirm(mutation, {"id": 2}, version=3, seen=3)
    assert state.pending == []


def test_a_custom_update_edits_the_store_and_a_failing_one_shows_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def pin(store: Store, args: dict[str, Any]) -> None:
        rows = store.get_query("listTasks")
        rows[0]["pinned"] = True  # a copy: editing it changes nothing until set_query
        store.set_query("listTasks", {}, rows)
        assert store.get_query("listTasks", {"other": 1}) is None

    def broken(store: Store, args: dict[str, Any]) -> None:
        store.set_query("listTasks", None, [])
        raise ValueError("bug")

    state, query = LocalState(), Query(data=[{"id": 1}])
    state.add("pin", {}, {"kind": "custom", "name": "pin"}, None, pin)
    state.add("wipe", {}, {"kind": "custom", "name": "wipe"}, None, broken)
    with caplog.at_level(logging.ERROR):
        assert state.views({1: query})[1] == [{"id": 1, "pinned": True}]
    assert query.data == [{"id": 1}]
    assert "wipe" in caplog.text


def test_the_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    backoff = Backoff(first=timedelta(milliseconds=100), cap=timedelta(seconds=1))
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (4, 1.0), (60, 1.0)]:
        delays = [backoff.delay(attempt).total_seconds() for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_the_iterator_skips_to_the_latest_value() -> None:
    async def main() -> None:
        sub = Subscription(cast(AsyncClient, None), 1, "countTasks", {})
        iterator = aiter(sub)
        for n in range(5):
            sub.show(n)
        assert await anext(iterator) == 4
        sub.show(4)  # the same value: no change
        waiting = asyncio.ensure_future(anext(iterator))
        await asyncio.sleep(0)
        assert not waiting.done()
        sub.show(5)
        assert await waiting == 5
        sub._end(None)
        with pytest.raises(StopAsyncIteration):
            await anext(iterator)

    asyncio.run(main())
