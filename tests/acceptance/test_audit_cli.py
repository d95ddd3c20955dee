"""`nanotypedb audit verify|export` as a real subprocess beside a real server, and the CLI's own acts audited."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _proc import Launcher, ServerProcess, data, error_code, mint_token, rpc, run_cli

from nanotypedb.audit.export import restore
from nanotypedb.storage import audit as store


def verify_json(data_dir: Path) -> tuple[int, dict[str, Any]]:
    result = run_cli("audit", "verify", "--json", "--data-dir", data_dir)
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def chain(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["chains"] if c["chain"] == name)


def rows(path: Path, sql: str = f"SELECT {store.COLUMNS} FROM _audit ORDER BY seq") -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        return [store.as_dict(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def execute(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def running(launcher: Launcher, tmp_path: Path) -> tuple[ServerProcess, Path]:
    data_dir = tmp_path / "data"
    # No embeddings: their jobs would append entries while the test tampers with the newest ones.
    server = launcher.serve(data_dir, "--embedding-provider", "none")
    alice = server.client(mint_token(data_dir, "alice"))
    for title in ("one", "=2+3", "three", "four"):
        data(rpc(alice, "createTask", title=title))
    return server, data_dir


def env_db(data_dir: Path) -> Path:
    return data_dir / "env" / "dev" / "db.sqlite3"


def test_verify_says_intact_for_both_chains(running: tuple[ServerProcess, Path]) -> None:
    _, data_dir = running
    plain = run_cli("audit", "verify", "--data-dir", data_dir)
    assert plain.returncode == 0, plain.stderr
    assert "env:dev: intact" in plain.stdout and "system: intact" in plain.stdout
    code, report = verify_json(data_dir)
    assert code == 0 and report["ok"]
    assert chain(report, "system")["entries"] == 1  # the first admin key
    assert chain(report, "env:dev")["entries"] >= 4


def test_keys_and_jobs_commands_are_audited_as_the_cli(running: tuple[ServerProcess, Path]) -> None:
    _, data_dir = running
    created = run_cli("keys", "create", "ops", "--data-dir", data_dir)
    assert created.returncode == 0
    key_id = created.stderr.split()[2]
    assert run_cli("keys", "revoke", key_id, "--data-dir", data_dir).returncode == 0
    assert run_cli("jobs", "redrive", "--data-dir", data_dir).returncode == 0
    system = [e for e in rows(data_dir / "system.sqlite3") if e["row_id"] == key_id]
    assert [(e["action"], e["actor_kind"], e["function"]) for e in system] == [
        ("key.create", "cli", "nanotypedb keys create"),
        ("key.revoke", "cli", "nanotypedb keys revoke"),
    ]
    assert created.stdout.strip() not in json.dumps(system)
    (redrive,) = [e for e in rows(env_db(data_dir)) if e["action"] == "jobs.redrive"]
    assert redrive["actor_kind"] == "cli" and redrive["after"]["count"] == 0
    code, report = verify_json(data_dir)
    assert code == 0 and report["ok"]


def _task_seqs(data_dir: Path) -> list[int]:
    return [e["seq"] for e in rows(env_db(data_dir)) if e["table"] == "tasks"]


def _edit(seqs: list[int]) -> tuple[str, int]:
    return f"UPDATE _audit SET client = '10.0.0.1' WHERE seq = {seqs[1]}", seqs[1]


def _delete_middle(seqs: list[int]) -> tuple[str, int]:
    return f"DELETE FROM _audit WHERE seq = {seqs[1]}", seqs[1]


def _delete_last(seqs: list[int]) -> tuple[str, int]:
    return f"DELETE FROM _audit WHERE seq = {seqs[-1]}", seqs[-1]


def _insert(seqs: list[int]) -> tuple[str, int]:
    # A copy of the newest entry, appended after it and linked to it.
    copy = f"""INSERT INTO _audit ({store.COLUMNS}) SELECT seq + 1, time, environment, actor_kind, actor_id, function,
        table_name, row_id, action, before, after, request_id, client, hash, hash FROM _audit WHERE seq = {seqs[-1]}"""
    return copy, seqs[-1] + 1


@pytest.mark.parametrize(
    ("tamper", "kind"),
    [(_edit, "edited"), (_delete_middle, "deleted"), (_delete_last, "deleted"), (_insert, "inserted")],
    ids=["edited", "deleted-middle", "deleted-last", "inserted"],
)
def test_verify_names_the_tampered_entry_and_its_chain(
    running: tuple[ServerProcess, Path], tamper: Any, kind: str
) -> None:
    server, data_dir = running
    sql, expected = tamper(_task_seqs(data_dir))
    execute(env_db(data_dir), sql)
    code, report = verify_json(data_dir)
    assert code == 1 and not report["ok"]
    assert chain(report, "system")["ok"]
    problems = chain(report, "env:dev")["problems"]
    assert [(p["kind"], p["seq"]) for p in problems] == [(kind, expected)], problems
    plain = run_cli("audit", "verify", "--data-dir", data_dir)
    assert plain.returncode == 1 and f"{kind} at seq {expected}" in plain.stdout and "env:dev: TAMPERED" in plain.stdout
    # The admin function gives the same report.
    admin = server.client(server.admin_key)
    assert data(rpc(admin, "verifyAuditLog"))["chains"][0]["problems"] == problems


def test_an_edited_system_chain_is_reported_as_such(running: tuple[ServerProcess, Path]) -> None:
    _, data_dir = running
    execute(data_dir / "system.sqlite3", "UPDATE _audit SET actor_id = 'nobody' WHERE seq = 1")
    code, report = verify_json(data_dir)
    assert code == 1 and chain(report, "env:dev")["ok"]
    assert chain(report, "system")["problems"][0]["kind"] == "edited"


def test_export_to_a_csv_file_round_trips(running: tuple[ServerProcess, Path], tmp_path: Path) -> None:
    _, data_dir = running
    out = tmp_path / "audit.csv"
    result = run_cli("audit", "export", "--format", "csv", "--out", out, "--table", "tasks", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as f:
        exported = list(csv.DictReader(f))
    titles = [json.loads(r["after"])["title"] for r in exported]
    assert titles == ["one", "=2+3", "three", "four"]
    assert all(restore(r["actor_id"]) == "alice" for r in exported)
    to_stdout = run_cli("audit", "export", "--format", "ndjson", "--actor", "user:alice", "--data-dir", data_dir)
    assert [json.loads(line)["after"]["title"] for line in io.StringIO(to_stdout.stdout)] == titles


def test_export_refuses_bad_arguments(running: tuple[ServerProcess, Path], tmp_path: Path) -> None:
    server, data_dir = running
    bad = run_cli("audit", "export", "--since", "last tuesday", "--data-dir", data_dir)
    assert bad.returncode == 2 and "not an ISO 8601 date" in bad.stderr
    fmt = run_cli("audit", "export", "--format", "xml", "--data-dir", data_dir)
    assert fmt.returncode == 2 and "xml" in fmt.stderr
    assert error_code(server.client(server.admin_key).get("/api/audit/export?format=xml")) == "ValidationFailed"


def test_audit_commands_need_a_database(tmp_path: Path) -> None:
    for args in (["audit", "verify"], ["audit", "export"]):
        result = run_cli(*args, "--data-dir", tmp_path / "nothing")
        assert result.returncode != 0 and "start the server once first" in result.stderr


# -- environments -----------------------------------------------------------------------------


@pytest.fixture
def two_environments(launcher: Launcher, tmp_path: Path) -> tuple[ServerProcess, Path]:
    """A dev server on a data directory with a staging environment too (its start-up made staging's database)."""
    data_dir = tmp_path / "data"
    created = run_cli("env", "create", "staging", "--type", "staging", "--data-dir", data_dir)
    assert created.returncode == 0, created.stderr
    return launcher.serve(data_dir, "--embedding-provider", "none"), data_dir


def test_the_cli_acts_of_an_environment_name_it_and_land_in_its_chain(
    two_environments: tuple[ServerProcess, Path],
) -> None:
    _, data_dir = two_environments
    staging_db = data_dir / "env" / "staging" / "db.sqlite3"
    created = run_cli("keys", "create", "ci", "--env", "staging", "--data-dir", data_dir)
    assert created.returncode == 0, created.stderr
    key_id = created.stderr.split()[2]
    assert run_cli("keys", "revoke", key_id, "--env", "staging", "--data-dir", data_dir).returncode == 0
    assert run_cli("jobs", "redrive", "--env", "staging", "--data-dir", data_dir).returncode == 0
    assert run_cli("jobs", "purge", "--yes", "--env", "staging", "--data-dir", data_dir).returncode == 0
    keys = [(e["action"], e["environment"]) for e in rows(data_dir / "system.sqlite3") if e["row_id"] == key_id]
    assert keys == [("key.create", "staging"), ("key.revoke", "staging")]
    jobs = [(e["action"], e["environment"], e["actor_kind"]) for e in rows(staging_db) if e["table"] == "_jobs"]
    assert jobs == [("jobs.redrive", "staging", "cli"), ("jobs.purge", "staging", "cli")]
    assert [e for e in rows(env_db(data_dir)) if e["table"] == "_jobs"] == []  # dev's chain has none of them
    exported = run_cli("audit", "export", "--format", "ndjson", "--env", "staging", "--data-dir", data_dir)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in io.StringIO(exported.stdout)]
    assert {e["environment"] for e in lines} == {"staging"}
    assert [e["action"] for e in lines if e["table"] == "_jobs"] == ["jobs.redrive", "jobs.purge"]


def test_verify_checks_every_registered_environment_and_no_deleted_one(
    two_environments: tuple[ServerProcess, Path],
) -> None:
    _, data_dir = two_environments
    code, report = verify_json(data_dir)
    assert code == 0 and [c["chain"] for c in report["chains"]] == ["env:dev", "env:staging", "system"]
    assert chain(report, "env:staging")["entries"] >= 1  # the demo's migrations, applied by dev's start-up
    execute(data_dir / "env" / "staging" / "db.sqlite3", "UPDATE _audit SET client = 'x' WHERE seq = 1")
    code, report = verify_json(data_dir)
    assert code == 1 and chain(report, "env:dev")["ok"] and not chain(report, "env:staging")["ok"]
    deleted = run_cli("env", "delete", "staging", "--yes", "--data-dir", data_dir)
    assert deleted.returncode == 0, deleted.stderr
    code, report = verify_json(data_dir)
    assert code == 0 and [c["chain"] for c in report["chains"]] == ["env:dev", "system"]


def test_creating_and_deleting_an_environment_are_audited_as_the_cli(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("env", "create", "qa", "--data-dir", data_dir).returncode == 0
    assert run_cli("keys", "create", "ci", "--env", "qa", "--data-dir", data_dir).returncode == 0
    assert run_cli("env", "delete", "qa", "--yes", "--data-dir", data_dir).returncode == 0
    assert run_cli("env", "create", "off", "--audit", "off", "--data-dir", data_dir).returncode == 0
    acts = [(e["action"], e["environment"], e["actor_kind"], e["function"]) for e in rows(data_dir / "system.sqlite3")]
    assert acts == [
        ("env.create", "qa", "cli", "nanotypedb env create"),
        ("key.create", "qa", "cli", "nanotypedb keys create"),
        ("env.delete", "qa", "cli", "nanotypedb env delete"),
        ("key.delete", "qa", "cli", "nanotypedb env delete"),
    ]
    code, report = verify_json(data_dir)
    assert code == 0 and chain(report, "system")["entries"] == 4
