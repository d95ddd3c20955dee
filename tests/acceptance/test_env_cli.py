"""`nanotypedb env` and `--env` as a user runs them: create, list, delete with confirmation, commands bound to one
environment, prod refusing development tokens, two servers on one data directory."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import jwt
import pytest
from _proc import Launcher, clean_env, command, data, error_code, rpc, run_cli

DATA = "--data-dir"


def code_of(result: subprocess.CompletedProcess[str]) -> str:
    """The error code a failed command ends its one `error:` line with."""
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and line.endswith("]"), result.stderr
    return line.rsplit("[", 1)[1].rstrip("]")


def listed(data_dir: Path) -> list[dict[str, str]]:
    result = run_cli("env", "list", "--json", DATA, data_dir)
    assert result.returncode == 0, result.stderr
    environments: list[dict[str, str]] = json.loads(result.stdout)["environments"]
    return environments


def delete_typing(data_dir: Path, name: str, typed: str) -> tuple[int, str]:
    """`env delete NAME` on a terminal (a pty) where the user types `typed`; (exit code, everything printed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        command("env", "delete", name, DATA, str(data_dir)), stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    os.write(leader, f"{typed}\n".encode())
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process exited and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout=30), out.decode()


# -- create, list, delete ---------------------------------------------------------------------


def test_create_list_and_delete(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = run_cli("env", "create", "staging", "--type", "staging", DATA, data_dir)
    assert created.returncode == 0, created.stderr
    assert "nanotypedb serve --env staging" in created.stderr
    assert (data_dir / "env" / "staging" / "files").is_dir()
    assert run_cli("env", "create", "prod", "--type", "prod", DATA, data_dir).returncode == 0
    assert [(e["name"], e["type"]) for e in listed(data_dir)] == [
        ("dev", "dev"),
        ("staging", "staging"),
        ("prod", "prod"),
    ]
    text = run_cli("env", "list", DATA, data_dir).stdout.splitlines()
    assert [line.split("\t")[:2] for line in text] == [["dev", "dev"], ["staging", "staging"], ["prod", "prod"]]

    key = run_cli("keys", "create", "ci", "--env", "staging", DATA, data_dir)
    assert key.returncode == 0, key.stderr
    deleted = run_cli("env", "delete", "staging", "--yes", DATA, data_dir)
    assert deleted.returncode == 0, deleted.stderr
    assert "1 API key" in deleted.stderr
    assert not (data_dir / "env" / "staging").exists()
    assert [e["name"] for e in listed(data_dir)] == ["dev", "prod"]
    assert code_of(run_cli("keys", "list", "--env", "staging", DATA, data_dir)) == "EnvironmentNotFound"


def test_create_refuses_a_bad_name_and_a_taken_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bad = run_cli("env", "create", "Staging_1", DATA, data_dir)
    assert bad.returncode == 2 and code_of(bad) == "InvalidEnvironmentName"
    assert "lowercase letters" in bad.stderr
    assert run_cli("env", "create", "qa", DATA, data_dir).returncode == 0
    again = run_cli("env", "create", "qa", "--type", "prod", DATA, data_dir)
    assert again.returncode == 2 and code_of(again) == "EnvironmentExists"
    assert code_of(run_cli("env", "create", "dev", DATA, data_dir)) == "EnvironmentExists"


def test_delete_without_yes_is_refused_when_stdin_is_not_a_terminal(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "create", "qa", DATA, data_dir)
    result = subprocess.run(
        command("env", "delete", "qa", DATA, str(data_dir)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and code_of(result) == "BadRequest"
    assert "--yes" in result.stderr
    assert (data_dir / "env" / "qa").is_dir()
    assert [e["name"] for e in listed(data_dir)] == ["dev", "qa"]


def test_delete_on_a_terminal_needs_the_name_typed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "create", "qa", DATA, data_dir)
    status, out = delete_typing(data_dir, "qa", "yes")
    assert status == 2 and "Type its name to confirm" in out and "[BadRequest]" in out
    assert (data_dir / "env" / "qa").is_dir()
    status, out = delete_typing(data_dir, "qa", "qa")
    assert status == 0, out
    assert not (data_dir / "env" / "qa").exists()
    assert [e["name"] for e in listed(data_dir)] == ["dev"]


def test_dev_cannot_be_deleted_nor_an_unknown_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "list", DATA, data_dir)
    dev = run_cli("env", "delete", "dev", "--yes", DATA, data_dir)
    assert dev.returncode == 2 and code_of(dev) == "Forbidden"
    unknown = run_cli("env", "delete", "qa", "--yes", DATA, data_dir)
    assert unknown.returncode == 2 and code_of(unknown) == "EnvironmentNotFound"
    assert code_of(run_cli("env", "delete", "Q A", "--yes", DATA, data_dir)) == "InvalidEnvironmentName"


# -- --env on the other commands --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["worker"],
        ["keys", "create", "ci"],
        ["keys", "list"],
        ["keys", "revoke", "k_00000000"],
        ["token", "--user", "alice"],
        ["jobs", "list"],
        ["jobs", "redrive"],
        ["jobs", "purge", "--yes"],
        ["backup", "--out", "copy"],
        ["audit", "export"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_every_command_refuses_an_unknown_or_badly_named_environment(tmp_path: Path, args: list[str]) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "list", DATA, data_dir)  # a data directory with its registry
    unknown = run_cli(*args, "--env", "qa", DATA, data_dir, cwd=tmp_path)
    assert unknown.returncode == 2 and code_of(unknown) == "EnvironmentNotFound"
    assert "nanotypedb env create qa" in unknown.stderr and "Traceback" not in unknown.stderr
    bad = run_cli(*args, "--env", "QA", DATA, data_dir, cwd=tmp_path)
    assert bad.returncode == 2 and code_of(bad) == "InvalidEnvironmentName"


def test_the_env_variable_selects_the_environment_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_cli("keys", "list", DATA, data_dir, env=clean_env(NANOTYPEDB_ENV="qa"))
    assert code_of(result) == "EnvironmentNotFound"


def test_keys_belong_to_one_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "create", "staging", "--type", "staging", DATA, data_dir)
    assert run_cli("keys", "create", "dev-ci", DATA, data_dir).returncode == 0
    assert run_cli("keys", "create", "staging-ci", "--env", "staging", DATA, data_dir).returncode == 0
    dev_keys = run_cli("keys", "list", DATA, data_dir).stdout.splitlines()
    staging_keys = run_cli("keys", "list", "--env", "staging", DATA, data_dir).stdout.splitlines()
    assert [line.split("\t")[2] for line in dev_keys] == ["dev-ci"]
    assert [line.split("\t")[2] for line in staging_keys] == ["staging-ci"]
    dev_key_id = dev_keys[0].split("\t")[0]
    wrong = run_cli("keys", "revoke", dev_key_id, "--env", "staging", DATA, data_dir)
    assert wrong.returncode == 2 and "no active key" in wrong.stderr and wrong.stderr.rstrip().endswith("[NotFound]")
    assert run_cli("keys", "revoke", dev_key_id, DATA, data_dir).returncode == 0


# -- prod -------------------------------------------------------------------------------------


def test_prod_refuses_cli_tokens_without_force(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "create", "live", "--type", "prod", DATA, data_dir)
    refused = run_cli("token", "--user", "alice", "--env", "live", DATA, data_dir)
    assert refused.returncode == 2 and code_of(refused) == "DevelopmentOnly"
    assert refused.stdout == "" and "--force" in refused.stderr
    forced = run_cli("token", "--user", "alice", "--env", "live", "--force", DATA, data_dir)
    assert forced.returncode == 0, forced.stderr
    claims = jwt.decode(forced.stdout.strip(), options={"verify_signature": False})
    assert claims["env"] == "live" and claims["sub"] == "alice"


def test_staging_tokens_need_no_force(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "create", "staging", "--type", "staging", DATA, data_dir)
    result = run_cli("token", "--user", "alice", "--env", "staging", DATA, data_dir)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), options={"verify_signature": False})["env"] == "staging"


# -- two servers ------------------------------------------------------------------------------


def test_two_servers_on_one_data_directory_keep_to_their_environment(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("env", "create", "staging", "--type", "staging", DATA, data_dir)
    dev = launcher.serve(data_dir)
    staging = launcher.serve(data_dir, "--env", "staging")
    for server in (dev, staging):
        assert "environment dev (dev): " in server.output
        assert "environment staging (staging): " in server.output
    assert "(environment: staging, staging;" in staging.output
    assert dev.admin_key != staging.admin_key

    staging_key = run_cli("keys", "create", "ci", "--env", "staging", DATA, data_dir).stdout.strip()
    assert data(rpc(staging.client(staging_key), "countTasks")) == 0
    assert error_code(rpc(dev.client(staging_key), "countTasks")) == "InvalidToken"
    assert error_code(rpc(staging.client(dev.admin_key), "countTasks")) == "InvalidToken"

    staging_token = run_cli("token", "--user", "alice", "--env", "staging", DATA, data_dir).stdout.strip()
    dev_token = run_cli("token", "--user", "alice", DATA, data_dir).stdout.strip()
    data(rpc(staging.client(staging_token), "createTask", title="only in staging"))
    assert data(rpc(dev.client(dev_token), "listTasks")) == []
    assert rpc(dev.client(staging_token), "listTasks").status_code == 401
    assert rpc(staging.client(dev_token), "listTasks").status_code == 401
    assert dev.stop() == 0 and staging.stop() == 0
