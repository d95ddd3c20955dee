"""Row-level security over HTTP: two users never see or change each other's rows, however they ask.

The first half drives the bundled tasks app as alice, bob, an anonymous caller and an admin. The
second half runs a small app of its own to cover what the tasks app does not use: a client-sent
owner, owner changes, a table without a policy, `match` and `predicate` rules, and writes from a
query. Several tests put one visible row among many hidden ones and ask for one row: a rule
applied after the SQL (instead of inside it) would return nothing there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nanotypedb import (
    SIGNED_IN,
    App,
    Ctx,
    Forbidden,
    Policy,
    PolicyDenied,
    Principal,
    RowNotFound,
    Table,
    Unauthenticated,
    ValidationFailed,
    column,
    match,
    owner_policy,
    predicate,
)
from nanotypedb.testing import HttpClient, TestServer, serve

# -- the bundled tasks app ------------------------------------------------------


@dataclass
class Pair:
    """alice and bob with three tasks each, created alternately (so bob's task is the newest)."""

    alice: HttpClient
    bob: HttpClient
    admin: HttpClient
    ids: dict[str, list[int]]


@pytest.fixture
def pair(server: TestServer) -> Pair:
    clients = {name: server.client(server.token(name)) for name in ("alice", "bob")}
    ids: dict[str, list[int]] = {"alice": [], "bob": []}
    for i in range(3):
        for name, client in clients.items():
            ids[name].append(client.call("createTask", title=f"{name} {i}")["id"])
    return Pair(clients["alice"], clients["bob"], server.client(server.admin_key), ids)


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def _newest_first(ids: list[int]) -> list[int]:
    return sorted(ids, reverse=True)


def _walk(client: HttpClient, limit: int, cursor: str | None = None) -> list[list[dict[str, Any]]]:
    """Every page of listTasksPage from `cursor` on, following the returned cursors."""
    pages = []
    while True:
        page = client.call("listTasksPage", limit=limit, cursor=cursor)
        pages.append(page["items"])
        if page["is_done"]:
            return pages
        cursor = page["cursor"]
        assert cursor is not None and len(pages) < 50


def _forged_cursor(*values: Any) -> str:
    # The cursor is base64url JSON of the last row's sort keys; a client can write any such value.
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_each_user_lists_only_their_own_tasks(pair: Pair, user: str) -> None:
    rows = getattr(pair, user).call("listTasks")

    assert _ids(rows) == _newest_first(pair.ids[user])
    assert {row["owner_id"] for row in rows} == {user}


def test_an_owner_filter_sent_by_the_client_only_narrows(pair: Pair) -> None:
    assert pair.alice.call("listTasks", owner_id="bob") == []
    assert _ids(pair.alice.call("listTasks", owner_id="alice")) == _newest_first(pair.ids["alice"])


def test_the_limit_applies_to_the_callers_rows(pair: Pair) -> None:
    # bob owns the newest task: filtering after `LIMIT 1` would leave alice with nothing.
    assert _ids(pair.alice.call("listTasks", limit=1)) == [max(pair.ids["alice"])]


def test_every_page_holds_only_the_callers_rows(pair: Pair) -> None:
    pages = _walk(pair.alice, limit=2)

    newest_first = _newest_first(pair.ids["alice"])
    assert [_ids(page) for page in pages] == [newest_first[:2], newest_first[2:]]
    assert {row["owner_id"] for page in pages for row in page} == {"alice"}


def test_another_users_cursor_yields_only_your_rows(pair: Pair) -> None:
    bobs_cursor = pair.bob.call("listTasksPage", limit=1)["cursor"]

    rows = [row for page in _walk(pair.alice, limit=1, cursor=bobs_cursor) for row in page]

    assert _ids(rows) == _newest_first(pair.ids["alice"])  # bob's newest task is after all of alice's


def test_a_forged_cursor_yields_only_your_rows(pair: Pair) -> None:
    rows = pair.alice.call("listTasksPage", limit=50, cursor=_forged_cursor(10**9))["items"]

    assert _ids(rows) == _newest_first(pair.ids["alice"])


@pytest.mark.parametrize("cursor", ["not a cursor!", _forged_cursor("x", 1), _forged_cursor([1])])
def test_a_malformed_cursor_is_a_validation_error(pair: Pair, cursor: str) -> None:
    with pytest.raises(ValidationFailed):
        pair.alice.call("listTasksPage", cursor=cursor)


def test_counts_cover_only_the_callers_rows(pair: Pair) -> None:
    pair.bob.call("completeTask", id=pair.ids["bob"][0])

    assert pair.alice.call("countTasks") == 3
    assert pair.alice.call("countTasks", status="completed") == 0
    assert pair.bob.call("countTasks", status="completed") == 1
    assert pair.admin.call("countTasks") == 6


def test_another_users_task_is_not_found_like_a_missing_one(pair: Pair) -> None:
    with pytest.raises(RowNotFound) as other:
        pair.alice.call("getTask", id=pair.ids["bob"][0])
    with pytest.raises(RowNotFound) as missing:
        pair.alice.call("getTask", id=10**9)

    assert (other.value.code, other.value.details) == (missing.value.code, missing.value.details)


@pytest.mark.parametrize(
    ("name", "args"),
    [("updateTask", {"title": "mine now", "status": "completed"}), ("completeTask", {}), ("deleteTask", {})],
)
def test_another_users_task_cannot_be_changed(pair: Pair, name: str, args: dict[str, Any]) -> None:
    task_id = pair.ids["bob"][1]
    before = pair.bob.call("getTask", id=task_id)

    with pytest.raises(RowNotFound):
        pair.alice.call(name, id=task_id, **args)

    assert pair.bob.call("getTask", id=task_id) == before
    assert pair.admin.call("getTask", id=task_id) == before
    assert pair.bob.call("countTasks") == 3


def test_the_owner_can_change_their_own_task(pair: Pair) -> None:
    task_id = pair.ids["alice"][0]

    assert pair.alice.call("completeTask", id=task_id)["status"] == "completed"
    assert pair.alice.call("deleteTask", id=task_id)["id"] == task_id
    assert pair.alice.call("countTasks") == 2


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("listTasks", {}),
        ("listTasksPage", {}),
        ("countTasks", {}),
        ("getTask", {"id": 1}),
        ("createTask", {"title": "anonymous"}),
        ("deleteTask", {"id": 1}),
    ],
)
def test_anonymous_callers_are_unauthenticated(server: TestServer, pair: Pair, name: str, args: dict[str, Any]) -> None:
    anonymous = server.client()

    response = anonymous.post(name, args)

    assert (response.status_code, response.json()["error"]["code"]) == (401, "Unauthenticated")
    assert pair.admin.call("countTasks") == 6


def test_an_admin_sees_every_row(pair: Pair) -> None:
    everyone = pair.ids["alice"] + pair.ids["bob"]

    assert _ids(pair.admin.call("listTasks")) == _newest_first(everyone)
    assert pair.admin.call("getTask", id=pair.ids["bob"][0])["owner_id"] == "bob"
    assert [row["id"] for page in _walk(pair.admin, limit=4) for row in page] == _newest_first(everyone)


def test_a_service_key_does_not_bypass_rls(server: TestServer, pair: Pair) -> None:
    assert server.service is not None
    _, key = server.service.keys.create("worker", kind="service")
    service = server.client(key)

    assert service.call("listTasks") == []
    assert service.call("countTasks") == 0
    with pytest.raises(RowNotFound):
        service.call("deleteTask", id=pair.ids["alice"][0])


# -- a custom app: every kind of rule -------------------------------------------

custom = App("rls_custom")


def _is_member(principal: Principal, row: Mapping[str, Any]) -> bool:
    return principal.id in row["members"]


@custom.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    body: str
    owner_id: str | None = column(None, index=True)


@custom.table
class Secret(Table, table="secrets"):  # no policy: admins only
    value: str


RED_TEAM = Policy(read=match(team="red"), insert=match(team="red"), update=match(team="red"), delete=match(team="red"))


@custom.table
class Post(Table, table="posts", policy=RED_TEAM):
    team: str = column(index=True)
    title: str


@custom.table
class Doc(Table, table="docs", policy=Policy(read=predicate(_is_member), insert=SIGNED_IN)):
    title: str
    members: list[str]


@custom.mutation(name="addNote")
def add_note(ctx: Ctx, body: str, owner_id: str | None = None) -> dict[str, Any]:
    values = {"body": body} if owner_id is None else {"body": body, "owner_id": owner_id}
    return ctx.db.insert("notes", values)


@custom.mutation(name="reassignNote")
def reassign_note(ctx: Ctx, id: int, owner_id: str) -> dict[str, Any]:
    return ctx.db.update("notes", id, {"owner_id": owner_id})


@custom.mutation(name="seed")
def seed(ctx: Ctx, table: str, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows as given (an admin's inserts keep their owner)."""
    return [ctx.db.insert(table, row)["id"] for row in rows]


@custom.query(name="newest")
def newest(ctx: Ctx, table: str, limit: int = 1) -> list[dict[str, Any]]:
    return ctx.db.query(table).order_by("-id").limit(limit).all()


@custom.query(name="page")
def page(ctx: Ctx, table: str, limit: int, cursor: str | None = None) -> Any:
    return ctx.db.query(table).order_by("-id").paginate(limit, cursor)


@custom.query(name="count")
def count(ctx: Ctx, table: str) -> int:
    return ctx.db.count(table)


@custom.query(name="get")
def get(ctx: Ctx, table: str, id: int) -> dict[str, Any] | None:
    return ctx.db.get(table, id)


@custom.query(name="writeFromQuery")
def write_from_query(ctx: Ctx) -> dict[str, Any]:
    return ctx.db.insert("notes", {"body": "from a query"})


@custom.query(name="publicPosts", public=True)
def public_posts(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("posts").all()


@dataclass
class Callers:
    alice: HttpClient
    bob: HttpClient
    admin: HttpClient
    anonymous: HttpClient


@pytest.fixture
def callers(tmp_path: Path) -> Iterator[Callers]:
    with serve(custom, tmp_path / "data") as running:
        users = [running.client(running.token(name)) for name in ("alice", "bob")]
        yield Callers(*users, running.client(running.admin_key), running.client())


def _notes_of(owner: str, n: int) -> list[dict[str, Any]]:
    return [{"body": f"{owner} {i}", "owner_id": owner} for i in range(n)]


def test_a_client_sent_owner_is_replaced_by_the_caller(callers: Callers) -> None:
    note = callers.alice.call("addNote", body="hi", owner_id="bob")

    assert note["owner_id"] == "alice"
    assert callers.admin.call("get", table="notes", id=note["id"])["owner_id"] == "alice"
    assert callers.bob.call("count", table="notes") == 0


def test_the_owner_column_cannot_be_changed(callers: Callers) -> None:
    note = callers.alice.call("addNote", body="mine")

    with pytest.raises(PolicyDenied):
        callers.alice.call("reassignNote", id=note["id"], owner_id="bob")

    assert callers.admin.call("get", table="notes", id=note["id"]) == note
    assert callers.admin.call("reassignNote", id=note["id"], owner_id="bob")["owner_id"] == "bob"


def test_owner_rules_are_pushed_into_the_sql(callers: Callers) -> None:
    # One row of alice's, then many of bob's: only a rule inside the SQL finds hers under LIMIT 1.
    [mine, *_] = callers.admin.call("seed", table="notes", rows=_notes_of("alice", 1) + _notes_of("bob", 200))

    assert _ids(callers.alice.call("newest", table="notes")) == [mine]
    assert _ids(callers.alice.call("page", table="notes", limit=1)["items"]) == [mine]
    assert callers.alice.call("count", table="notes") == 1


def test_a_table_without_a_policy_is_for_admins_only(callers: Callers) -> None:
    with pytest.raises(PolicyDenied):
        callers.alice.call("seed", table="secrets", rows=[{"value": "s"}])
    with pytest.raises(PolicyDenied):
        callers.alice.call("count", table="secrets")

    [secret_id] = callers.admin.call("seed", table="secrets", rows=[{"value": "s"}])

    for name, args in [("newest", {}), ("get", {"id": secret_id}), ("page", {"limit": 5})]:
        with pytest.raises(PolicyDenied):
            callers.bob.call(name, table="secrets", **args)
    assert callers.admin.call("get", table="secrets", id=secret_id)["value"] == "s"


def test_a_policy_denial_is_403(callers: Callers) -> None:
    response = callers.alice.post("count", {"table": "secrets"})

    assert (response.status_code, response.json()["error"]["code"]) == (403, "PolicyDenied")


def test_a_match_rule_filters_reads_in_sql(callers: Callers) -> None:
    posts = [{"team": "red", "title": "r"}] + [{"team": "blue", "title": f"b{i}"} for i in range(100)]
    [red, *blue] = callers.admin.call("seed", table="posts", rows=posts)

    assert _ids(callers.alice.call("newest", table="posts")) == [red]
    assert callers.bob.call("count", table="posts") == 1
    assert callers.bob.call("get", table="posts", id=blue[0]) is None
    assert callers.anonymous.call("publicPosts") == []  # `match` needs a signed-in caller


def test_a_match_rule_checks_new_rows(callers: Callers) -> None:
    with pytest.raises(PolicyDenied):
        callers.alice.call("seed", table="posts", rows=[{"team": "blue", "title": "b"}])

    [red] = callers.alice.call("seed", table="posts", rows=[{"team": "red", "title": "r"}])

    assert _ids(callers.admin.call("newest", table="posts", limit=10)) == [red]


@pytest.fixture
def docs(callers: Callers) -> list[int]:
    """Ten docs for bob; alice is also a member of the second and every third one after it, not the newest."""
    rows = [{"title": f"d{i}", "members": ["alice", "bob"] if i % 3 == 1 else ["bob"]} for i in range(10)]
    ids: list[int] = callers.admin.call("seed", table="docs", rows=rows)
    return ids


def test_a_predicate_rule_filters_reads(callers: Callers, docs: list[int]) -> None:
    alices = docs[1::3]

    assert _ids(callers.alice.call("newest", table="docs", limit=100)) == _newest_first(alices)
    assert callers.alice.call("count", table="docs") == len(alices)
    assert callers.alice.call("get", table="docs", id=docs[0]) is None
    assert callers.alice.call("get", table="docs", id=docs[1])["id"] == docs[1]
    assert callers.bob.call("count", table="docs") == len(docs)


def test_a_limit_counts_only_rows_a_predicate_lets_through(callers: Callers, docs: list[int]) -> None:
    assert _ids(callers.alice.call("newest", table="docs", limit=2)) == _newest_first(docs[1::3])[:2]


def test_pages_of_a_predicate_rule_reach_every_visible_row(callers: Callers, docs: list[int]) -> None:
    seen: list[int] = []
    cursor = None
    for _ in range(20):
        page = callers.alice.call("page", table="docs", limit=2, cursor=cursor)
        seen += _ids(page["items"])
        if page["is_done"]:
            break
        cursor = page["cursor"]

    assert seen == _newest_first(docs[1::3])


def test_a_query_cannot_write(callers: Callers) -> None:
    for caller in (callers.alice, callers.admin):
        with pytest.raises(Forbidden) as caught:
            caller.call("writeFromQuery")
        assert caught.value.code == "Forbidden"

    assert callers.admin.call("count", table="notes") == 0


def test_unauthenticated_is_401_before_any_policy(callers: Callers) -> None:
    with pytest.raises(Unauthenticated):
        callers.anonymous.call("count", table="secrets")
