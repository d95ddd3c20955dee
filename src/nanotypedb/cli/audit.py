"""`nanotypedb audit verify|export`, and the origin the audit log names for acts of the command line."""

from __future__ import annotations

import getpass
import json
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click

from ..audit import export
from ..audit.verify import describe, verify_chains
from ..lib.ids import request_id
from ..service import Paths
from ..storage import audit as store
from ..storage.engine import Durability, connect
from ..storage.environments import EnvironmentRegistry


def origin(command: str) -> store.Origin:
    """The CLI acts as the operating-system user who ran it, from this host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    return store.Origin("cli", user, f"nanotypedb {command}", request_id(), f"cli@{socket.gethostname()}")


def chains(data_dir: Path) -> list[tuple[str, Path]]:
    """Every chain of a data directory: each registered environment's that has a database (in the registry's
    order, oldest first), then the system database's (as verifyAuditLog). A deleted environment is not one."""
    paths = Paths(data_dir)
    with EnvironmentRegistry(paths.system_db) as registry:
        environments = [e.name for e in registry.list()]
    found = [(f"env:{name}", paths.env_db(name)) for name in environments if paths.env_db(name).exists()]
    return [*found, ("system", paths.system_db)]


def verify(data_dir: Path, as_json: bool) -> None:
    """Print the report; exit 0 when every chain is intact, 1 when one was tampered with."""
    if not Paths(data_dir).system_db.exists():
        raise click.ClickException(f"No databases in {data_dir}: start the server once first.")
    report = verify_chains(chains(data_dir))
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in describe(report):
            click.echo(line)
    sys.exit(0 if report["ok"] else 1)


def export_file(data_dir: Path, environment: str, fmt: str, out: Path | None, filters: dict[str, Any]) -> None:
    """Write the environment's log to `out` (or stdout), page by page as the HTTP download does."""
    path = Paths(data_dir).env_db(environment)
    if not path.exists():
        raise click.ClickException(f"No database at {path}: start the server once first.")
    where = store.Filter.parse(**filters)
    conn = connect(path, Durability.NORMAL, readonly=True)
    try:
        sink = out.open("wb") if out is not None else sys.stdout.buffer
        try:
            for chunk in export.stream(fmt, lambda after, limit: _page(conn, where, after, limit)):
                sink.write(chunk)
        finally:
            if out is not None:
                sink.close()
    finally:
        conn.close()


def _page(conn: sqlite3.Connection, where: store.Filter, after: int, limit: int) -> list[tuple[Any, ...]]:
    try:
        return store.page(conn, where, after, limit)
    except sqlite3.OperationalError as exc:
        raise click.ClickException(f"This database has no audit log ({exc}): start the server once first.") from None
