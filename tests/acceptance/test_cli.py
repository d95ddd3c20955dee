"""The `nanotypedb` command as a user runs it: first start, settings, --app, keys and tokens, each in a subprocess."""

from __future__ import annotations

import hashlib
import stat
import textwrap
from pathlib import Path

import pytest
from _proc import SCRIPT, Launcher, clean_env, data, error_code, mint_token, rpc, run_cli

from nanotypedb.settings import SETTINGS
from nanotypedb.testing import free_port

MINI_APP = """
from nanotypedb import App, Ctx

{attr} = App("mini")


@{attr}.query(name="ping", public=True)
def ping(ctx: Ctx) -> str:
    return "pong from mini"
"""


def write_app(path: Path, attr: str = "app") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MINI_APP.format(attr=attr))
    return path


def gadget_app(path: Path, weight_type: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""
            from nanotypedb import App, Table

            app = App("gadgets")


            @app.table
            class Gadget(Table, table="gadgets"):
                weight: {weight_type}
            """)
    )
    return path


# -- first start ---------------------------------------------------------------------------------


def test_first_start_creates_data_dir_secret_and_prints_key_once(launcher: Launcher, tmp_path: Path) -> None:
    port = free_port()
    server = launcher.spawn(["serve", "--port", str(port)], port, cwd=tmp_path).wait_healthy()
    data_dir = tmp_path / "data"  # the default, relative to the working directory
    assert data_dir.is_dir()
    assert stat.S_IMODE((data_dir / "secret").stat().st_mode) == 0o600
    assert server.admin_key.startswith("ntdb_")  # exactly one key line
    assert server.output.count("ntdb_") == 1


def test_second_start_prints_no_key_and_the_first_key_still_works(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = launcher.serve(data_dir)
    key = first.admin_key
    secret = (data_dir / "secret").read_text()
    assert first.stop() == 0
    second = launcher.serve(data_dir)
    assert "ntdb_" not in second.output
    assert (data_dir / "secret").read_text() == secret
    assert data(rpc(second.client(key), "countTasks")) == 0


def test_printed_key_is_admin_and_sees_every_row(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir)
    for user in ("alice", "bob"):
        data(rpc(server.client(mint_token(data_dir, user)), "createTask", title=f"{user}'s task"))
    rows = data(rpc(server.client(server.admin_key), "listTasks"))
    assert sorted(r["owner_id"] for r in rows) == ["alice", "bob"]


# -- settings ------------------------------------------------------------------------------------


def test_flags_set_port_data_dir_and_durability(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "flagged"
    server = launcher.serve(data_dir, "--durability", "normal")
    assert (data_dir / "secret").exists()
    assert "durability: normal" in server.output


def test_environment_variables_set_port_data_dir_and_durability(launcher: Launcher, tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "from-env"
    env = clean_env(NANOTYPEDB_PORT=str(port), NANOTYPEDB_DATA_DIR=str(data_dir), NANOTYPEDB_DURABILITY="normal")
    server = launcher.spawn(["serve"], port, env=env).wait_healthy()
    assert (data_dir / "secret").exists()
    assert "durability: normal" in server.output


def test_flag_wins_over_environment_variable(launcher: Launcher, tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    env = clean_env(NANOTYPEDB_PORT=str(other), NANOTYPEDB_DATA_DIR=str(tmp_path / "data"))
    launcher.spawn(["serve", "--port", str(port)], port, env=env).wait_healthy()


def test_invalid_durability_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", tmp_path / "data", "--port", str(free_port()), "--durability", "fast")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_serve_help_lists_every_setting_with_its_environment_variable() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # undo click's line wrapping
    for setting in SETTINGS:
        assert f"{setting.flag} " in text
        assert f"[env: {setting.env}]" in text


def test_top_level_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("serve", "keys", "token"):
        assert f"  {name} " in result.stdout


# -- --app ---------------------------------------------------------------------------------------


def test_app_given_as_a_file_path(launcher: Launcher, tmp_path: Path) -> None:
    app_file = write_app(tmp_path / "apps" / "mini.py")
    server = launcher.serve(tmp_path / "data", "--app", str(app_file))
    assert data(rpc(server.client(), "ping")) == "pong from mini"
    assert error_code(rpc(server.client(), "listTasks")) == "FunctionNotFound"


def test_app_given_as_module_and_attribute(launcher: Launcher, tmp_path: Path) -> None:
    write_app(tmp_path / "pkgs" / "mini_module_app.py", attr="backend")
    env = clean_env(PYTHONPATH=str(tmp_path / "pkgs"))
    server = launcher.serve(tmp_path / "data", "--app", "mini_module_app:backend", env=env)
    assert data(rpc(server.client(), "ping")) == "pong from mini"


def test_installed_script_finds_an_app_module_in_the_working_directory(launcher: Launcher, tmp_path: Path) -> None:
    write_app(tmp_path / "project" / "mini_cwd_app.py")
    port = free_port()
    args = ["serve", "--port", str(port), "--app", "mini_cwd_app:app"]
    server = launcher.spawn(args, port, cwd=tmp_path / "project", program=SCRIPT).wait_healthy()
    assert data(rpc(server.client(), "ping")) == "pong from mini"


@pytest.mark.parametrize(
    "spec",
    ["missing/app.py", "no_such_module_for_ntdb:app", "json:dumps", "json", "{app}:nope", "{broken}"],
)
def test_bad_app_is_a_clear_error_with_exit_code_2(tmp_path: Path, spec: str) -> None:
    app_file = write_app(tmp_path / "mini.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    spec = spec.format(app=app_file, broken=broken)
    result = run_cli("serve", "--data-dir", tmp_path / "data", "--port", str(free_port()), "--app", spec)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert spec in result.stderr


def test_schema_change_without_migration_refuses_to_start(launcher: Launcher, tmp_path: Path) -> None:
    data_dir, app_file = tmp_path / "data", tmp_path / "gadgets.py"
    first = launcher.serve(data_dir, "--app", str(gadget_app(app_file, "int")))
    assert first.stop() == 0
    gadget_app(app_file, "str")
    result = run_cli("serve", "--data-dir", data_dir, "--port", str(free_port()), "--app", app_file)
    assert result.returncode == 2
    assert "'gadgets'" in result.stderr
    assert "'weight'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["env/dev/db.sqlite3", "env/dev/analytics.sqlite3", "system.sqlite3"])
def test_a_damaged_database_file_stops_the_start_with_one_line_naming_it(tmp_path: Path, name: str) -> None:
    damaged = tmp_path / "data" / name
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a database, whatever its name says " * 200)
    result = run_cli("serve", "--data-dir", tmp_path / "data", "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith("[StorageError]")
    assert str(damaged.relative_to(tmp_path / "data")) in result.stderr
    assert "Traceback" not in result.stderr
    assert damaged.read_bytes().startswith(b"not a database")  # left as it was, for the operator


# -- keys ----------------------------------------------------------------------------------------


def create_key(data_dir: Path, name: str) -> str:
    result = run_cli("keys", "create", name, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def key_id(data_dir: Path, name: str) -> str:
    listing = run_cli("keys", "list", "--data-dir", data_dir).stdout
    return next(line.split("\t")[0] for line in listing.splitlines() if f"\t{name}\t" in line)


def test_keys_create_prints_the_key_alone_and_it_is_admin(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir)
    data(rpc(server.client(mint_token(data_dir, "alice")), "createTask", title="alice's"))
    result = run_cli("keys", "create", "ci", "--data-dir", data_dir)
    assert result.returncode == 0
    assert result.stdout.startswith("ntdb_")
    assert result.stdout.strip().splitlines() == [result.stdout.strip()]
    rows = data(rpc(server.client(result.stdout.strip()), "listTasks"))
    assert [r["owner_id"] for r in rows] == ["alice"]


def test_keys_create_with_an_empty_name_exits_2(tmp_path: Path) -> None:
    result = run_cli("keys", "create", " ", "--data-dir", tmp_path / "data")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_keys_list_never_shows_a_key_or_its_hash(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "deploy")
    result = run_cli("keys", "list", "--data-dir", data_dir)
    assert result.returncode == 0
    assert "deploy" in result.stdout
    output = result.stdout + result.stderr
    assert key not in output
    assert key[len("ntdb_") :][:8] not in output
    assert hashlib.sha256(key.encode()).hexdigest() not in output


def test_keys_revoke_takes_effect_on_the_running_server(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir)
    key = create_key(data_dir, "temporary")
    client = server.client(key)
    assert data(rpc(client, "countTasks")) == 0
    assert run_cli("keys", "revoke", key_id(data_dir, "temporary"), "--data-dir", data_dir).returncode == 0
    response = rpc(client, "countTasks")
    assert response.status_code == 401
    assert error_code(response) == "InvalidToken"
    assert data(rpc(server.client(server.admin_key), "countTasks")) == 0  # other keys still work


def test_keys_revoke_of_an_unknown_or_revoked_id_fails_with_not_found(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    create_key(data_dir, "once")
    unknown = run_cli("keys", "revoke", "k_00000000", "--data-dir", data_dir)
    assert unknown.returncode == 2 and unknown.stderr.rstrip().endswith("[NotFound]")
    assert "'k_00000000'" in unknown.stderr and "Traceback" not in unknown.stderr
    revoke = ("keys", "revoke", key_id(data_dir, "once"), "--data-dir", data_dir)
    assert run_cli(*revoke).returncode == 0
    assert run_cli(*revoke).returncode == 2


# -- token ---------------------------------------------------------------------------------------


def test_token_is_accepted_and_the_user_sees_only_their_rows(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = launcher.serve(data_dir)
    alice, bob = server.client(mint_token(data_dir, "alice")), server.client(mint_token(data_dir, "bob"))
    mine = data(rpc(alice, "createTask", title="alice's"))
    data(rpc(bob, "createTask", title="bob's"))
    assert [r["id"] for r in data(rpc(alice, "listTasks"))] == [mine["id"]]
    assert mine["owner_id"] == "alice"


def test_token_from_another_data_dir_is_refused(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.serve(tmp_path / "data")
    stranger = server.client(mint_token(tmp_path / "elsewhere", "alice"))
    response = rpc(stranger, "listTasks")
    assert response.status_code == 401
    assert error_code(response) == "InvalidToken"
