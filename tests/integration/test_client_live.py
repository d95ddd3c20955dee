"""Live queries and optimistic mutations through the Python client, against a real server: what each subscription
shows, value by value, while mutations are pending, answered, refused or lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _clienttools import Proxy, Recorder, Statuses, ids, titles, until

from nanotypedb import App, Ctx, Table, owner_policy
from nanotypedb.client import AsyncClient, Backoff, ConnectionLost, Status, Store
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.errors import BadRequest, RowNotFound, ValidationFailed
from nanotypedb.testing import TestServer, serve

FAST = Backoff(first=timedelta(milliseconds=50))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_two_clients_of_one_user_see_each_others_writes(server: TestServer) -> None:
    async def main() -> None:
        token = server.token("alice")
        async with AsyncClient(server.ws_url, token) as one, AsyncClient(server.ws_url, token) as two:
            on_one, on_two = one.subscribe("listTasks"), two.subscribe("listTasks")
            await until(on_two, lambda rows: rows == [])
            first = await one.mutate("createTask", title="from one")
            await until(on_two, lambda rows: ids(rows) == [first["id"]])
            second = await two.mutate("createTask", title="from two")
            await until(on_one, lambda rows: ids(rows) == [second["id"], first["id"]])
            await two.mutate("deleteTask", id=first["id"])
            await until(on_one, lambda rows: ids(rows) == [second["id"]])

    run(main())


def test_bobs_subscriptions_never_carry_alices_rows(server: TestServer) -> None:
    async def main() -> None:
        async with (
            AsyncClient(server.ws_url, server.token("alice")) as alice,
            AsyncClient(server.ws_url, server.token("bob")) as bob,
        ):
            tasks, count = bob.subscribe("listTasks"), bob.subscribe("countTasks")
            seen_tasks, seen_counts = Recorder(tasks), Recorder(count)
            await until(count, lambda n: n == 0)
            alice_rows = [await alice.mutate("createTask", title=f"alice {i}") for i in range(5)]
            await alice.mutate("updateTask", id=alice_rows[0]["id"], title="renamed")
            await alice.mutate("deleteTask", id=alice_rows[1]["id"])
            mine = await bob.mutate("createTask", title="bob's")
            await until(tasks, lambda rows: ids(rows) == [mine["id"]])
            await until(count, lambda n: n == 1)
            for _ in range(3):  # more of alice's writes after bob's: still nothing of hers
                await alice.mutate("createTask", title="alice again")
            await bob.call("listTasks")
            assert all(row["owner_id"] == "bob" for value in seen_tasks.values for row in value)
            assert seen_counts.values == [0, 1]

    run(main())


def test_an_optimistic_create_never_flickers_and_gets_its_real_id(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            existing = await client.call("createTask", title="existing")
            tasks, count = client.subscribe("listTasks"), client.subscribe("countTasks")
            await until(tasks, lambda rows: ids(rows) == [existing["id"]])
            await until(count, lambda n: n == 1)
            seen, counts = Recorder(tasks), Recorder(count)
            created = await client.mutate("createTask", title="fresh")
            await client.wait_settled()
            assert tasks.version == 2
            assert seen.values[0] == [
                {
                    "id": "optimistic:1",
                    "title": "fresh",
                    "status": "pending",
                    "updated_at": None,
                    "owner_id": "alice",
                    "vector_status": "pending",
                },
                existing,
            ]
            assert all(titles(value) == ["fresh", "existing"] for value in seen.values)  # in every value, once
            assert ids(seen.values[-1]) == [created["id"], existing["id"]]
            assert seen.values[-1][0] == created
            assert counts.values == [2]  # the optimistic +1, then the server's 2: the same value, not shown twice

    run(main())


def test_filters_counts_and_gets_follow_the_declarations(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            row = await client.call("createTask", title="one")
            done = client.subscribe("listTasks", {"status": "completed"})
            pending = client.subscribe("countTasks", {"status": "pending"})
            single = client.subscribe("getTask", {"id": row["id"]})
            done_seen, pending_seen, single_seen = Recorder(done), Recorder(pending), Recorder(single)
            await until(done, lambda rows: rows == [])
            await until(pending, lambda n: n == 1)
            await until(single, lambda r: r == row)
            await client.mutate("createTask", title="two")  # pending: not in the completed list
            await until(pending, lambda n: n == 2)
            await client.mutate("completeTask", id=row["id"])
            await until(done, lambda rows: ids(rows) == [row["id"]])
            await until(single, lambda r: r["status"] == "completed")
            await until(pending, lambda n: n == 1)
            assert done_seen.values == [[], [single.value]]
            assert pending_seen.values == [1, 2, 1]
            # the optimistic patch shows before the server's row (which also has updated_at)
            assert [r["status"] for r in single_seen.values] == ["pending", "completed", "completed"]

    run(main())


def test_refused_mutations_roll_back(server: TestServer) -> None:
    async def main() -> None:
        async with (
            AsyncClient(server.ws_url, server.token("alice")) as client,
            AsyncClient(server.ws_url, server.token("bob")) as bob,
        ):
            row = await client.call("createTask", title="keep me")
            theirs = await bob.call("createTask", title="bob's")
            tasks = client.subscribe("listTasks")
            before = await until(tasks, lambda rows: ids(rows) == [row["id"]])
            seen = Recorder(tasks)
            with pytest.raises(ValidationFailed):  # the client sends it; the server checks the title's length
                await client.mutate("createTask", title="x" * 501)
            with pytest.raises(ValidationFailed):
                await client.mutate("updateTask", id=row["id"], title="")
            with pytest.raises(ValidationFailed):  # arguments are strict: an unknown one is refused
                await client.mutate("deleteTask", id=row["id"], force=True)
            with pytest.raises(RowNotFound):  # bob's row: alice may not see it, let alone edit it
                await client.mutate("updateTask", id=theirs["id"], title="mine now")
            guess = {
                "id": "optimistic:1",
                "title": "x" * 501,
                "status": "pending",
                "updated_at": None,
                "owner_id": "alice",
                "vector_status": "pending",
            }
            assert seen.values == [
                [guess, *before],
                before,
                [{**row, "title": ""}],
                before,
                [],
                before,
            ]
            assert tasks.value == before

    run(main())


def test_stacked_mutations_are_dropped_or_rolled_back_each_on_its_own(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            tasks = client.subscribe("listTasks")
            await until(tasks, lambda rows: rows == [])
            seen = Recorder(tasks)
            results = await asyncio.gather(
                client.mutate("createTask", title="a"),
                client.mutate("createTask", title=""),
                client.mutate("createTask", title="c"),
                return_exceptions=True,
            )
            assert isinstance(results[1], ValidationFailed)
            await until(tasks, lambda rows: titles(rows) == ["c", "a"] and all(isinstance(i, int) for i in ids(rows)))
            all_three = [titles(value) for value in seen.values].index(["c", "", "a"])  # pending, newest first
            # From there on, "a" and "c" are in every value: the refused one leaves without taking them along.
            assert all({"a", "c"} <= set(titles(value)) for value in seen.values[all_three:])
            assert all(titles(value).count("a") == 1 for value in seen.values)

    run(main())


def test_a_query_error_is_raised_by_the_iterator_and_the_subscription_stays(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            missing = client.subscribe("getTask", {"id": 1})
            iterator = aiter(missing)
            async with asyncio.timeout(5):
                with pytest.raises(RowNotFound):
                    await anext(iterator)
                assert missing.active
                row = await client.mutate("createTask", title="now it exists")
                assert await anext(iterator) == row

    run(main())


def test_a_refused_subscribe_ends_with_its_error(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            sub = client.subscribe("createTask", {"title": "no"})
            iterator = aiter(sub)
            with pytest.raises(BadRequest):
                async with asyncio.timeout(5):
                    await anext(iterator)
            assert not sub.active
            with pytest.raises(StopAsyncIteration):
                await anext(iterator)

    run(main())


def test_unsubscribe_ends_the_iteration(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            sub = client.subscribe("countTasks")
            await until(sub, lambda n: n == 0)
            seen = Recorder(sub)
            sub.unsubscribe()
            await client.mutate("createTask", title="after")
            assert [v async for v in sub] == []
            assert seen.values == []
            assert sub.value == 0

    run(main())


def test_set_auth_reruns_the_subscriptions_as_the_new_caller(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            await client.call("createTask", title="alice's")
            tasks = client.subscribe("listTasks")
            await until(tasks, lambda rows: titles(rows) == ["alice's"])
            await client.set_auth(server.token("bob"))
            await until(tasks, lambda rows: rows == [])
            row = await client.mutate("createTask", title="bob's")
            assert row["owner_id"] == "bob"
            await until(tasks, lambda rows: rows == [row])

    run(main())


# ---- custom optimistic updates

notes = App("notes")


@notes.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    pinned: bool = False
    owner_id: str | None = None


@notes.query(name="listNotes")
def list_notes(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("notes").order_by("id").all()


@notes.mutation(name="addNote", optimistic="insert:notes")
def add_note(ctx: Ctx, text: str) -> dict[str, Any]:
    return ctx.db.insert("notes", {"text": text})


@notes.mutation(name="pinAll", optimistic="custom:pinAll")
def pin_all(ctx: Ctx, fail: bool = False) -> int:
    if fail:
        raise BadRequest("Not now.")
    rows = ctx.db.query("notes").all()
    for row in rows:
        ctx.db.update("notes", row["id"], {"pinned": True})
    return len(rows)


def _pin_all(store: Store, args: dict[str, Any]) -> None:
    rows = store.get_query("listNotes")
    if rows is not None:
        store.set_query("listNotes", {}, [{**row, "pinned": True} for row in rows])


def test_a_custom_optimistic_update(tmp_path: Path) -> None:
    async def main(server: TestServer) -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            client.register_optimistic("pinAll", _pin_all)
            listing = client.subscribe("listNotes")
            await until(listing, lambda rows: rows == [])
            await client.mutate("addNote", text="a")
            await client.mutate("addNote", text="b")
            await until(listing, lambda rows: len(rows) == 2 and all(isinstance(i, int) for i in ids(rows)))
            seen = Recorder(listing)
            with pytest.raises(BadRequest):
                await client.mutate("pinAll", fail=True)
            assert [[r["pinned"] for r in value] for value in seen.values] == [[True, True], [False, False]]
            assert await client.mutate("pinAll") == 2
            await client.wait_settled()
            assert listing.version == 3
            assert all(all(r["pinned"] for r in value) for value in seen.values[2:])

    with serve(notes, tmp_path / "data") as server:
        run(main(server))


# ---- connections that drop


def test_a_mutation_lost_with_the_connection_rolls_back_and_reconnection_shows_what_committed(
    server: TestServer,
) -> None:
    async def main() -> None:
        token = server.token("alice")
        async with Proxy(server.port) as proxy, AsyncClient(server.ws_url, token) as witness:
            client = AsyncClient(proxy.ws_url, token, backoff=FAST)
            statuses: list[Status] = []
            client.on_status(statuses.append)
            async with client:
                tasks, committed = client.subscribe("listTasks"), witness.subscribe("listTasks")
                await until(tasks, lambda rows: rows == [])
                with pytest.raises(RowNotFound):  # loads the function list while the proxy still passes replies
                    await client.mutate("deleteTask", id=999)
                seen = Recorder(tasks)
                proxy.hold()  # the server's answer will not reach the client
                mutation = asyncio.create_task(client.mutate("createTask", title="in doubt"))
                row = (await until(committed, lambda rows: len(rows) == 1))[0]  # it did commit
                assert ids(tasks.value) == ["optimistic:2"]  # the deleteTask above had number 1
                proxy.cut()
                proxy.release()
                with pytest.raises(ConnectionLost):
                    await mutation
                assert statuses[:3] == ["connecting", "open", "reconnecting"]
                # Sent once the client is back: meanwhile its effect shows.
                waiting = asyncio.create_task(client.mutate("createTask", title="while reconnecting"))
                again = await waiting
                assert statuses[-1] == "open" and proxy.connections == 3  # two WebSockets, one GET /api/functions
                await until(tasks, lambda rows: ids(rows) == [again["id"], row["id"]])
                assert [ids(value) for value in seen.values][:2] == [["optimistic:2"], []]
                assert ids(seen.values[2]) == ["optimistic:3"]  # the waiting mutation's effect, before the reconnection
                assert all(len(set(ids(value))) == len(value) for value in seen.values)

    run(main())


def test_reconnection_after_a_server_restart_shows_the_current_state(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> None:
        first = TestServer(tasks_app, data).start()
        token = first.token("alice")
        client = AsyncClient(first.ws_url, token, backoff=FAST)
        statuses = Statuses(client)
        try:
            async with client:
                tasks = client.subscribe("listTasks")
                await client.mutate("createTask", title="before")
                await until(tasks, lambda rows: titles(rows) == ["before"])
                seen = Recorder(tasks)
                await asyncio.to_thread(first.stop)
                await statuses.reach("reconnecting")
                second = TestServer(tasks_app, data)
                second.port = first.port  # the same address, as after a real restart
                await asyncio.to_thread(second.start)
                try:
                    second.client(token).call("createTask", title="while away")
                    await statuses.reach("open", times=2)
                    rows = await until(tasks, lambda rows: len(rows) == 2)
                    assert titles(rows) == ["while away", "before"]
                    assert all(len(set(ids(value))) == len(value) for value in seen.values)
                    assert (await client.call("countTasks")) == 2
                finally:
                    await asyncio.to_thread(second.stop)
        finally:
            if first.service is not None and not statuses.seen.count("reconnecting"):
                first.stop()

    run(main())


def test_without_reconnect_a_drop_closes_the_client(server: TestServer) -> None:
    async def main() -> None:
        async with Proxy(server.port) as proxy:
            client = AsyncClient(proxy.ws_url, server.token("alice"), reconnect=False)
            async with client:
                tasks = client.subscribe("countTasks")
                await until(tasks, lambda n: n == 0)
                closed = asyncio.Event()
                client.on_status(lambda status: closed.set() if status == "closed" else None)
                proxy.cut()
                await asyncio.wait_for(closed.wait(), 5)
                with pytest.raises(ConnectionLost):
                    await until(tasks, lambda n: False)
                assert not tasks.active

    run(main())
