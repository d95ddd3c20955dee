"""Every error code over HTTP: its status, the one envelope, the request id, and nothing internal leaked.

The walk at the top sends one request per path and checks the envelope; the
tests below it cover the paths that need state (Conflict), other settings
(PayloadTooLarge, RateLimited) or a second look afterwards (InternalError).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from nanotypedb import App, Ctx, RowNotFound, Table, column, owner_policy
from nanotypedb.errors import ALL_ERRORS
from nanotypedb.testing import HttpClient, TestServer, serve

SECRET = "secret detail"
LEAKS = ("Traceback", 'File "', "SELECT", "INSERT", "UPDATE ", SECRET)

app = App("errors")


@app.table
class Account(Table, table="accounts", policy=owner_policy("owner_id")):
    email: str = column(unique=True)
    owner_id: str | None = None


@app.table
class Ledger(Table, table="ledger"):  # no policy: admins only
    note: str


@app.query()
def echo(ctx: Ctx, n: int, label: str = "") -> int:
    return n


@app.query(public=True)
def hello(ctx: Ctx) -> str:
    return "hello"


@app.mutation(name="signUp")
def sign_up(ctx: Ctx, email: str) -> dict[str, Any]:
    return ctx.db.insert("accounts", {"email": email})


@app.query(name="getAccount")
def get_account(ctx: Ctx, id: int) -> dict[str, Any]:
    row = ctx.db.get("accounts", id)
    if row is None:
        raise RowNotFound(f"No account {id}.")
    return row


@app.mutation(name="renameAccount")
def rename_account(ctx: Ctx, id: int, email: str) -> dict[str, Any]:
    return ctx.db.update("accounts", id, {"email": email})


@app.mutation(name="writeLedger")
def write_ledger(ctx: Ctx, note: str) -> dict[str, Any]:
    return ctx.db.insert("ledger", {"note": note})


@app.action(name="peekAccounts")
def peek_accounts(ctx: Ctx) -> int:
    return ctx.db.count("accounts")


@app.query(name="failQuery")
def fail_query(ctx: Ctx) -> None:
    raise ValueError(SECRET)


@app.mutation(name="failMutation")
def fail_mutation(ctx: Ctx, email: str) -> None:
    ctx.db.insert("accounts", {"email": email})
    raise ValueError(SECRET)


@app.action(name="failAction")
async def fail_action(ctx: Ctx) -> None:
    await asyncio.sleep(0)
    raise ValueError(SECRET)


@app.query()
def unserializable(ctx: Ctx) -> dict[str, Any]:
    return {"value": object()}


@app.mutation(name="unserializableWrite")
def unserializable_write(ctx: Ctx, email: str) -> dict[str, Any]:
    ctx.db.insert("accounts", {"email": email})
    return {"value": object()}


@app.query(rate="2/m burst 2")
def scarce(ctx: Ctx) -> int:
    return 1


@app.query(rate="6/m burst 6")
def plentiful(ctx: Ctx) -> int:
    return 1


@app.query(rate="2/s burst 1")
def brisk(ctx: Ctx) -> int:
    return 1


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with the header's request id and no internals; returns the `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "details", "request_id"}
    assert error["request_id"] and error["request_id"] == response.headers["x-request-id"]
    assert [leak for leak in LEAKS if leak in response.text] == []
    assert "sqlite" not in response.text.lower()
    return error


def detail_types(error: dict[str, Any]) -> set[tuple[str, str]]:
    return {(d["field"], d["type"]) for d in error["details"]}


Credential = Callable[[TestServer], str | None]


def user(name: str) -> Credential:
    return lambda server: f"Bearer {server.token(name)}"


ALICE = user("alice")


def raw(header: str | None) -> Credential:
    return lambda server: header


def expired(server: TestServer) -> str:
    assert server.service is not None
    past = datetime.now(UTC) - timedelta(hours=1)
    claims = {"sub": "alice", "iat": past - timedelta(hours=1), "exp": past}
    return "Bearer " + jwt.encode(claims, server.service.secret, algorithm="HS256")


def foreign(server: TestServer) -> str:
    return "Bearer " + jwt.encode({"sub": "alice", "exp": datetime.now(UTC) + timedelta(hours=1)}, "x" * 64)


@dataclass(frozen=True)
class Request:
    """One HTTP request of the walk: JSON `body` or raw `content`, sent as alice unless told otherwise."""

    method: str
    url: str
    body: Any = None
    content: bytes | None = None
    credential: Credential = ALICE

    def send(self, server: TestServer, http: httpx.Client) -> httpx.Response:
        authorization = self.credential(server)
        headers = {"authorization": authorization} if authorization else {}
        extra: dict[str, Any] = {"content": self.content} if self.content is not None else {}
        if self.body is not None:
            extra["json"] = self.body
        return http.request(self.method, self.url, headers=headers, **extra)


def rpc(name: str, body: Any = None, *, content: bytes | None = None, credential: Credential = ALICE) -> Request:
    if body is None and content is None:
        body = {}
    return Request("POST", f"/api/rpc/{name}", body, content, credential)


WALK: list[tuple[str, Request, int, str]] = [
    ("wrong type", rpc("echo", {"n": "1"}), 400, "ValidationFailed"),
    ("false for an int", rpc("echo", {"n": False}), 400, "ValidationFailed"),
    ("float for an int", rpc("echo", {"n": 1.5}), 400, "ValidationFailed"),
    ("null for an int", rpc("echo", {"n": None}), 400, "ValidationFailed"),
    ("unknown field", rpc("echo", {"n": 1, "colour": "red"}), 400, "ValidationFailed"),
    ("missing required", rpc("echo", {}), 400, "ValidationFailed"),
    ("body is an array", rpc("echo", content=b"[1]"), 400, "ValidationFailed"),
    ("body is a string", rpc("echo", content=b'"n"'), 400, "ValidationFailed"),
    ("body is null", rpc("echo", content=b"null"), 400, "ValidationFailed"),
    ("truncated JSON", rpc("echo", content=b'{"n": 1'), 400, "MalformedMessage"),
    ("trailing comma", rpc("echo", content=b'{"n": 1,}'), 400, "MalformedMessage"),
    ("not JSON at all", rpc("echo", content=b"n=1"), 400, "MalformedMessage"),
    ("no credential", rpc("echo", {"n": 1}, credential=raw(None)), 401, "Unauthenticated"),
    ("not a bearer", rpc("echo", {"n": 1}, credential=raw("Basic YWxpY2U6cHc=")), 401, "Unauthenticated"),
    ("garbage token", rpc("echo", {"n": 1}, credential=raw("Bearer garbage")), 401, "InvalidToken"),
    ("unknown API key", rpc("echo", {"n": 1}, credential=raw("Bearer ntdb_" + "0" * 40)), 401, "InvalidToken"),
    ("expired token", rpc("echo", {"n": 1}, credential=expired), 401, "InvalidToken"),
    ("token of another secret", rpc("echo", {"n": 1}, credential=foreign), 401, "InvalidToken"),
    ("ctx.db in an action", rpc("peekAccounts"), 403, "Forbidden"),
    ("table without policy", rpc("writeLedger", {"note": "x"}), 403, "PolicyDenied"),
    ("unknown function", rpc("nope"), 404, "FunctionNotFound"),
    ("get a missing row", rpc("getAccount", {"id": 999_999}), 404, "RowNotFound"),
    ("update a missing row", rpc("renameAccount", {"id": 999_999, "email": "x@y"}), 404, "RowNotFound"),
    ("unknown route", Request("GET", "/nothing"), 404, "NotFound"),
    ("unknown API route", Request("POST", "/api/nothing", {}), 404, "NotFound"),
    ("GET on rpc", Request("GET", "/api/rpc/echo"), 405, "MethodNotAllowed"),
    ("POST on healthz", Request("POST", "/healthz", {}), 405, "MethodNotAllowed"),
    ("DELETE on functions", Request("DELETE", "/api/functions"), 405, "MethodNotAllowed"),
    ("query raises", rpc("failQuery"), 500, "InternalError"),
    ("mutation raises", rpc("failMutation", {"email": "walk@fail"}), 500, "InternalError"),
    ("action raises", rpc("failAction"), 500, "InternalError"),
    ("result not serializable", rpc("unserializable"), 500, "InternalError"),
]

# Reached only by the tests below the walk (state, other settings).
# UpstreamError is in the AI gateway's tests, AuditExportTooLarge in test_audit.py.
ELSEWHERE = {"Conflict", "PayloadTooLarge", "RateLimited", "UpstreamError", "AuditExportTooLarge"}
# Raised by the command line and start-up, not by calls: test_environments.py and test_env_cli.py reach them.
ELSEWHERE |= {"EnvironmentNotFound", "EnvironmentExists", "InvalidEnvironmentName", "DevelopmentOnly"}
# No client request reaches these: BadRequest is the parent of the 400 codes, and
# ServiceUnavailable needs a closed database.
UNREACHABLE = {"BadRequest", "ServiceUnavailable"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with serve(app, tmp_path_factory.mktemp("errors") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    """Three calls a minute per caller and function, so that no bucket refills during a test."""
    with serve(app, tmp_path_factory.mktemp("limited") / "data", rate_limit="3/m burst 3") as server:
        yield server


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with serve(app, tmp_path_factory.mktemp("small") / "data", max_body_bytes=1000) as server:
        yield server


@pytest.fixture(scope="module")
def alice(running: TestServer) -> HttpClient:
    return running.client(running.token("alice"))


@pytest.fixture(scope="module")
def http(running: TestServer) -> Iterator[httpx.Client]:
    """One connection pool for the whole walk (a new client costs more than a request)."""
    with httpx.Client(base_url=running.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(("request_", "status", "code"), [c[1:] for c in WALK], ids=[c[0] for c in WALK])
def test_walk(running: TestServer, http: httpx.Client, request_: Request, status: int, code: str) -> None:
    assert_envelope(request_.send(running, http), status, code)


def test_walk_covers_every_code() -> None:
    walked = {code for *_, code in WALK}
    assert walked | ELSEWHERE | UNREACHABLE == {e.code for e in ALL_ERRORS}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"n": "1"}, {("n", "int_type")}),
        ({"n": False}, {("n", "int_type")}),
        ({"n": 1, "colour": "red"}, {("colour", "extra_forbidden")}),
        ({}, {("n", "missing")}),
        ({"label": 2, "x": 1}, {("n", "missing"), ("label", "string_type"), ("x", "extra_forbidden")}),
    ],
)
def test_validation_details_name_each_field(alice: HttpClient, body: dict[str, Any], expected: set[Any]) -> None:
    assert detail_types(assert_envelope(alice.post("echo", body), 400, "ValidationFailed")) == expected


def test_conflict_on_unique_column(alice: HttpClient) -> None:
    first = alice.post("signUp", {"email": "dup@example.com"})
    assert first.status_code == 200
    assert_envelope(alice.post("signUp", {"email": "dup@example.com"}), 409, "Conflict")
    assert alice.call("getAccount", id=first.json()["data"]["id"])["email"] == "dup@example.com"


def test_internal_error_hides_the_cause(alice: HttpClient) -> None:
    for name in ("failQuery", "failAction"):
        error = assert_envelope(alice.post(name), 500, "InternalError")
        assert "details" not in error
        assert "ValueError" not in error["message"]


def test_failed_mutation_writes_nothing(alice: HttpClient) -> None:
    assert_envelope(alice.post("failMutation", {"email": "rolled@back"}), 500, "InternalError")
    assert alice.post("signUp", {"email": "rolled@back"}).status_code == 200


def test_connection_survives_an_unserializable_result(alice: HttpClient) -> None:
    assert_envelope(alice.post("unserializable"), 500, "InternalError")
    assert alice.call("echo", n=7) == 7


def test_unserializable_mutation_result_writes_nothing(alice: HttpClient) -> None:
    """A client told that its mutation failed must be able to retry it without a Conflict."""
    assert_envelope(alice.post("unserializableWrite", {"email": "half@done"}), 500, "InternalError")
    assert alice.post("signUp", {"email": "half@done"}).status_code == 200


def padded(size: int) -> bytes:
    """A valid `echo` body of exactly `size` bytes."""
    head = b'{"n": 1, "label": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def chunks(body: bytes, size: int = 256) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_body_at_the_limit_is_accepted(small: TestServer) -> None:
    client = small.client(small.token("alice"))
    assert client.http.post("/api/rpc/echo", content=padded(1000)).json() == {"data": 1, "version": 0}


def test_body_over_the_limit_with_content_length(small: TestServer) -> None:
    response = small.client(small.token("alice")).http.post("/api/rpc/echo", content=padded(1001))
    assert_envelope(response, 413, "PayloadTooLarge")


def test_streamed_body_over_the_limit(small: TestServer) -> None:
    response = small.client(small.token("alice")).http.post("/api/rpc/echo", content=chunks(padded(5000)))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_envelope(response, 413, "PayloadTooLarge")


def test_streamed_body_under_the_limit(small: TestServer) -> None:
    response = small.client(small.token("alice")).http.post("/api/rpc/echo", content=chunks(padded(900)))
    assert response.json()["data"] == 1


def test_body_limit_is_checked_before_credentials(small: TestServer) -> None:
    assert_envelope(small.client().http.post("/api/rpc/echo", content=padded(2000)), 413, "PayloadTooLarge")


def test_default_body_limit_is_one_mebibyte(alice: HttpClient) -> None:
    assert alice.http.post("/api/rpc/echo", content=padded(1_048_576)).json()["data"] == 1
    assert_envelope(alice.http.post("/api/rpc/echo", content=padded(1_048_577)), 413, "PayloadTooLarge")


def exhaust(client: HttpClient, name: str, allowed: int) -> httpx.Response:
    """Make `allowed` successful calls, then return the response of one more."""
    for _ in range(allowed):
        assert client.post(name).status_code == 200
    return client.post(name)


def test_rate_limited_after_the_default_burst(limited: TestServer) -> None:
    response = exhaust(limited.client(limited.token("rl-default")), "hello", 3)
    error = assert_envelope(response, 429, "RateLimited")
    assert 0 < error["details"]["retry_after"] <= 20
    assert int(response.headers["retry-after"]) >= error["details"]["retry_after"]


def test_rate_limit_is_per_caller(limited: TestServer) -> None:
    assert_envelope(exhaust(limited.client(limited.token("rl-carol")), "hello", 3), 429, "RateLimited")
    assert limited.client(limited.token("rl-dave")).post("hello").status_code == 200
    assert limited.client(limited.admin_key).post("hello").status_code == 200


def test_rate_limit_is_per_function(limited: TestServer) -> None:
    erin = limited.client(limited.token("rl-erin"))
    assert_envelope(exhaust(erin, "hello", 3), 429, "RateLimited")
    assert erin.post("plentiful").status_code == 200


def test_function_rate_overrides_a_larger_default(limited: TestServer) -> None:
    assert_envelope(exhaust(limited.client(limited.token("rl-frank")), "scarce", 2), 429, "RateLimited")


def test_function_rate_overrides_a_smaller_default(limited: TestServer) -> None:
    assert_envelope(exhaust(limited.client(limited.token("rl-grace")), "plentiful", 6), 429, "RateLimited")


def test_retry_after_is_honest(limited: TestServer) -> None:
    heidi = limited.client(limited.token("rl-heidi"))
    error = assert_envelope(exhaust(heidi, "brisk", 1), 429, "RateLimited")
    assert error["details"]["retry_after"] <= 0.5
    time.sleep(error["details"]["retry_after"] + 0.05)
    assert heidi.post("brisk").status_code == 200


def test_rate_limit_counts_anonymous_callers_too(limited: TestServer) -> None:
    assert_envelope(exhaust(limited.client(), "hello", 3), 429, "RateLimited")


def test_every_response_carries_a_request_id(alice: HttpClient) -> None:
    responses = [
        alice.http.get("/healthz"),
        alice.http.get("/api/functions"),
        alice.http.get("/openapi.json"),
        alice.post("echo", {"n": 1}),
        alice.post("nope"),
        alice.http.get("/nothing"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 404]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
