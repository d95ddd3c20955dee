"""Environments on real servers: two servers (dev and staging) on one data directory, each refusing the other's
keys and tokens over HTTP and WebSocket, keeping its own data; start-up migrating every environment."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from nanotypedb import App, InvalidToken, Table
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.errors import EnvironmentExists, EnvironmentNotFound, Forbidden, InvalidEnvironmentName
from nanotypedb.service import Paths, create_environment, delete_environment
from nanotypedb.storage.engine import migrate
from nanotypedb.storage.environments import EnvironmentRegistry, EnvironmentType
from nanotypedb.storage.migrations import Migration, apply_migrations
from nanotypedb.testing import TestServer, serve

TIMEOUT = 10


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    create_environment(Paths(data), "staging", EnvironmentType.STAGING)
    return data


@pytest.fixture
def dev(data_dir: Path) -> Iterator[TestServer]:
    with serve(tasks_app, data_dir) as server:
        yield server


@pytest.fixture
def staging(data_dir: Path, dev: TestServer) -> Iterator[TestServer]:
    with serve(tasks_app, data_dir, env="staging") as server:
        yield server


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def _ws_handshake_error(server: TestServer, credential: str) -> dict[str, Any]:
    """The error a server sends before closing a socket whose handshake carried `credential`."""
    with connect(server.ws_url, additional_headers={"authorization": f"Bearer {credential}"}) as ws:
        error: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))["error"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        return error


def _ws_auth(server: TestServer, credential: str) -> dict[str, Any]:
    """The reply to an `auth` message carrying `credential` on an anonymous socket."""
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "id": 1, "token": credential}))
        reply: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        return reply


# -- API keys ---------------------------------------------------------------------------------


def test_each_environment_gets_its_own_first_admin_key(dev: TestServer, staging: TestServer) -> None:
    assert dev.service is not None and staging.service is not None
    assert dev.service.first_admin_key and staging.service.first_admin_key
    assert dev.service.first_admin_key != staging.service.first_admin_key
    assert [k.environment for k in dev.service.keys.list("staging")] == ["staging"]
    assert [k.environment for k in dev.service.keys.list("dev")] == ["dev"]


@pytest.mark.parametrize(("owner", "other"), [("dev", "staging"), ("staging", "dev")])
def test_a_key_is_refused_by_the_other_environment_over_http(
    dev: TestServer, staging: TestServer, owner: str, other: str
) -> None:
    servers = {"dev": dev, "staging": staging}
    key = servers[owner].admin_key
    assert servers[owner].client(key).call("countTasks") == 0
    response = servers[other].client(key).post("countTasks", {})
    assert response.status_code == 401
    error = _error(response)
    assert error["code"] == InvalidToken.code
    assert error["details"] == {"reason": "wrong_environment"}
    assert "another environment" in error["message"] and key not in error["message"]
    assert f"{owner!r}" not in error["message"]  # which environment the key is of stays unsaid


@pytest.mark.parametrize(("owner", "other"), [("dev", "staging"), ("staging", "dev")])
def test_a_key_is_refused_by_the_other_environment_over_websocket(
    dev: TestServer, staging: TestServer, owner: str, other: str
) -> None:
    servers = {"dev": dev, "staging": staging}
    key = servers[owner].admin_key
    assert _ws_auth(servers[owner], key)["type"] == "result"
    assert _ws_handshake_error(servers[other], key)["code"] == InvalidToken.code
    reply = _ws_auth(servers[other], key)
    assert reply["type"] == "error" and reply["error"]["details"] == {"reason": "wrong_environment"}


def test_a_key_of_a_deleted_environment_stops_working(tmp_path: Path) -> None:
    data = tmp_path / "data"
    create_environment(Paths(data), "preview", EnvironmentType.DEV)
    with serve(tasks_app, data, env="preview") as preview:
        key = preview.admin_key
        assert preview.client(key).call("countTasks") == 0
    assert delete_environment(Paths(data), "preview") == 1
    assert not Paths(data).env_dir("preview").exists()
    create_environment(Paths(data), "preview", EnvironmentType.DEV)  # the same name, a new environment
    with serve(tasks_app, data, env="preview") as again:
        assert again.client(key).post("countTasks", {}).status_code == 401
        assert again.service is not None and again.service.first_admin_key  # it had no key: a first one


# -- data -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("writer", "reader"), [("dev", "staging"), ("staging", "dev")])
def test_data_written_in_one_environment_is_not_seen_in_the_other(
    dev: TestServer, staging: TestServer, writer: str, reader: str
) -> None:
    servers = {"dev": dev, "staging": staging}
    alice_writer = servers[writer].client(servers[writer].token("alice"))
    alice_writer.call("createTask", title=f"written in {writer}")
    assert [t["title"] for t in alice_writer.call("listTasks")] == [f"written in {writer}"]
    assert servers[reader].client(servers[reader].token("alice")).call("listTasks") == []
    assert servers[reader].client(servers[reader].admin_key).call("countTasks") == 0


def test_each_environment_has_its_own_folder(data_dir: Path, dev: TestServer, staging: TestServer) -> None:
    for name in ("dev", "staging"):
        folder = Paths(data_dir).env_dir(name)
        assert (folder / "db.sqlite3").is_file()
        assert (folder / "files").is_dir()


# -- user tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize(("minted_for", "sent_to"), [("dev", "staging"), ("staging", "dev")])
def test_a_token_for_one_environment_is_refused_by_the_other(
    dev: TestServer, staging: TestServer, minted_for: str, sent_to: str
) -> None:
    servers = {"dev": dev, "staging": staging}
    token = servers[minted_for].token("alice")  # carries env = minted_for
    assert servers[minted_for].client(token).call("countTasks") == 0
    response = servers[sent_to].client(token).post("countTasks", {})
    assert response.status_code == 401
    assert _error(response)["details"] == {"reason": "wrong_environment"}
    assert _ws_handshake_error(servers[sent_to], token)["details"] == {"reason": "wrong_environment"}


def test_an_hs256_token_without_env_claim_is_a_dev_token(dev: TestServer, staging: TestServer) -> None:
    # The secret is shared by every environment: without the claim a token cannot say it is for staging.
    bare = dev.token("alice", environment=None)
    assert "env" not in jwt.decode(bare, options={"verify_signature": False})
    assert dev.client(bare).call("countTasks") == 0
    assert staging.client(bare).post("countTasks", {}).status_code == 401


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_provider_token_without_env_claim_works_wherever_the_provider_is_configured(
    data_dir: Path, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "provider.pem"
    pem.write_bytes(_public_pem(key))
    now = int(time.time())
    token = jwt.encode({"sub": "carol", "iat": now, "exp": now + 300}, key, algorithm="RS256")
    with serve(tasks_app, data_dir, jwt_public_key=str(pem)) as dev, serve(tasks_app, data_dir, env="staging") as st:
        assert dev.client(token).call("countTasks") == 0
        assert st.client(token).post("countTasks", {}).status_code == 401  # staging trusts no provider
    with serve(tasks_app, data_dir, env="staging", jwt_public_key=str(pem)) as staging:
        assert staging.client(token).call("countTasks") == 0
        pinned = jwt.encode({"sub": "carol", "iat": now, "exp": now + 300, "env": "dev"}, key, algorithm="RS256")
        assert _error(staging.client(pinned).post("countTasks", {}))["details"] == {"reason": "wrong_environment"}


# -- start-up ---------------------------------------------------------------------------------


class Note(Table, table="notes"):
    body: str


def _notes_app(migrations: int) -> App:
    app = App("notes")
    app.table(Note)
    app.migration(1, "make log", sql="CREATE TABLE log (line TEXT)")
    if migrations >= 2:
        app.migration(2, "first line", sql="INSERT INTO log VALUES ('hello')")
    return app


def _migrations(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT number FROM _migrations ORDER BY number")]


def test_start_up_migrates_every_environment_and_reports_each(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nanotypedb.service")
    with serve(_notes_app(1), data_dir):
        pass
    paths = Paths(data_dir)
    assert _migrations(paths.env_db("dev")) == [1] and _migrations(paths.env_db("staging")) == [1]
    assert "environment staging (staging): 1 migration applied" in caplog.messages
    assert "environment dev (dev): 1 migration applied" in caplog.messages
    caplog.clear()
    with serve(_notes_app(2), data_dir, env="staging"):  # an upgrade, started in staging
        pass
    assert _migrations(paths.env_db("dev")) == [1, 2] and _migrations(paths.env_db("staging")) == [1, 2]
    assert "environment dev (dev): 1 migration applied" in caplog.messages
    assert "environment staging (staging): 1 migration applied" in caplog.messages
    caplog.clear()
    with serve(_notes_app(2), data_dir):
        pass
    assert "environment dev (dev): up to date" in caplog.messages
    assert "environment staging (staging): up to date" in caplog.messages


def test_readyz_and_metrics_name_the_environment(staging: TestServer) -> None:
    assert httpx.get(f"{staging.url}/readyz").json()["environment"] == "staging"
    text = httpx.get(f"{staging.url}/metrics").text
    assert 'nanotypedb_environment_info{name="staging",type="staging"} 1.0' in text


# -- errors -----------------------------------------------------------------------------------


def test_serving_an_unknown_environment_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentNotFound) as raised:
        TestServer(tasks_app, tmp_path / "data", env="qa").start()
    assert "nanotypedb env create qa" in raised.value.message
    assert raised.value.code == "EnvironmentNotFound" and raised.value.status == 404


@pytest.mark.parametrize("name", ["QA", "qa_1", "-qa", "", "x" * 33, "qa/../dev", "ünï"])
def test_a_bad_environment_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidEnvironmentName):
        TestServer(tasks_app, tmp_path / "data", env=name).start()
    with pytest.raises(InvalidEnvironmentName):
        create_environment(Paths(tmp_path / "data"), name, EnvironmentType.DEV)


def test_names_of_up_to_32_characters_are_accepted(tmp_path: Path) -> None:
    for name in ("a", "9", "prod-eu-2", "x" * 32):
        create_environment(Paths(tmp_path / "data"), name, EnvironmentType.PROD)
    with EnvironmentRegistry(Paths(tmp_path / "data").system_db) as registry:
        assert [e.name for e in registry.list()] == ["dev", "a", "9", "prod-eu-2", "x" * 32]


def test_an_environment_cannot_be_created_twice_nor_dev_deleted(data_dir: Path) -> None:
    with pytest.raises(EnvironmentExists):
        create_environment(Paths(data_dir), "staging", EnvironmentType.PROD)
    with pytest.raises(Forbidden):
        delete_environment(Paths(data_dir), "dev")
    with pytest.raises(EnvironmentNotFound):
        delete_environment(Paths(data_dir), "qa")


def test_a_migration_another_start_up_applied_meanwhile_is_not_run_again(tmp_path: Path) -> None:
    # Servers of two environments started together both bring every environment's database up to date:
    # one may apply a migration after the other has read the history and before it takes the write lock.
    path = tmp_path / "db.sqlite3"
    migrations = [Migration(1, "t", sql="CREATE TABLE t (x)"), Migration(2, "u", sql="CREATE TABLE u (x)")]

    def read_after_the_other_start_up() -> Iterator[Migration]:
        migrate(path, [], migrations)  # the other process, between this one's read of the history and its apply
        yield from migrations

    migrate(path)  # an empty database: this start-up's read of the history finds nothing applied
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert apply_migrations(conn, read_after_the_other_start_up()) == []
    assert _migrations(path) == [1, 2]
