"""`nanotypedb`: serve an app, manage environments and API keys, mint development tokens, back up a data directory."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ..auth.keys import KeyStore
from ..auth.tokens import mint_token
from ..errors import DevelopmentOnly, NanoTypeDBError, NotFound
from ..service import Paths, ensure_secret
from ..settings import Config
from ..storage.environments import EnvironmentType
from ..storage.jobs import STATUSES
from . import audit as cli_audit
from . import backup as cli_backup
from . import jobs as cli_jobs
from .env import env, environment
from .options import with_settings as _with_settings


def _fail(exc: NanoTypeDBError) -> None:
    """Every command's user errors end the same way: one line with the error's code, exit code 2, no traceback."""
    click.echo(f"error: {exc.message} [{exc.code}]", err=True)
    sys.exit(2)


class DefaultGroup(click.Group):
    """A group whose default command is `serve`: plain `nanotypedb` starts the server."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ("--help", "-h")):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup)
def cli() -> None:
    """NanoTypeDB: a realtime backend on SQLite. `nanotypedb` alone runs `nanotypedb serve`."""


@cli.command()
@_with_settings()
def serve(**values: Any) -> None:
    """Run the server with an app (the bundled tasks app by default)."""
    from .serve import run

    try:
        run(Config.from_mapping(values))
    except NanoTypeDBError as exc:
        _fail(exc)


cli.add_command(env)


@cli.group()
def keys() -> None:
    """Create, list and revoke admin API keys of one environment (--env)."""


def _store(data_dir: str, audit: str = "on") -> KeyStore:
    return KeyStore(Paths(Path(data_dir)).system_db, audited=audit == "on")


@keys.command("create")
@click.argument("name")
@_with_settings("data_dir", "env", "audit")
def keys_create(name: str, data_dir: str, env: str, audit: str) -> None:
    """Create an admin API key of the environment; the key is printed once, alone on stdout."""
    environment(data_dir, env)
    record, plaintext = _store(data_dir, audit).create(name, environment=env, origin=cli_audit.origin("keys create"))
    click.echo(f"Created key {record.id} ({record.name}) of {env}. Store it now: it is not shown again.", err=True)
    click.echo(plaintext)


@keys.command("list")
@_with_settings("data_dir", "env")
def keys_list(data_dir: str, env: str) -> None:
    """List the environment's API keys (never the keys themselves)."""
    environment(data_dir, env)
    for r in _store(data_dir).list(env):
        state = f"revoked {r.revoked_at}" if r.revoked_at else "active"
        click.echo(f"{r.id}\t{r.kind}\t{r.name}\t…{r.last4}\t{r.created_at}\t{state}")


@keys.command("revoke")
@click.argument("key_id")
@_with_settings("data_dir", "env", "audit")
def keys_revoke(key_id: str, data_dir: str, env: str, audit: str) -> None:
    """Revoke an API key of the environment by id; it stops working at once."""
    environment(data_dir, env)
    if not _store(data_dir, audit).revoke(key_id, env, origin=cli_audit.origin("keys revoke")):
        raise NotFound(f"There is no active key {key_id!r} in {env!r}: `nanotypedb keys list --env {env}` lists them.")
    click.echo(f"Revoked {key_id}.", err=True)


@cli.command()
@click.option("--user", "user", required=True, help="The user id (the token's `sub`).")
@click.option("--ttl", default=3600, show_default=True, help="Lifetime in seconds.")
@click.option("--force", is_flag=True, help="Mint one for a prod environment too, where it is refused without.")
@_with_settings("data_dir", "env", "secret", "jwt_audience", "jwt_issuer")
def token(
    user: str, ttl: int, force: bool, data_dir: str, env: str, secret: str, jwt_audience: str, jwt_issuer: str
) -> None:
    """Mint a development user token of the environment (HS256 with the server secret), printed alone on stdout."""
    target = environment(data_dir, env)
    if target is not None and target.type is EnvironmentType.PROD and not force:
        raise DevelopmentOnly(
            f"{env!r} is a prod environment: minting user tokens from the command line is a development "
            "convenience, refused there. Let your login code or identity provider issue them, or pass --force."
        )
    key = secret or ensure_secret(Paths(Path(data_dir)))
    lifetime = dt.timedelta(seconds=ttl)
    aud, iss = jwt_audience or None, jwt_issuer or None
    click.echo(mint_token(key, user, ttl=lifetime, audience=aud, issuer=iss, environment=env))


@cli.group()
def jobs() -> None:
    """List, re-drive and purge jobs of the queue (dead ones, mostly)."""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only jobs of this status.")
@click.option("--queue", default=None, help="Only jobs of this handler.")
@click.option("--limit", default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with each job's payload and error history).")
@_with_settings("data_dir", "env")
def jobs_list(status: str | None, queue: str | None, limit: int, as_json: bool, data_dir: str, env: str) -> None:
    """List queued, running and dead jobs (done jobs leave the queue): id, handler, status, attempts, last error."""
    cli_jobs.list_jobs(cli_jobs.queue_path(data_dir, env), status, queue, limit, as_json)


@jobs.command("redrive")
@click.argument("ids", nargs=-1, type=int)
@click.option("--queue", default=None, help="Only dead jobs of this handler.")
@_with_settings("data_dir", "env", "audit")
def jobs_redrive(ids: tuple[int, ...], queue: str | None, data_dir: str, env: str, audit: str) -> None:
    """Run dead jobs again (these ids, or all of --queue, or all), with a fresh count of attempts."""
    cli_jobs.redrive(cli_jobs.queue_path(data_dir, env), env, ids, queue, audited=audit == "on")


@jobs.command("purge")
@click.option("--status", type=click.Choice(STATUSES), default="dead", show_default=True)
@click.option("--queue", default=None, help="Only jobs of this handler.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_with_settings("data_dir", "env", "audit")
def jobs_purge(status: str, queue: str | None, yes: bool, data_dir: str, env: str, audit: str) -> None:
    """Delete jobs of one status (dead by default)."""
    path = cli_jobs.queue_path(data_dir, env)
    if not yes:
        click.confirm(f"Delete every {status} job{f' of {queue}' if queue else ''} in {env}?", abort=True)
    cli_jobs.purge(path, env, status, queue, audited=audit == "on")


@cli.group()
def audit() -> None:
    """Verify the audit log's hash chains, and export it."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_with_settings("data_dir")
def audit_verify(as_json: bool, data_dir: str) -> None:
    """Check every audit chain (each registered environment's, and the system's); exit 1 naming each edited,
    inserted or deleted entry."""
    cli_audit.verify(Path(data_dir), as_json)


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(("csv", "json", "ndjson")), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="The file to write (default: stdout).")
@click.option("--since", default=None, help="Only entries at or after this ISO 8601 time.")
@click.option("--until", default=None, help="Only entries before this ISO 8601 time.")
@click.option("--actor", default=None, help="Only entries of this actor: kind:id, or an id.")
@click.option("--table", default=None, help="Only entries of this table.")
@_with_settings("data_dir", "env")
def audit_export(fmt: str, out: Path | None, data_dir: str, env: str, **filters: str | None) -> None:
    """Export an environment's audit log as CSV (spreadsheet-safe), a JSON array or NDJSON, in constant memory."""
    environment(data_dir, env)
    cli_audit.export_file(Path(data_dir), env, fmt, out, filters)


@cli.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="A new directory for the copy.")
@_with_settings("data_dir", "env")
def backup(out: Path, data_dir: str, env: str) -> None:
    """Copy an environment's databases, the system database and the secret, safely while the server runs, into a
    new directory."""
    environment(data_dir, env)
    for path in cli_backup.run_backup(Path(data_dir), out, env):
        click.echo(f"wrote {path}", err=True)
    click.echo(str(out))


@cli.command()
@_with_settings()
def worker(**values: Any) -> None:
    """Run the app's job handlers in this process, beside a server started with --job-workers 0."""
    cli_jobs.run_worker(Config.from_mapping(values))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cli()
    except NanoTypeDBError as exc:
        _fail(exc)
