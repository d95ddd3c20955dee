"""`nanotypedb backup`: an online copy of a data directory's databases and secret, into a new directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ConfigError
from ..service import Paths
from ..storage.backup import backup_file
from ..storage.environments import DEFAULT_ENVIRONMENT


def databases(paths: Paths, environment: str) -> tuple[Path, ...]:
    """The databases worth keeping: the system database and those of `environment`, where a server of it keeps
    them (Paths says where, for both); the -wal and -shm files are folded in."""
    return (
        paths.system_db,
        paths.env_db(environment),
        paths.env_ai(environment),
        paths.env_analytics(environment),
    )


def run_backup(data_dir: Path, out: Path, environment: str = DEFAULT_ENVIRONMENT) -> list[Path]:
    """Copy the system database, each database of `environment` (the server may be running) and the secret of
    `data_dir` into `out`, laid out like a data directory; return the files written. `out` is built under a
    `.partial` name, then renamed."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty directory: choose a new --out.")
    sources = sorted(p for p in databases(Paths(data_dir), environment) if p.is_file())
    if not any(p.name == "db.sqlite3" for p in sources):
        raise ConfigError(
            f"{data_dir} holds no database of {environment} (env/{environment}/db.sqlite3): is --data-dir right? "
            "(An environment's database is made when a server first starts.)"
        )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    written = []
    for source in sources:
        target = partial / source.relative_to(data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        backup_file(source, target)
        written.append(out / source.relative_to(data_dir))
    if (data_dir / "secret").is_file():
        shutil.copy2(data_dir / "secret", partial / "secret")  # copy2 keeps its mode, 0600
        written.append(out / "secret")
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return written
