"""Every setting in one table: each becomes a CLI flag, a NANOTYPEDB_* environment variable and a line of docs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: Any
    help: str
    type: type = str
    choices: tuple[str, ...] = ()  # when set, any other value is refused at start-up

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "NANOTYPEDB_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./data", "Directory of the databases, the server secret and files."),
    Setting(
        "env",
        "dev",
        "The environment this process serves or acts on (its own database, files and keys); "
        "create one with `nanotypedb env create`.",
    ),
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", 8787, "Port to listen on.", int),
    Setting(
        "cors_origins",
        "",
        "Origins whose web pages may call the HTTP API, comma-separated (http://localhost:5173), or *; "
        "empty: same origin only.",
    ),
    Setting("app", "nanotypedb.demo.tasks:app", "The app to serve: module:attr or path/to/app.py."),
    Setting("secret", "", "Server secret (signs HS256 tokens); default: generated into DATA_DIR/secret."),
    Setting(
        "durability",
        "full",
        "full: fsync each commit, survives power loss; normal: survives a process crash.",
        choices=("full", "normal"),
    ),
    Setting("rate_limit", "100/s burst 200", "Default rate limit per caller and function."),
    Setting("max_body_bytes", 1_048_576, "Largest HTTP request body accepted (413 above).", int),
    Setting("ws_max_frame_bytes", 1_048_576, "Largest WebSocket frame accepted.", int),
    Setting("ws_max_connections", 20_000, "WebSocket connections the server holds at once; more are refused.", int),
    Setting("ws_max_in_flight", 64, "Calls one WebSocket may have running at once.", int),
    Setting("ws_max_subscriptions", 1_000, "Live-query subscriptions one WebSocket may hold at once.", int),
    Setting(
        "query_cache_entries",
        10_000,
        "Query results kept until a commit touches what they read (0 turns the cache off).",
        int,
    ),
    Setting(
        "audit",
        "on",
        "on: an audit entry for every change and administrative act, in its own transaction, chained by hash; "
        "off: no audit trail at all (for benchmarks).",
        choices=("on", "off"),
    ),
    Setting("job_workers", 4, "Jobs this process runs at once (0: none here; run `nanotypedb worker`).", int),
    Setting("job_lease", 60.0, "Seconds a worker holds a job before another may take it over.", float),
    Setting("job_poll", 1.0, "Seconds between looks for due jobs when no commit wakes the workers.", float),
    Setting("jwt_public_key", "", "PEM file of a public key for RS256/ES256 user tokens."),
    Setting("jwks_file", "", "JWKS JSON file of public keys for RS256/ES256 user tokens."),
    Setting("jwt_audience", "", "Required `aud` of user tokens (empty: tokens must carry none)."),
    Setting("jwt_issuer", "", "Required `iss` of user tokens (empty: not checked)."),
    Setting(
        "log_level", "info", "Log level: debug, info, warning or error.", choices=("debug", "info", "warning", "error")
    ),
    Setting(
        "log_format",
        "text",
        "Log lines as text, or as json: one object per line with time, level, logger, message, request_id.",
        choices=("text", "json"),
    ),
    Setting(
        "metrics_access",
        "loopback",
        "Who may read /metrics: loopback (127.0.0.1 and ::1; an admin key from elsewhere), open, key (an admin "
        "key always) or off (404).",
        choices=("loopback", "open", "key", "off"),
    ),
    Setting(
        "embedding_provider",
        "auto",
        "Embeddings: local (the bundled MiniLM), openai (any /v1/embeddings), hashing (tests only), none; "
        "auto: local when installed, else none.",
        choices=("auto", "local", "openai", "hashing", "none"),
    ),
    Setting("embedding_url", "", "Base URL of the OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434."),
    Setting("embedding_model", "", "Model name sent to the OpenAI-compatible endpoint (local: its one model)."),
    Setting("embedding_api_key", "", "API key of the OpenAI-compatible endpoint (a bearer token); never logged."),
    Setting("embedding_dims", 0, "Dimensions the endpoint must return (0: whatever its first answer has).", int),
    Setting("embedding_timeout", 30.0, "Seconds an embedding call may take, rate-limit wait included.", float),
    Setting("embedding_retries", 3, "Retries of a row's embedding job before the row is marked failed.", int),
    Setting("embedding_backoff", 2.0, "Seconds before an embedding job's first retry (doubling, with jitter).", float),
    Setting("embedding_rate", "", "Rate limit of calls to the embedding provider, e.g. '50/s' (empty: none)."),
    Setting(
        "analytics",
        "on",
        "Usage analytics (getAnalytics): on, or off to count nothing and write no analytics file.",
        choices=("on", "off"),
    ),
    Setting("analytics_flush", 5.0, "Seconds between writes of the in-memory analytics to analytics.sqlite3.", float),
    Setting("analytics_retention_days", 30, "Days of analytics kept; older minutes are deleted when flushing.", int),
)

BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(slots=True)
class Config:
    """Resolved settings of one server process."""

    data_dir: Path = Path("./data")
    env: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8787
    cors_origins: str = ""
    app: str = "nanotypedb.demo.tasks:app"
    secret: str = ""
    durability: str = "full"
    rate_limit: str = "100/s burst 200"
    max_body_bytes: int = 1_048_576
    ws_max_frame_bytes: int = 1_048_576
    ws_max_connections: int = 20_000
    ws_max_in_flight: int = 64
    ws_max_subscriptions: int = 1_000
    query_cache_entries: int = 10_000
    audit: str = "on"
    job_workers: int = 4
    job_lease: float = 60.0
    job_poll: float = 1.0
    jwt_public_key: str = ""
    jwks_file: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    log_level: str = "info"
    log_format: str = "text"
    metrics_access: str = "loopback"
    embedding_provider: str = "auto"
    embedding_url: str = ""
    embedding_model: str = ""
    embedding_api_key: str = field(default="", repr=False)  # a credential: kept out of reprs and logs
    embedding_dims: int = 0
    embedding_timeout: float = 30.0
    embedding_retries: int = 3
    embedding_backoff: float = 2.0
    embedding_rate: str = ""
    analytics: str = "on"
    analytics_flush: float = 5.0
    analytics_retention_days: int = 30
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)} - {"extra"}
        cfg = cls(**{k: v for k, v in values.items() if k in known and v is not None})
        cfg.data_dir = Path(cfg.data_dir)
        return cfg
