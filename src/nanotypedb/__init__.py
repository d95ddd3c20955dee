"""NanoTypeDB: a self-hosted realtime backend — tables, typed functions and row-level security on SQLite."""

from .app import App
from .auth.policy import (
    ALLOW,
    CALLER,
    DENY,
    SIGNED_IN,
    Policy,
    Rule,
    match,
    owner_policy,
    predicate,
    public_read_policy,
)
from .auth.principal import Principal, PrincipalKind
from .errors import (
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    FunctionNotFound,
    InternalError,
    InvalidToken,
    MalformedMessage,
    MigrationError,
    NanoTypeDBError,
    NotFound,
    PayloadTooLarge,
    PolicyDenied,
    RateLimited,
    RowNotFound,
    SchemaError,
    ServiceUnavailable,
    Unauthenticated,
    UpstreamError,
    ValidationFailed,
)
from .functions import optimistic
from .functions.context import Ctx
from .functions.db import Page
from .functions.optimistic import Optimistic
from .storage.engine import Durability
from .storage.schema import Table, column

__version__ = "0.1.0"

__all__ = [
    "ALLOW",
    "CALLER",
    "DENY",
    "SIGNED_IN",
    "App",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "Ctx",
    "Durability",
    "Forbidden",
    "FunctionNotFound",
    "InternalError",
    "InvalidToken",
    "MalformedMessage",
    "MigrationError",
    "NanoTypeDBError",
    "NotFound",
    "Optimistic",
    "Page",
    "PayloadTooLarge",
    "Policy",
    "PolicyDenied",
    "Principal",
    "PrincipalKind",
    "RateLimited",
    "RowNotFound",
    "Rule",
    "SchemaError",
    "ServiceUnavailable",
    "Table",
    "Unauthenticated",
    "UpstreamError",
    "ValidationFailed",
    "column",
    "match",
    "optimistic",
    "owner_policy",
    "predicate",
    "public_read_policy",
]
