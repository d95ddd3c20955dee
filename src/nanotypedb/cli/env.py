"""`nanotypedb env create|list|delete`: the environments of a data directory, each with its own database, files
and API keys; and `environment()`, how the other commands check their `--env`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import BadRequest
from ..service import Paths, create_environment, deletable, delete_environment, registered
from ..storage.audit import Origin
from ..storage.environments import DEFAULT_ENVIRONMENT, Environment, EnvironmentRegistry, EnvironmentType, check_name
from .audit import origin
from .options import with_settings

TYPES = tuple(t.value for t in EnvironmentType)


def environment(data_dir: str, name: str) -> Environment | None:
    """The registered environment `name`, or None for `dev` of a data directory no server has started in
    yet (a command on it behaves as before environments, without creating files just to check)."""
    paths = Paths(Path(data_dir))
    if check_name(name) == DEFAULT_ENVIRONMENT and not paths.system_db.exists():
        return None
    return registered(paths, name)


@click.group("env")
def env() -> None:
    """Create, list and delete environments (dev, staging, prod, ...): each has its own database, files and keys."""


@env.command("create")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(TYPES), default="dev", show_default=True, help="What it is for.")
@with_settings("data_dir", "audit")
def create(name: str, kind: str, data_dir: str, audit: str) -> None:
    """Register an environment NAME (1-32 of a-z, 0-9 and -) and make its folder."""
    paths = Paths(Path(data_dir))
    create_environment(paths, name, EnvironmentType(kind), origin=_origin("env create", audit))
    click.echo(
        f"Created environment {name} ({kind}) in {paths.env_dir(name)}. Serve it with "
        f"`nanotypedb serve --env {name}`, which prints its first admin key.",
        err=True,
    )


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {environments: [{name, type, created_at}]}.")
@with_settings("data_dir")
def list_(as_json: bool, data_dir: str) -> None:
    """List the environments: name, type, creation time."""
    with EnvironmentRegistry(Paths(Path(data_dir)).system_db) as registry:
        environments = registry.list()
    if as_json:
        click.echo(json.dumps({"environments": [e.to_dict() for e in environments]}))
        return
    for e in environments:
        click.echo(f"{e.name}\t{e.type.value}\t{e.created_at}")


@env.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask to type the name (needed when stdin is not a terminal).")
@with_settings("data_dir", "audit")
def delete(name: str, yes: bool, data_dir: str, audit: str) -> None:
    """Delete an environment: its folder (database, files, logs) and its API keys, for good. Stop its server first."""
    paths = Paths(Path(data_dir))
    environment = deletable(paths, name)
    if not yes:
        _confirm(environment, paths.env_dir(name))
    keys = delete_environment(paths, name, origin=_origin("env delete", audit))
    click.echo(f"Deleted environment {name}: removed {paths.env_dir(name)} and {keys} API key(s).", err=True)


def _origin(command: str, audit: str) -> Origin | None:
    """Who runs `command`, for its entry in the system database's audit chain; None when the log is off."""
    return origin(command) if audit == "on" else None


def _confirm(environment: Environment, folder: Path) -> None:
    """Ask for the name to be typed: a y/n question is too easy to answer by reflex for what cannot be undone."""
    name = environment.name
    if not sys.stdin.isatty():
        raise BadRequest(f"Deleting {name!r} cannot be undone and stdin is not a terminal to confirm it: pass --yes.")
    question = (
        f"This deletes the environment {name} ({environment.type.value}): {folder} and its API keys, for good.\n"
        "Type its name to confirm"
    )
    typed = click.prompt(question, default="", show_default=False)
    if typed.strip() != name:
        raise BadRequest(f"You typed {typed.strip()!r}, not {name!r}: nothing was deleted.")
