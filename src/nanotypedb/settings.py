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
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", 8787, "Port to listen on.", int),
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
    Setting("ws_max_in_flight", 64, "Calls one WebSocket may have running at once.", int),
    Setting("ws_max_subscriptions", 1_000, "Live-query subscriptions one WebSocket may hold at once.", int),
    Setting(
        "query_cache_entries",
        10_000,
        "Query results kept until a commit touches what they read (0 turns the cache off).",
        int,
    ),
    Setting("jwt_public_key", "", "PEM file of a public key for RS256/ES256 user tokens."),
    Setting("jwks_file", "", "JWKS JSON file of public keys for RS256/ES256 user tokens."),
    Setting("jwt_audience", "", "Required `aud` of user tokens (empty: tokens must carry none)."),
    Setting("jwt_issuer", "", "Required `iss` of user tokens (empty: not checked)."),
    Setting(
        "log_level", "info", "Log level: debug, info, warning or error.", choices=("debug", "info", "warning", "error")
    ),
)

BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(slots=True)
class Config:
    """Resolved settings of one server process."""

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8787
    app: str = "nanotypedb.demo.tasks:app"
    secret: str = ""
    durability: str = "full"
    rate_limit: str = "100/s burst 200"
    max_body_bytes: int = 1_048_576
    ws_max_frame_bytes: int = 1_048_576
    ws_max_in_flight: int = 64
    ws_max_subscriptions: int = 1_000
    query_cache_entries: int = 10_000
    jwt_public_key: str = ""
    jwks_file: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)} - {"extra"}
        cfg = cls(**{k: v for k, v in values.items() if k in known and v is not None})
        cfg.data_dir = Path(cfg.data_dir)
        return cfg
