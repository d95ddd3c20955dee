"""The HTTP surface: health, the function list, OpenAPI, result serialization, strict arguments and `ctx`."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from nanotypedb import App, Ctx, Page, Table, owner_policy
from nanotypedb.testing import HttpClient, TestServer, serve

app = App("surface")
_users = itertools.count()


class Point(pydantic.BaseModel):
    x: int
    y: int


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    rank: int = 0
    tag: str | None = None
    owner_id: str | None = None


@app.query(public=True)
def whoami(ctx: Ctx) -> dict[str, Any]:
    return {"kind": ctx.user.kind.value, "id": ctx.user.id}


@app.query()
def values(ctx: Ctx) -> dict[str, Any]:
    return {
        "aware": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "naive": dt.datetime(2024, 1, 2, 3, 4, 5, 600000),
        "day": dt.date(2024, 1, 2),
        "bytes": b"\x00\xffhi",
        "decimal": decimal.Decimal("1.10"),
        "tuple": (1, "a"),
        "set": {3},
        "frozenset": frozenset({4}),
        "nested": [{"d": decimal.Decimal("0.1"), "b": b"ok"}],
        "model": Point(x=1, y=2),
    }


@app.query()
def typed(
    ctx: Ctx, count: int, ratio: float, flag: bool, name: str, when: dt.datetime, tags: list[str] | None = None
) -> dict[str, Any]:
    return {"when": when, "types": [type(v).__name__ for v in (count, ratio, flag, name, when)]}


@app.query()
def distance(ctx: Ctx, a: Point, b: Point) -> int:
    return abs(a.x - b.x) + abs(a.y - b.y)


@app.mutation(name="addNote")
def add_note(ctx: Ctx, text: str, rank: int = 0, tag: str | None = None) -> dict[str, Any]:
    return ctx.db.insert("notes", {"text": text, "rank": rank, "tag": tag})


@app.query(name="getNote")
def get_note(ctx: Ctx, id: int) -> dict[str, Any] | None:
    return ctx.db.get("notes", id)


@app.query(name="findNotes")
def find_notes(ctx: Ctx, column: str, op: str, value: Any, order: str = "id", limit: int = 100) -> list[int]:
    rows = ctx.db.query("notes").filter(column, op, value).order_by(order).limit(limit).all()
    return [r["rank"] for r in rows]


@app.query(name="taggedNotes")
def tagged_notes(ctx: Ctx, tag: str, limit: int = 100) -> list[int]:
    return [r["rank"] for r in ctx.db.query("notes").where(tag=tag).order_by("-rank").limit(limit).all()]


@app.query(name="topNote")
def top_note(ctx: Ctx) -> dict[str, Any] | None:
    return ctx.db.query("notes").order_by("-rank").first()


@app.query(name="pageNotes")
def page_notes(ctx: Ctx, limit: int, cursor: str | None = None, order: str = "id") -> Page:
    return ctx.db.query("notes").order_by(order).paginate(limit, cursor)


@app.query(name="countNotes")
def count_notes(ctx: Ctx, tag: str | None = None) -> int:
    return ctx.db.count("notes", **({"tag": tag} if tag is not None else {}))


@app.mutation(name="editNote")
def edit_note(ctx: Ctx, id: int, text: str) -> dict[str, Any]:
    return ctx.db.update("notes", id, {"text": text})


@app.mutation(name="dropNote")
def drop_note(ctx: Ctx, id: int) -> dict[str, Any]:
    return ctx.db.delete("notes", id)


@app.action(name="noteAndCount")
async def note_and_count(ctx: Ctx, text: str) -> dict[str, Any]:
    row = await ctx.run_mutation("addNote", text=text)
    return {"row": row, "count": await ctx.run_query("countNotes"), "user": await ctx.run_query("whoami")}


@app.action()
async def relay(ctx: Ctx, name: str, args: dict[str, Any]) -> Any:
    return await ctx.run_query(name, **args)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with serve(app, tmp_path_factory.mktemp("surface") / "data") as server:
        yield server


@pytest.fixture
def fresh(running: TestServer) -> HttpClient:
    """A client for a user of its own: owner_policy keeps each test's notes apart."""
    return running.client(running.token(f"user{next(_users)}"))


def ranks(client: HttpClient, *values: int, tag: str | None = None) -> list[int]:
    """Insert one note per rank; return their ids."""
    return [client.call("addNote", text=f"n{v}", rank=v, tag=tag)["id"] for v in values]


def test_healthz(server: TestServer) -> None:
    response = server.client().http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": 0}


def listed(client: HttpClient) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in client.http.get("/api/functions").json()["functions"]}


def test_functions_lists_the_tasks_app(server: TestServer) -> None:
    listed_ = listed(server.client(server.token("alice")))
    kinds = {name: f["kind"] for name, f in listed_.items()}
    assert kinds == {
        "listTasks": "query",
        "listTasksPage": "query",
        "countTasks": "query",
        "getTask": "query",
        "createTask": "mutation",
        "updateTask": "mutation",
        "completeTask": "mutation",
        "deleteTask": "mutation",
        "searchTasks": "action",
        # The job queue's admin functions, which every app has:
        "listJobs": "query",
        "redriveJobs": "mutation",
        "purgeJobs": "mutation",
        # The audit log's, likewise:
        "exportAuditLog": "query",
        "verifyAuditLog": "action",
        # Usage analytics, also every app's:
        "getAnalytics": "action",
    }
    assert set(listed_["getAnalytics"]["args"]["properties"]) == {"from", "to", "bucket", "group_by"}
    args = listed_["createTask"]["args"]
    assert args["required"] == ["title"]
    assert args["additionalProperties"] is False
    assert args["properties"]["title"] == {"type": "string", "minLength": 1, "maxLength": 500, "title": "Title"}
    assert args["properties"]["status"]["enum"] == ["pending", "completed"]
    assert listed_["createTask"]["optimistic"] == {
        "kind": "insert",
        "table": "tasks",
        "columns": ["id", "title", "status", "created_at", "updated_at", "owner_id", "vector_status"],
        "defaults": {"status": "pending", "updated_at": None, "owner_id": None, "vector_status": "pending"},
        "owner": "owner_id",
    }
    assert listed_["completeTask"]["optimistic"]["set"] == {"status": "completed"}
    assert listed_["deleteTask"]["optimistic"] == {"kind": "delete", "table": "tasks", "id": "id"}


def test_anonymous_callers_see_only_public_functions(running: TestServer) -> None:
    assert list(listed(running.client())) == ["whoami"]
    assert len(listed(running.client(running.token("alice")))) == len(running.app.functions)


def test_signature_constraints_are_enforced(server: TestServer) -> None:
    alice = server.client(server.token("alice"))
    for title in ("", "x" * 501):
        error = alice.post("createTask", {"title": title}).json()["error"]
        assert error["code"] == "ValidationFailed"
        assert [d["field"] for d in error["details"]] == ["title"]


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def check_openapi(document: dict[str, Any], functions: list[dict[str, Any]]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    expected = {f"/api/rpc/{f['name']}" for f in functions} | {
        "/api/functions",
        "/openapi.json",
        "/healthz",
        "/ws",
        "/api/audit/export",
    }
    assert set(document["paths"]) == expected
    for fn in functions:
        post = document["paths"][f"/api/rpc/{fn['name']}"]["post"]
        assert post["operationId"] == fn["name"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["properties"].keys() == (
            fn["args"]["properties"].keys()
        )
        assert {"200", "400", "401", "403", "404", "409", "413", "429", "500"} <= set(post["responses"])
    for ref in refs(document):
        assert ref.startswith("#/"), ref
        assert resolve(document, ref) is not None, ref
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found]
    except ImportError:
        return
    validate(document)


def test_openapi_describes_every_route(server: TestServer) -> None:
    http = server.client(server.token("alice")).http
    document = http.get("/openapi.json").json()
    check_openapi(document, http.get("/api/functions").json()["functions"])
    codes = document["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert "RateLimited" in codes["properties"]["error"]["properties"]["code"]["enum"]


def test_openapi_nested_models_resolve(running: TestServer) -> None:
    http = running.client(running.token("alice")).http
    document = http.get("/openapi.json").json()
    check_openapi(document, http.get("/api/functions").json()["functions"])
    body = document["paths"]["/api/rpc/distance"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert resolve(document, body["properties"]["a"]["$ref"])["required"] == ["x", "y"]


def test_nested_model_arguments(fresh: HttpClient) -> None:
    assert fresh.call("distance", a={"x": 1, "y": 1}, b={"x": 4, "y": 5}) == 7
    error = fresh.post("distance", {"a": {"x": 1, "y": True}, "b": {"x": "4", "y": 5}}).json()["error"]
    assert {(d["field"], d["type"]) for d in error["details"]} == {("a.y", "int_type"), ("b.x", "int_type")}


def test_return_values_serialize(fresh: HttpClient) -> None:
    assert fresh.call("values") == {
        "aware": "2024-01-02T03:04:05+00:00",
        "naive": "2024-01-02T03:04:05.600000",
        "day": "2024-01-02",
        "bytes": "AP9oaQ==",
        "decimal": "1.10",
        "tuple": [1, "a"],
        "set": [3],
        "frozenset": [4],
        "nested": [{"d": "0.1", "b": "b2s="}],
        "model": {"x": 1, "y": 2},
    }


def test_strict_arguments_accept_exact_types(fresh: HttpClient) -> None:
    result = fresh.call("typed", count=1, ratio=2, flag=True, name="n", when="2024-05-06T07:08:09Z")
    assert result == {"when": "2024-05-06T07:08:09+00:00", "types": ["int", "float", "bool", "str", "datetime"]}


def test_strict_arguments_report_each_field(fresh: HttpClient) -> None:
    body = {"count": False, "ratio": "1.5", "flag": 1, "name": 5, "tags": ["a", 2], "extra": None}
    error = fresh.post("typed", body).json()["error"]
    assert error["code"] == "ValidationFailed"
    assert {(d["field"], d["type"]) for d in error["details"]} == {
        ("count", "int_type"),
        ("ratio", "float_type"),
        ("flag", "bool_type"),
        ("name", "string_type"),
        ("when", "missing"),
        ("tags.1", "string_type"),
        ("extra", "extra_forbidden"),
    }
    assert all(d["message"] for d in error["details"])


def test_ctx_user_names_the_caller(running: TestServer) -> None:
    assert running.client(running.token("zoe")).call("whoami") == {"kind": "user", "id": "zoe"}
    assert running.client().call("whoami") == {"kind": "anonymous", "id": None}
    admin = running.client(running.admin_key).call("whoami")
    assert admin["kind"] == "admin" and isinstance(admin["id"], str) and admin["id"]


def test_action_calls_a_mutation_and_a_query(fresh: HttpClient) -> None:
    first = fresh.call("noteAndCount", text="one")
    second = fresh.call("noteAndCount", text="two")
    assert [first["count"], second["count"]] == [1, 2]
    assert first["row"]["owner_id"] == first["user"]["id"]
    assert first["user"]["kind"] == "user"
    assert fresh.call("getNote", id=second["row"]["id"])["text"] == "two"


def test_action_reports_the_inner_error(fresh: HttpClient) -> None:
    assert fresh.post("relay", {"name": "getNote", "args": {"id": "1"}}).json()["error"]["code"] == "ValidationFailed"
    assert fresh.post("relay", {"name": "nope", "args": {}}).json()["error"]["code"] == "FunctionNotFound"


def test_mutation_reply_carries_its_commit_version(fresh: HttpClient) -> None:
    before = fresh.post("addNote", {"text": "a"}).json()["version"]
    after = fresh.post("addNote", {"text": "b"}).json()["version"]
    assert after > before > 0
    assert fresh.post("countNotes").json()["version"] >= after


def test_db_insert_and_get(fresh: HttpClient) -> None:
    row = fresh.call("addNote", text="hello", rank=3, tag="t")
    assert row == {"id": row["id"], "text": "hello", "rank": 3, "tag": "t", "owner_id": row["owner_id"]}
    assert fresh.call("getNote", id=row["id"]) == row
    assert fresh.call("getNote", id=row["id"] + 10_000) is None


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("=", 3, [3]),
        ("!=", 3, [1, 2, 4, 5]),
        ("<", 3, [1, 2]),
        ("<=", 3, [1, 2, 3]),
        (">", 3, [4, 5]),
        (">=", 3, [3, 4, 5]),
        ("in", [1, 5, 9], [1, 5]),
        ("in", [], []),
    ],
)
def test_db_filter_operators(fresh: HttpClient, op: str, value: Any, expected: list[int]) -> None:
    ranks(fresh, 4, 1, 5, 3, 2)
    assert fresh.call("findNotes", column="rank", op=op, value=value, order="rank") == expected


def test_db_filter_refuses_unknown_operator_and_column(fresh: HttpClient) -> None:
    for args in ({"column": "rank", "op": "LIKE", "value": 1}, {"column": "nope", "op": "=", "value": 1}):
        assert fresh.post("findNotes", args).json()["error"]["code"] == "ValidationFailed"


def test_db_where_order_and_limit(fresh: HttpClient) -> None:
    ranks(fresh, 2, 9, 4, tag="a")
    ranks(fresh, 7, tag="b")
    assert fresh.call("taggedNotes", tag="a") == [9, 4, 2]
    assert fresh.call("taggedNotes", tag="a", limit=2) == [9, 4]
    assert fresh.call("findNotes", column="rank", op=">", value=0, order="-rank", limit=3) == [9, 7, 4]
    assert fresh.call("topNote")["rank"] == 9
    assert fresh.post("taggedNotes", {"tag": "a", "limit": 5000}).json()["error"]["code"] == "ValidationFailed"


def test_db_first_of_nothing_is_null(fresh: HttpClient) -> None:
    assert fresh.call("topNote") is None


@pytest.mark.parametrize("order", ["id", "-id", "rank", "-rank"])
def test_db_paginate_walks_every_row_once(fresh: HttpClient, order: str) -> None:
    ids = ranks(fresh, 5, 1, 4, 2, 3)
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = fresh.call("pageNotes", limit=2, cursor=cursor, order=order)
        seen += [row["id"] for row in page["items"]]
        pages += 1
        if page["is_done"]:
            assert page["cursor"] is None
            break
        cursor = page["cursor"]
    assert pages == 3
    key = {i: r for i, r in zip(ids, (5, 1, 4, 2, 3), strict=True)}
    by = (lambda i: i) if order.endswith("id") else key.__getitem__
    assert seen == sorted(ids, key=by, reverse=order.startswith("-"))


def test_db_paginate_refuses_a_forged_cursor(fresh: HttpClient) -> None:
    error = fresh.post("pageNotes", {"limit": 2, "cursor": "not-a-cursor"}).json()["error"]
    assert error["code"] == "ValidationFailed"


def test_db_count(fresh: HttpClient) -> None:
    assert fresh.call("countNotes") == 0
    ranks(fresh, 1, 2, tag="x")
    ranks(fresh, 3)
    assert fresh.call("countNotes") == 3
    assert fresh.call("countNotes", tag="x") == 2


def test_db_update(fresh: HttpClient) -> None:
    (note,) = ranks(fresh, 1)
    assert fresh.call("editNote", id=note, text="changed")["text"] == "changed"
    assert fresh.call("getNote", id=note)["text"] == "changed"
    assert fresh.post("editNote", {"id": note + 10_000, "text": "x"}).json()["error"]["code"] == "RowNotFound"


def test_db_delete(fresh: HttpClient) -> None:
    keep, drop = ranks(fresh, 1, 2)
    assert fresh.call("dropNote", id=drop)["rank"] == 2
    assert fresh.call("getNote", id=drop) is None
    assert fresh.call("countNotes") == 1 and fresh.call("getNote", id=keep) is not None
    assert fresh.post("dropNote", {"id": drop}).json()["error"]["code"] == "RowNotFound"


def test_db_reads_and_writes_only_the_callers_rows(running: TestServer, fresh: HttpClient) -> None:
    (note,) = ranks(fresh, 1)
    other = running.client(running.token(f"user{next(_users)}"))
    assert other.call("getNote", id=note) is None
    assert other.call("countNotes") == 0
    assert other.post("editNote", {"id": note, "text": "x"}).json()["error"]["code"] == "RowNotFound"
    assert other.post("dropNote", {"id": note}).json()["error"]["code"] == "RowNotFound"
    assert fresh.call("getNote", id=note)["text"] == "n1"
