"""A running NanoTypeDB: the data directory, the server secret, API keys, token checks and the app's engine."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .app import App
from .auth.keys import KEY_PREFIX, KeyStore
from .auth.principal import ANONYMOUS, Principal, PrincipalKind
from .auth.tokens import TokenVerifier
from .errors import ConfigError, InvalidToken
from .functions.runtime import Runtime
from .lib.ids import secret_token
from .lib.ratelimit import Rate
from .live.hub import Hub
from .settings import Config
from .storage.engine import Durability, OpenReport, SqliteEngine

log = logging.getLogger(__name__)
DEFAULT_ENVIRONMENT = "dev"


@dataclass(frozen=True, slots=True)
class Paths:
    """Where one data directory keeps things; environments get a folder each."""

    root: Path

    @property
    def secret(self) -> Path:
        return self.root / "secret"

    @property
    def system_db(self) -> Path:
        return self.root / "system.sqlite3"

    def env_db(self, environment: str) -> Path:
        return self.root / "env" / environment / "db.sqlite3"


def ensure_secret(paths: Paths) -> str:
    """Read the server secret, creating it (mode 0600) on first start."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if not paths.secret.exists():
        fd = os.open(paths.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret_token(48))
    return paths.secret.read_text().strip()


def load_app(spec: str) -> App:
    """`package.module:attr`, `package.module` (attr `app`) or `path/to/file.py[:attr]`."""
    target, _, attr = spec.partition(":") if not _is_windows_path(spec) else (spec, "", "")
    attr = attr or "app"
    try:
        module = _import_path(Path(target)) if target.endswith(".py") else _import_module(target)
    except (ImportError, FileNotFoundError, SyntaxError) as exc:
        raise ConfigError(f"Cannot load the app {spec!r}: {exc}.") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r}: {attr!r} is not a nanotypedb.App.")
    return app


def _import_module(name: str) -> object:
    # Like uvicorn, look in the working directory too: the installed `nanotypedb` script, unlike
    # `python -m`, does not put it on sys.path, and `--app myapp:app` should find ./myapp.py.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(name)


def _is_windows_path(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"


def _import_path(path: Path) -> object:
    if not path.exists():
        raise FileNotFoundError(f"no file {path}")
    name = f"nanotypedb_app_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _rate(text: str) -> Rate:
    try:
        return Rate.parse(text)
    except ValueError as exc:
        raise ConfigError(f"--rate-limit: {exc}") from None


class Service:
    """Everything one server process holds open; `open()` at start-up, `close()` at shutdown."""

    def __init__(self, app: App, config: Config) -> None:
        self.app = app
        self.config = config
        self.paths = Paths(config.data_dir)
        self.secret = config.secret or ensure_secret(self.paths)
        self.keys = KeyStore(self.paths.system_db)
        self.tokens = TokenVerifier.from_files(
            self.secret,
            Path(config.jwt_public_key) if config.jwt_public_key else None,
            Path(config.jwks_file) if config.jwks_file else None,
            audience=config.jwt_audience or None,
            issuer=config.jwt_issuer or None,
        )
        self.engine = SqliteEngine(
            self.paths.env_db(DEFAULT_ENVIRONMENT),
            durability=Durability(config.durability),
        )
        self.runtime = Runtime(
            app.functions,
            self.engine,
            default_rate=_rate(config.rate_limit),
            cache_entries=config.query_cache_entries,
        )
        for fn in app.functions:
            if fn.optimistic is not None:
                fn.optimistic.check(fn.name, app.tables)
        self.hub = Hub(self.runtime, config.ws_max_subscriptions)
        self.first_admin_key: str | None = None

    def open(self) -> OpenReport:
        """Apply migrations and schema, and create the first admin key if there is none."""
        report = self.engine.open(self.app.tables.values(), self.app.migrations)
        for m in report.migrations:
            log.info("applied migration %d (%s) to %s", m.number, m.name, DEFAULT_ENVIRONMENT)
        if self.keys.count_active() == 0 and not self.keys.list():
            _, self.first_admin_key = self.keys.create("first admin key")
        return report

    def authenticate(self, credential: str | None) -> Principal:
        """An API key or a JWT → the principal it names; no credential → anonymous."""
        if not credential:
            return ANONYMOUS
        if credential.startswith(KEY_PREFIX):
            record = self.keys.verify(credential)
            if record is None:
                raise InvalidToken("The API key is unknown or revoked.")
            return Principal(PrincipalKind(record.kind), record.id)
        claims = self.tokens.verify(credential)
        return Principal(PrincipalKind.USER, str(claims["sub"]), claims)

    def close(self) -> None:
        self.engine.close()
        self.keys.close()
