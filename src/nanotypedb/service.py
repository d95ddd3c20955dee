"""A running NanoTypeDB: the data directory, the server secret, API keys, token checks and the engine of the one
environment this process serves (start-up also brings every other registered environment's database up to date)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .ai import choice as ai_choice
from .ai.gateway import AIGateway
from .analytics import admin as analytics_admin
from .analytics.recorder import Recorder
from .app import App
from .audit import admin as audit_admin
from .auth.keys import KEY_PREFIX, KeyStore
from .auth.principal import ANONYMOUS, Principal, PrincipalKind
from .auth.tokens import TokenVerifier
from .errors import ConfigError, Forbidden, InvalidToken
from .functions import embedding
from .functions.runtime import Runtime
from .jobs import admin as jobs_admin
from .jobs.embed import Embeddings
from .jobs.runner import JobRunner
from .lib.ids import secret_token
from .lib.ratelimit import Rate
from .live.hub import Hub
from .live.semantic import SemanticHub
from .settings import Config
from .storage import audit as audit_store
from .storage import jobs as jobs_store
from .storage.engine import Durability, OpenReport, SqliteEngine, migrate
from .storage.environments import DEFAULT_ENVIRONMENT, Environment, EnvironmentRegistry, EnvironmentType
from .vectors import store as vector_store

log = logging.getLogger(__name__)
# How soon this server notices commits another process made to its database.
EXTERNAL_POLL_SECONDS = 0.2
# The actor the audit log names for what the server does by itself (the first admin key).
SERVER = audit_store.Origin("system", "server", "serve")


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

    def env_dir(self, environment: str) -> Path:
        """Everything of one environment lives here, so deleting it is removing this folder."""
        return self.root / "env" / environment

    def env_db(self, environment: str) -> Path:
        return self.env_dir(environment) / "db.sqlite3"

    def env_files(self, environment: str) -> Path:
        return self.env_dir(environment) / "files"

    def env_ai(self, environment: str) -> Path:
        """The AI gateway's cache and log of one environment (ai-gateway.md)."""
        return self.env_dir(environment) / "ai.sqlite3"

    def env_analytics(self, environment: str) -> Path:
        """The usage analytics of one environment's server (analytics.md)."""
        return self.env_dir(environment) / "analytics.sqlite3"


def registered(paths: Paths, name: str) -> Environment:
    """The environment `name` of this data directory; EnvironmentNotFound (or InvalidEnvironmentName) otherwise."""
    with EnvironmentRegistry(paths.system_db) as registry:
        return registry.get(name)


def create_environment(
    paths: Paths, name: str, kind: EnvironmentType, *, origin: audit_store.Origin | None = None
) -> Environment:
    """Register a new environment and make its folder; the next start-up of any server creates its database.
    `origin`: who did it, for the `env.create` entry of the system database's audit chain (None: no entry)."""
    with EnvironmentRegistry(paths.system_db) as registry:
        environment = registry.create(name, kind, origin=origin)
    paths.env_files(name).mkdir(parents=True, exist_ok=True)
    return environment


def deletable(paths: Paths, name: str) -> Environment:
    """The environment `name` if it may be deleted. `dev` may not: every command defaults to it and every
    start re-creates it, empty, so deleting it would only look like it worked."""
    environment = registered(paths, name)
    if name == DEFAULT_ENVIRONMENT:
        raise Forbidden(
            f"The environment {name!r} cannot be deleted: it is the default, re-created at every start. "
            f"To empty it, stop its server and remove {paths.env_dir(name)}."
        )
    return environment


def delete_environment(paths: Paths, name: str, *, origin: audit_store.Origin | None = None) -> int:
    """Unregister an environment, then remove its API keys and its folder; returns how many keys went.
    `origin`: who did it, for the `env.delete` and `key.delete` entries of the system database's audit
    chain, each written in the transaction of its act (None: no entries)."""
    deletable(paths, name)
    with EnvironmentRegistry(paths.system_db) as registry:
        registry.delete(name, origin=origin)  # first: from here on no process may serve or use it
    keys = KeyStore(paths.system_db, audited=origin is not None)
    try:
        removed = keys.delete_environment(name, origin=origin or audit_store.UNKNOWN)
    finally:
        keys.close()
    if paths.env_dir(name).exists():
        shutil.rmtree(paths.env_dir(name))
    return removed


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
        # The one environment this process serves (`--env`): its database, its keys and its audit entries name it.
        self.environment = registered(self.paths, config.env)
        self.secret = config.secret or ensure_secret(self.paths)
        self.keys = KeyStore(self.paths.system_db, audited=config.audit == "on")
        self.tokens = TokenVerifier.from_files(
            self.secret,
            Path(config.jwt_public_key) if config.jwt_public_key else None,
            Path(config.jwks_file) if config.jwks_file else None,
            audience=config.jwt_audience or None,
            issuer=config.jwt_issuer or None,
            environment=self.environment.name,
        )
        self.engine = SqliteEngine(
            self.paths.env_db(self.environment.name),
            durability=Durability(config.durability),
            audit=self._audit_log(self.environment.name),
        )
        self.runtime = Runtime(
            app.functions,
            self.engine,
            default_rate=_rate(config.rate_limit),
            cache_entries=config.query_cache_entries,
        )
        self.analytics = self._analytics()
        for admin_fn in [*jobs_admin.functions(), *audit_admin.functions(), *analytics_admin.functions()]:
            if app.functions.get(admin_fn.name) is None:  # an app may define its own of that name
                app.functions.add(admin_fn)
        self.runtime.audit_chains = self.audit_chains()
        for fn in app.functions:
            if fn.optimistic is not None:
                fn.optimistic.check(fn.name, app.tables)
        self.hub = Hub(self.runtime, config.ws_max_subscriptions)
        self.ai, self.embeddings = self._ai()
        if self.embeddings is not None:
            self.runtime.jobs[embedding.EMBED_JOB] = self.embeddings.job(
                config.embedding_retries, config.embedding_timeout + 10, config.embedding_backoff
            )
            self.runtime.embeddings = self.embeddings
        self.semantic = SemanticHub(
            self.engine,
            self.embeddings.embed if self.embeddings is not None else None,
            set(self.embeddings.tables) if self.embeddings is not None else set(),
            config.ws_max_subscriptions,
        )
        if self.embeddings is not None:
            self.embeddings.on_indexed.append(self.semantic.indexed)
        self.jobs = JobRunner(
            self.engine,
            self.runtime.jobs,
            concurrency=max(1, config.job_workers),
            lease=config.job_lease,
            poll=config.job_poll,
            services={"ai": self.ai} if self.ai is not None else {},
        )
        self._watcher: asyncio.Task[None] | None = None
        self.first_admin_key: str | None = None
        self.connections = 0  # open WebSocket connections (server/ws.py counts them)
        self.connections_refused = 0  # refused past --ws-max-connections
        self.started = False  # start() ran and stop() has not

    def audit_chains(self) -> list[tuple[str, Path]]:
        """The audit chains this server writes: its environment's database and the system database (keys)."""
        name = self.environment.name
        return [(f"env:{name}", self.paths.env_db(name)), ("system", self.paths.system_db)]

    def _audit_log(self, environment: str) -> audit_store.AuditLog | None:
        """The log of one environment's chain; None when the `audit` setting is off."""
        return audit_store.AuditLog(environment) if self.config.audit == "on" else None

    def open(self, *, first_key: bool = True) -> OpenReport:
        """Apply migrations and schema to every registered environment, logging a line for each, keep this
        one's database open, and create its first admin key if it has none (`first_key`: only a server
        does, which prints it; a worker must not make a key nobody sees)."""
        self._migrate_others()
        name = self.environment.name
        report = self.engine.open(self.app.tables.values(), self.app.migrations, system=_system_ddl())
        self.paths.env_files(name).mkdir(exist_ok=True)
        _log_report(self.environment, report)
        if self.embeddings is not None:
            self.embeddings.load()
        if self.analytics is not None:
            self.analytics.open()
        if first_key and not self.keys.list(name):
            _, self.first_admin_key = self.keys.create("first admin key", environment=name, origin=SERVER)
        return report

    def _migrate_others(self) -> None:
        """The app's migrations and schema, applied to each other environment's file, which is closed again.
        Every environment runs the same app: a server started after an upgrade upgrades them all."""
        with EnvironmentRegistry(self.paths.system_db) as registry:
            others = [e for e in registry.list() if e.name != self.environment.name]
        for env in others:
            # Audited as that environment's own: its name, in its own database's chain.
            report = migrate(
                self.paths.env_db(env.name),
                self.app.tables.values(),
                self.app.migrations,
                _system_ddl(),
                self._audit_log(env.name),
            )
            self.paths.env_files(env.name).mkdir(exist_ok=True)
            _log_report(env, report)

    def authenticate(self, credential: str | None) -> Principal:
        """An API key or a JWT → the principal it names; no credential → anonymous."""
        if not credential:
            return ANONYMOUS
        if credential.startswith(KEY_PREFIX):
            record = self.keys.verify(credential)
            if record is None:
                raise InvalidToken("The API key is unknown or revoked.")
            if record.environment != self.environment.name:
                raise self._foreign_key()
            return Principal(PrincipalKind(record.kind), record.id)
        claims = self.tokens.verify(credential)
        return Principal(PrincipalKind.USER, str(claims["sub"]), claims)

    def _foreign_key(self) -> InvalidToken:
        # Which environment the key is of stays unsaid: the caller learns only that it is not this one.
        name = self.environment.name
        return InvalidToken(
            f"The API key belongs to another environment, not {name!r} (the one this server serves): use a key "
            f"of {name} (`nanotypedb keys create NAME --env {name}`).",
            details={"reason": "wrong_environment"},
        )

    def _analytics(self) -> Recorder | None:
        """Usage analytics in the folder of the environment this server serves, fed by every call and commit
        (`--analytics on`); other environments' servers keep their own."""
        if self.config.analytics != "on":
            return None
        recorder = Recorder(
            self.paths.env_analytics(self.environment.name),
            lambda name: self.app.functions.get(name) is not None,
            flush=self.config.analytics_flush,
            retention_days=self.config.analytics_retention_days,
        )
        self.runtime.observers.append(recorder.observe)
        self.engine.on_commit(recorder.on_commit)
        self.runtime.analytics = recorder
        return recorder

    def _ai(self) -> tuple[AIGateway | None, Embeddings | None]:
        """The AI gateway when a provider is configured, and the embeddings of embedded tables."""
        for schema in self.app.tables.values():
            if embedding.columns(schema) and embedding.STATUS not in schema.columns:
                raise ConfigError(
                    f"Table {schema.name!r} is embedded, so it needs a column {embedding.STATUS!r}: "
                    f"add `{embedding.STATUS}: str | None = None` (pending → indexed | failed)."
                )
            missing = [c for c in embedding.columns(schema) if c not in schema.columns]
            if missing:
                raise ConfigError(f"Table {schema.name!r} embeds columns it does not have: {missing}.")
        embedders, provider = ai_choice.build_embedders(self.config), ai_choice.default_provider(self.config)
        if not embedders or provider is None:
            return None, None
        gateway = AIGateway(
            self.paths.env_ai(self.environment.name),
            embedders,
            rates=ai_choice.build_rates(self.config),
            timeout=self.config.embedding_timeout,
        )
        if not any(embedding.columns(t) for t in self.app.tables.values()):
            return gateway, None
        return gateway, Embeddings(self.engine, gateway, provider, self.app.tables)

    async def start(self, *, workers: bool = True) -> None:
        """Background work of a running server: the job workers (unless `--job-workers 0`), and a
        watch for commits from other processes (a `nanotypedb worker`, the CLI)."""
        if self.embeddings is not None:
            self.embeddings.bind(asyncio.get_running_loop())
        if workers and self.config.job_workers > 0:
            self.jobs.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="ntdb-watch")
        if self.analytics is not None:
            await self.analytics.start()
        self.started = True

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks: the databases open with migrations applied, the job workers running
        (when this process runs any: `--job-workers` above 0 and the app defines jobs)."""
        checks = {"databases": self.engine.is_open, "started": self.started}
        if self.config.job_workers > 0 and self.runtime.jobs:
            checks["job_workers"] = self.jobs.running
        return checks

    async def stop(self) -> None:
        self.started = False
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        await self.jobs.stop()
        if self.analytics is not None:
            await self.analytics.stop()  # after the job workers: their last commits are counted
        if self.ai is not None:
            await self.ai.aclose()  # the providers' kept-alive connections close with this loop

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(EXTERNAL_POLL_SECONDS)
            try:
                self.engine.check_external()
            except Exception:
                log.exception("checking for commits of other processes failed")

    def close(self) -> None:
        self.engine.close()
        if self.analytics is not None:
            self.analytics.close()
        if self.ai is not None:
            self.ai.close()
        self.keys.close()


def _system_ddl() -> list[str]:
    return [*jobs_store.DDL, *audit_store.DDL, *vector_store.ddl()]


def _log_report(environment: Environment, report: OpenReport) -> None:
    name, kind = environment.name, environment.type.value
    for m in report.migrations:
        log.info("applied migration %d (%s) to %s", m.number, m.name, name)
    count = len(report.migrations)
    if count:
        log.info("environment %s (%s): %d migration%s applied", name, kind, count, "" if count == 1 else "s")
    else:
        log.info("environment %s (%s): up to date", name, kind)
