"""The audit log with several environments: each environment's acts in its own chain and under its own name,
migrations applied at start-up to another environment audited there, keys and environments audited in the
system chain."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from nanotypedb import App, Table
from nanotypedb.audit.verify import verify_chains
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.service import Paths, create_environment, delete_environment
from nanotypedb.storage import audit as store
from nanotypedb.storage.engine import migrate
from nanotypedb.storage.environments import EnvironmentType
from nanotypedb.storage.migrations import Migration, apply_migrations
from nanotypedb.testing import TestServer, serve

OPS = store.Origin("cli", "ops", "nanotypedb env", "req-1", "cli@host")


def entries(path: Path, **where: Any) -> list[dict[str, Any]]:
    """The entries of the chain in the database at `path`, oldest first, those matching `where`."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(f"SELECT {store.COLUMNS} FROM _audit ORDER BY seq").fetchall()
    found = [store.as_dict(r) for r in rows]
    return [e for e in found if all(e[k] == v for k, v in where.items())]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    create_environment(Paths(data), "staging", EnvironmentType.STAGING)
    return data


@pytest.fixture
def staging(data_dir: Path) -> Iterator[TestServer]:
    with serve(tasks_app, data_dir, env="staging") as server:
        yield server


def test_a_staging_server_records_its_mutations_in_stagings_chain_under_its_name(
    data_dir: Path, staging: TestServer
) -> None:
    assert staging.service is not None and staging.service.environment.name == "staging"
    alice = staging.client(staging.token("alice"))
    task_id = alice.call("createTask", title="staged")["id"]
    paths = Paths(data_dir)
    (created,) = entries(paths.env_db("staging"), table="tasks")
    assert (created["environment"], created["row_id"], created["action"]) == ("staging", task_id, "insert")
    assert entries(paths.env_db("dev"), table="tasks") == []  # dev's database, migrated at start-up, has none
    report = staging.client(staging.admin_key).call("verifyAuditLog")
    assert report["ok"] and [c["chain"] for c in report["chains"]] == ["env:staging", "system"]
    assert staging.service.audit_chains()[0] == ("env:staging", paths.env_db("staging"))


def test_the_export_of_a_staging_server_is_stagings_log(staging: TestServer) -> None:
    staging.client(staging.token("alice")).call("createTask", title="staged")
    exported = staging.client(staging.admin_key).call("exportAuditLog", table="tasks")
    assert [(e["environment"], e["after"]["title"]) for e in exported] == [("staging", "staged")]
    download = staging.client(staging.admin_key).http.get("/api/audit/export?format=csv")
    assert 'filename="audit-staging.csv"' in download.headers["content-disposition"]


class Note(Table, table="notes"):
    body: str


def _notes_app(migrations: int) -> App:
    app = App("notes")
    app.table(Note)
    app.migration(1, "make log", sql="CREATE TABLE log (line TEXT)")
    if migrations >= 2:
        app.migration(2, "first line", sql="INSERT INTO log VALUES ('hello')")
    return app


def _migration_entries(path: Path) -> list[tuple[str, int, str]]:
    return [(e["environment"], e["row_id"], e["actor_id"]) for e in entries(path, action="migration.apply")]


def test_a_migration_applied_at_start_up_to_another_environment_is_audited_there(data_dir: Path) -> None:
    paths = Paths(data_dir)
    with serve(_notes_app(1), data_dir):  # dev's server migrates staging too
        pass
    assert _migration_entries(paths.env_db("dev")) == [("dev", 1, "server")]
    assert _migration_entries(paths.env_db("staging")) == [("staging", 1, "server")]
    with serve(_notes_app(2), data_dir, env="staging"):  # an upgrade, started in staging, migrates dev
        pass
    assert _migration_entries(paths.env_db("dev")) == [("dev", 1, "server"), ("dev", 2, "server")]
    assert _migration_entries(paths.env_db("staging")) == [("staging", 1, "server"), ("staging", 2, "server")]
    chains = [(f"env:{name}", paths.env_db(name)) for name in ("dev", "staging")]
    assert verify_chains(chains)["ok"]


def test_a_migration_another_process_applied_first_has_no_second_entry(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    log = store.AuditLog("staging")
    migrations = [Migration(1, "t", sql="CREATE TABLE t (x)"), Migration(2, "u", sql="CREATE TABLE u (x)")]

    def read_after_the_other_start_up() -> Iterator[Migration]:
        migrate(path, [], migrations, store.DDL, log)  # the other process, with its entries
        yield from migrations

    migrate(path, system=store.DDL)  # an empty database: this start-up's read of the history finds nothing applied
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert apply_migrations(conn, read_after_the_other_start_up(), log) == []
    assert [e["row_id"] for e in entries(path, action="migration.apply")] == [1, 2]
    assert verify_chains([("env:staging", path)])["ok"]


def test_with_audit_off_no_environment_records_its_migrations(data_dir: Path) -> None:
    with serve(_notes_app(1), data_dir, audit="off"):
        pass
    paths = Paths(data_dir)
    assert entries(paths.env_db("dev")) == [] and entries(paths.env_db("staging")) == []


# -- keys and environments, in the system chain --------------------------------------------------


def test_key_acts_carry_the_keys_environment(data_dir: Path, staging: TestServer) -> None:
    assert staging.service is not None
    keys, system_db = staging.service.keys, Paths(data_dir).system_db
    record, _ = keys.create("ci", environment="staging", origin=OPS)
    assert not keys.revoke(record.id, "dev", origin=OPS)  # another environment's key: no act, no entry
    assert keys.revoke(record.id, "staging", origin=OPS)
    acts = entries(system_db, row_id=record.id)
    assert [(e["action"], e["environment"]) for e in acts] == [("key.create", "staging"), ("key.revoke", "staging")]
    (first,) = entries(system_db, action="key.create", actor_id="server")
    assert first["environment"] == "staging" and first["after"]["name"] == "first admin key"


def test_creating_and_deleting_an_environment_are_audited_in_the_system_chain(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data")
    create_environment(paths, "qa", EnvironmentType.STAGING, origin=OPS)
    with serve(tasks_app, paths.root, env="qa") as qa:
        assert qa.admin_key  # the first admin key of qa
    removed = delete_environment(paths, "qa", origin=OPS)
    assert removed == 1
    acts = [(e["action"], e["environment"], e["actor_id"]) for e in entries(paths.system_db)]
    assert acts == [
        ("env.create", "qa", "ops"),
        ("key.create", "qa", "server"),
        ("env.delete", "qa", "ops"),
        ("key.delete", "qa", "ops"),
    ]
    (created,) = entries(paths.system_db, action="env.create")
    assert created["table"] == "_environments" and created["row_id"] == "qa"
    assert created["before"] is None and created["after"]["type"] == "staging"
    (deleted,) = entries(paths.system_db, action="env.delete")
    assert deleted["before"] == created["after"] and deleted["after"] is None
    (key,) = entries(paths.system_db, action="key.delete")
    assert key["before"]["name"] == "first admin key" and "hash" not in key["before"] and key["after"] is None
    assert verify_chains([("system", paths.system_db)])["ok"]


def test_environment_acts_without_an_origin_are_not_recorded(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data")
    create_environment(paths, "qa", EnvironmentType.DEV)  # as with --audit off
    delete_environment(paths, "qa")
    with closing(sqlite3.connect(paths.system_db)) as conn:
        has_log = conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_audit'").fetchone()
        assert has_log is None or conn.execute("SELECT COUNT(*) FROM _audit").fetchone()[0] == 0


def test_a_refused_environment_act_leaves_no_entry(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data")
    create_environment(paths, "qa", EnvironmentType.DEV, origin=OPS)
    with pytest.raises(Exception, match="exists already"):
        create_environment(paths, "qa", EnvironmentType.DEV, origin=OPS)
    assert [e["action"] for e in entries(paths.system_db)] == ["env.create"]
