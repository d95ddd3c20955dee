"""The Python client against a real server: calls and typed errors, signing in, status events, closing, and the
blocking Client."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _clienttools import ids, until

from nanotypedb import App, Conflict, Ctx, NanoTypeDBError
from nanotypedb.client import AsyncClient, Client, ClientClosed, ConnectionLost, Principal, Status
from nanotypedb.client.functions import functions_url
from nanotypedb.errors import FunctionNotFound, InvalidToken, RowNotFound, Unauthenticated, ValidationFailed
from nanotypedb.testing import TestServer, free_port, serve

WAIT = timedelta(seconds=5)


def test_call_returns_the_data_and_raises_the_servers_errors_by_code(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            row = await client.call("createTask", title="By rpc")
            assert row["title"] == "By rpc" and row["owner_id"] == "alice"
            assert await client.call("getTask", id=row["id"]) == row
            with pytest.raises(RowNotFound):
                await client.call("getTask", id=999)
            with pytest.raises(FunctionNotFound):
                await client.call("noSuchFunction")
            with pytest.raises(ValidationFailed) as failed:
                await client.call("createTask", title="")
            assert failed.value.details[0]["field"] == "title"
            assert getattr(failed.value, "request_id", None)

    asyncio.run(main())


class Overdrawn(Conflict):
    """The account would go below zero."""

    code = "Overdrawn"


bank = App("bank")


@bank.mutation(name="withdraw")
def withdraw(ctx: Ctx, amount: int) -> None:
    raise Overdrawn(details={"short_by": amount})


def test_an_apps_own_error_code_reaches_the_client_whole(tmp_path: Path) -> None:
    async def main(server: TestServer) -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            with pytest.raises(NanoTypeDBError) as refused:
                await client.call("withdraw", amount=5)
        assert refused.value.code == "Overdrawn"
        assert refused.value.message == "The account would go below zero."
        assert refused.value.details == {"short_by": 5}

    with serve(bank, tmp_path / "data") as server:
        asyncio.run(main(server))
        over_http = server.client(server.token("alice")).post("withdraw", {"amount": 5})
        assert over_http.status_code == 409
        assert over_http.json()["error"]["code"] == "Overdrawn"


def test_concurrent_calls_are_matched_to_their_replies(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            rows = await asyncio.gather(*(client.call("createTask", title=f"t{i}") for i in range(20)))
            assert [r["title"] for r in rows] == [f"t{i}" for i in range(20)]

    asyncio.run(main())


def test_the_principal_comes_from_the_auth_reply(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            assert client.principal == Principal("user", "alice")
            assert await client.set_auth(server.token("bob")) == Principal("user", "bob")
            assert (await client.call("createTask", title="mine"))["owner_id"] == "bob"
            assert await client.set_auth(None) == Principal("anonymous", None)
            with pytest.raises(Unauthenticated):
                await client.call("listTasks")
        async with AsyncClient(server.ws_url, server.admin_key) as admin:
            assert admin.principal.kind == "admin"
            assert admin.principal.user_id is None

    asyncio.run(main())


def test_a_refused_token_leaves_the_client_anonymous(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            with pytest.raises(InvalidToken):
                await client.set_auth("not-a-token")
            assert client.principal == Principal()
            with pytest.raises(Unauthenticated):
                await client.call("listTasks")

    asyncio.run(main())


def test_a_refused_token_at_connect_raises_and_closes(server: TestServer) -> None:
    async def main() -> None:
        client = AsyncClient(server.ws_url, "not-a-token")
        statuses: list[Status] = []
        client.on_status(statuses.append)
        with pytest.raises(InvalidToken):
            await client.connect()
        assert statuses == ["connecting", "closed"]
        await client.close()

    asyncio.run(main())


def test_no_server_raises_at_connect() -> None:
    async def main() -> None:
        client = AsyncClient(f"ws://127.0.0.1:{free_port()}/ws")
        with pytest.raises(ConnectionLost):  # before connect(), calls do not wait
            await client.call("listTasks")
        with pytest.raises(OSError):
            await client.connect()
        assert client.status is Status.CLOSED
        await client.close()

    asyncio.run(main())


def test_status_events_and_calls_after_close(server: TestServer) -> None:
    async def main() -> None:
        client = AsyncClient(server.ws_url, server.token("alice"))
        statuses: list[Status] = []
        client.on_status(statuses.append)
        await client.connect()
        assert statuses == ["connecting", "open"]
        sub = client.subscribe("countTasks")
        await until(sub, lambda n: n == 0)
        await client.close()
        assert statuses == ["connecting", "open", "closed"]
        assert not sub.active
        with pytest.raises(ClientClosed):  # a ConnectionLost
            await client.call("listTasks")
        assert [v async for v in sub] == []  # an ended subscription's iterator stops

    asyncio.run(main())


def test_the_function_list_url_follows_the_websocket_url() -> None:
    assert functions_url("ws://127.0.0.1:8787/ws") == "http://127.0.0.1:8787/api/functions"
    assert functions_url("wss://example.com/base/ws") == "https://example.com/base/api/functions"


def test_the_blocking_client(server: TestServer) -> None:
    statuses: list[Status] = []
    with Client(server.ws_url, server.token("alice")) as client:
        client.on_status(statuses.append)
        assert client.principal == Principal("user", "alice")
        tasks = client.subscribe("listTasks")
        assert tasks.next_value(WAIT) == []
        seen: list[Any] = []
        tasks.on_result(seen.append)
        created = client.mutate("createTask", title="Blocking")
        assert ids(tasks.next_value(WAIT)) in (["optimistic:1"], [created["id"]])
        for value in tasks:  # the iterator skips ahead to the latest value
            if ids(value) == [created["id"]]:
                break
        assert ids(seen[-1]) == [created["id"]]
        client.wait_settled(WAIT)
        assert tasks.version == 1
        with pytest.raises(RowNotFound):
            client.call("getTask", id=999)
        tasks.unsubscribe()
        with pytest.raises(RuntimeError):
            tasks.next_value(WAIT)
    assert statuses == ["closed"]
    assert client.status is Status.CLOSED


def test_a_mutation_settles_without_subscriptions(server: TestServer) -> None:
    async def main() -> None:
        async with AsyncClient(server.ws_url, server.token("alice")) as client:
            await client.mutate("createTask", title="nobody watches")
            await asyncio.wait_for(client.wait_settled(), 5)

    asyncio.run(main())


def test_the_blocking_client_stops_its_thread_when_it_cannot_connect(server: TestServer) -> None:
    client = Client(server.ws_url, "not-a-token")
    with pytest.raises(InvalidToken), client:
        pass
    assert client.status is Status.CLOSED
    assert not client._thread.is_alive()


def test_a_token_function_is_asked_on_each_connection(server: TestServer) -> None:
    asked: list[str] = []

    async def fresh_token() -> str:
        asked.append("alice")
        return server.token("alice")

    async def main() -> None:
        async with AsyncClient(server.ws_url, fresh_token) as client:
            assert client.principal == Principal("user", "alice")
            assert (await client.mutate("createTask", title="with a fresh token"))["owner_id"] == "alice"
            assert await client.set_auth(lambda: server.token("bob")) == Principal("user", "bob")
        assert asked == ["alice"]

    asyncio.run(main())


def test_calls_wait_for_the_connection_while_it_is_being_made(server: TestServer) -> None:
    async def main() -> None:
        client = AsyncClient(server.ws_url, server.token("alice"))
        connecting = asyncio.create_task(client.connect())
        await asyncio.sleep(0)  # connect() has started: the status is `connecting`
        assert client.status is Status.CONNECTING
        row = await client.call("createTask", title="sent once open")
        await connecting
        assert row["owner_id"] == "alice"
        await client.close()

    asyncio.run(main())
