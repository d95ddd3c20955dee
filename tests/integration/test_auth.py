"""Authentication through a running server: user JWTs (HS256, RS256, ES256), API keys, public functions.

Every refusal of a credential is a 401 (`InvalidToken`, or `Unauthenticated` when none usable was
sent); a signed-in caller refused by row-level security gets a 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from nanotypedb import App, Ctx, InvalidToken, Table, Unauthenticated, owner_policy
from nanotypedb.auth.tokens import mint_token
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.testing import TestServer, serve

OTHER_SECRET = "not-this-servers-secret-" + "x" * 32


# -- helpers --------------------------------------------------------------------


def _claims(sub: str = "carol", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 300, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token PyJWT refuses to sign: `alg: none`, or HS256 keyed with a public key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return signing_input + "."
    return f"{signing_input}.{_b64(hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest())}"


def _refusal(server: TestServer, credential: str | None, function: str = "listTasks") -> tuple[int, str]:
    """(HTTP status, error code) of calling `function` with `credential`."""
    response = server.client(credential).post(function, {})
    return response.status_code, response.json()["error"]["code"]


def _whoami(server: TestServer, credential: str) -> str:
    """The owner the server records for this caller, via the tasks app."""
    owner: str = server.client(credential).call("createTask", title="who am I")["owner_id"]
    return owner


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# -- HS256 with the server secret -----------------------------------------------


def test_a_token_signed_with_the_server_secret_is_accepted(server: TestServer) -> None:
    assert _whoami(server, server.token("alice")) == "alice"


def test_an_expired_token_is_refused(server: TestServer) -> None:
    assert server.service is not None
    expired = jwt.encode(_claims(exp=int(time.time()) - 120), server.service.secret, algorithm="HS256")

    assert _refusal(server, expired) == (401, "InvalidToken")


def test_a_token_signed_with_another_secret_is_refused(server: TestServer) -> None:
    assert _refusal(server, mint_token(OTHER_SECRET, "alice")) == (401, "InvalidToken")


def test_a_token_whose_claims_were_altered_is_refused(server: TestServer) -> None:
    header, _, signature = server.token("alice").split(".")
    altered = f"{header}.{_b64(json.dumps(_claims('bob')).encode())}.{signature}"

    assert _refusal(server, altered) == (401, "InvalidToken")


def test_a_token_without_a_subject_is_refused(server: TestServer) -> None:
    assert server.service is not None
    claims = {k: v for k, v in _claims().items() if k != "sub"}

    assert _refusal(server, jwt.encode(claims, server.service.secret, algorithm="HS256")) == (401, "InvalidToken")


def test_alg_none_is_refused(server: TestServer) -> None:
    unsigned = _hand_made({"alg": "none", "typ": "JWT"}, _claims("alice"))

    assert _refusal(server, unsigned) == (401, "InvalidToken")


# -- RS256 and ES256 from an existing auth provider -------------------------------


@pytest.fixture
def rsa_server(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Iterator[TestServer]:
    pem = tmp_path / "provider.pem"
    pem.write_bytes(_public_pem(rsa_key))
    with serve(tasks_app, tmp_path / "data", jwt_public_key=str(pem)) as running:
        yield running


def test_rs256_with_the_configured_public_key_is_accepted(rsa_server: TestServer, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(_claims("carol"), rsa_key, algorithm="RS256")

    assert _whoami(rsa_server, token) == "carol"
    assert _whoami(rsa_server, rsa_server.token("alice")) == "alice"  # HS256 still works


def test_rs256_signed_with_another_key_is_refused(rsa_server: TestServer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert _refusal(rsa_server, jwt.encode(_claims(), stranger, algorithm="RS256")) == (401, "InvalidToken")


def test_hs256_keyed_with_the_public_key_is_refused(rsa_server: TestServer, rsa_key: rsa.RSAPrivateKey) -> None:
    # The classic algorithm confusion: a verifier that let `alg` pick the key would accept this.
    confused = _hand_made({"alg": "HS256", "typ": "JWT"}, _claims("alice"), _public_pem(rsa_key))

    assert _refusal(rsa_server, confused) == (401, "InvalidToken")


def test_es256_without_a_configured_key_is_refused(server: TestServer, ec_keys: dict[str, Any]) -> None:
    token = jwt.encode(_claims(), ec_keys["k1"], algorithm="ES256", headers={"kid": "k1"})

    assert _refusal(server, token) == (401, "InvalidToken")


@pytest.fixture
def jwks_server(tmp_path: Path, ec_keys: dict[str, ec.EllipticCurvePrivateKey]) -> Iterator[TestServer]:
    keys = [
        {**ECAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid, "use": "sig"} for kid, k in ec_keys.items()
    ]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": keys}))
    with serve(tasks_app, tmp_path / "data", jwks_file=str(jwks)) as running:
        yield running


@pytest.mark.parametrize("kid", ["k1", "k2"])
def test_es256_with_a_jwks_kid_is_accepted(
    jwks_server: TestServer, ec_keys: dict[str, ec.EllipticCurvePrivateKey], kid: str
) -> None:
    token = jwt.encode(_claims("dave"), ec_keys[kid], algorithm="ES256", headers={"kid": kid})

    assert _whoami(jwks_server, token) == "dave"


@pytest.mark.parametrize(
    ("signer", "headers"),
    [("k2", {"kid": "k1"}), ("k1", {"kid": "unknown"}), ("k1", {})],
    ids=["signed-by-another-kid", "unknown-kid", "no-kid"],
)
def test_es256_that_does_not_match_the_jwks_is_refused(
    jwks_server: TestServer, ec_keys: dict[str, ec.EllipticCurvePrivateKey], signer: str, headers: dict[str, str]
) -> None:
    token = jwt.encode(_claims(), ec_keys[signer], algorithm="ES256", headers=headers)

    assert _refusal(jwks_server, token) == (401, "InvalidToken")


# -- audience ---------------------------------------------------------------------


@pytest.fixture
def audience_server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(tasks_app, tmp_path / "data", jwt_audience="ntdb-tests") as running:
        yield running


def test_a_token_for_the_configured_audience_is_accepted(audience_server: TestServer) -> None:
    assert _whoami(audience_server, audience_server.token("erin", audience="ntdb-tests")) == "erin"


@pytest.mark.parametrize("audience", ["another-service", None])
def test_a_token_for_another_or_no_audience_is_refused(audience_server: TestServer, audience: str | None) -> None:
    token = audience_server.token("erin", audience=audience)

    assert _refusal(audience_server, token) == (401, "InvalidToken")


def test_without_an_audience_setting_a_token_with_an_audience_is_refused(server: TestServer) -> None:
    assert _refusal(server, server.token("erin", audience="another-service")) == (401, "InvalidToken")


# -- API keys and the Authorization header ----------------------------------------


def test_a_revoked_api_key_is_refused(server: TestServer) -> None:
    assert server.service is not None
    record, key = server.service.keys.create("ci")
    client = server.client(key)
    assert client.call("countTasks") == 0

    assert server.service.keys.revoke(record.id)

    with pytest.raises(InvalidToken):
        client.call("countTasks")
    assert _refusal(server, key) == (401, "InvalidToken")


def test_an_unknown_api_key_is_refused(server: TestServer) -> None:
    assert _refusal(server, "ntdb_" + "A" * 43) == (401, "InvalidToken")


@pytest.mark.parametrize(
    "authorization", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Token abc", "Bearerabc", "Bearer not-a-jwt", "Bearer a.b.c"]
)
def test_a_malformed_authorization_header_is_401(server: TestServer, authorization: str) -> None:
    response = server.client().post("listTasks", {}, headers={"authorization": authorization})

    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("Unauthenticated", "InvalidToken")


# -- public functions, 401 and 403 ------------------------------------------------

public_app = App("auth_public")


@public_app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    body: str
    owner_id: str | None = None


@public_app.table
class Setting(Table, table="settings"):  # no policy: admins only
    value: str


@public_app.query(name="hello", public=True)
def hello(ctx: Ctx) -> dict[str, Any]:
    return {"kind": ctx.user.kind.value, "notes": ctx.db.query("notes").all()}


@public_app.query(name="myNotes")
def my_notes(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("notes").all()


@public_app.mutation(name="addNote")
def add_note(ctx: Ctx, body: str) -> dict[str, Any]:
    return ctx.db.insert("notes", {"body": body})


@public_app.query(name="settings")
def settings(ctx: Ctx) -> list[dict[str, Any]]:
    return ctx.db.query("settings").all()


@pytest.fixture
def public_server(tmp_path: Path) -> Iterator[TestServer]:
    with serve(public_app, tmp_path / "data") as running:
        yield running


def test_public_functions_are_reachable_anonymously(public_server: TestServer) -> None:
    public_server.client(public_server.token("alice")).call("addNote", body="private")

    assert public_server.client().call("hello") == {"kind": "anonymous", "notes": []}


@pytest.mark.parametrize(("name", "args"), [("myNotes", {}), ("addNote", {"body": "x"}), ("settings", {})])
def test_other_functions_are_401_for_anonymous_callers(public_server: TestServer, name: str, args: Any) -> None:
    response = public_server.client().post(name, args)

    assert (response.status_code, response.json()["error"]["code"]) == (401, "Unauthenticated")


def test_a_bad_credential_is_401_even_for_a_public_function(public_server: TestServer) -> None:
    assert _refusal(public_server, mint_token(OTHER_SECRET, "alice"), "hello") == (401, "InvalidToken")


def test_a_signed_in_user_refused_by_rls_gets_403(public_server: TestServer) -> None:
    user = public_server.client(public_server.token("alice"))
    response = user.post("settings", {})

    assert (response.status_code, response.json()["error"]["code"]) == (403, "PolicyDenied")
    assert public_server.client(public_server.admin_key).call("settings") == []


def test_the_caller_is_signed_in_for_a_public_function(public_server: TestServer) -> None:
    alice = public_server.client(public_server.token("alice"))
    note = alice.call("addNote", body="mine")

    assert alice.call("hello") == {"kind": "user", "notes": [note]}
    with pytest.raises(Unauthenticated):
        public_server.client().call("myNotes")
