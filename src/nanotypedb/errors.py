"""One error hierarchy: every error a client can see has a stable code, an HTTP status and a message.

NanoTypeDBError (500 InternalError)
├── BadRequest (400 BadRequest)
│   ├── ValidationFailed (400 ValidationFailed)
│   ├── MalformedMessage (400 MalformedMessage)
│   └── InvalidEnvironmentName (400 InvalidEnvironmentName)
├── Unauthenticated (401 Unauthenticated)
│   └── InvalidToken (401 InvalidToken)
├── Forbidden (403 Forbidden)
│   ├── PolicyDenied (403 PolicyDenied)
│   └── DevelopmentOnly (403 DevelopmentOnly)
├── NotFound (404 NotFound)
│   ├── FunctionNotFound (404 FunctionNotFound)
│   ├── RowNotFound (404 RowNotFound)
│   └── EnvironmentNotFound (404 EnvironmentNotFound)
├── Conflict (409 Conflict)
│   └── EnvironmentExists (409 EnvironmentExists)
├── MethodNotAllowed (405 MethodNotAllowed)
├── PayloadTooLarge (413 PayloadTooLarge)
│   └── AuditExportTooLarge (413 AuditExportTooLarge)
├── RateLimited (429 RateLimited)
├── ServiceUnavailable (503 ServiceUnavailable)
└── Server-side only, never sent as such: SchemaError, MigrationError, ConfigError, StorageError
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar


class NanoTypeDBError(Exception):
    """An internal error occurred; it has been logged on the server."""

    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON error shape shared by HTTP and WebSocket."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        if request_id is not None:
            body["request_id"] = request_id
        return body


class InternalError(NanoTypeDBError):
    """An internal error occurred; it has been logged on the server."""


class BadRequest(NanoTypeDBError):
    """The request is not valid."""

    code = "BadRequest"
    status = 400


class ValidationFailed(BadRequest):
    """The arguments do not match the function's signature."""

    code = "ValidationFailed"


class MalformedMessage(BadRequest):
    """The message is not valid JSON of the expected shape."""

    code = "MalformedMessage"


class InvalidEnvironmentName(BadRequest):
    """An environment name is 1-32 lowercase letters, digits and `-`, starting with a letter or digit."""

    code = "InvalidEnvironmentName"


class Unauthenticated(NanoTypeDBError):
    """This function needs a signed-in caller: send an API key or a token."""

    code = "Unauthenticated"
    status = 401


class InvalidToken(Unauthenticated):
    """The API key or token is not valid."""

    code = "InvalidToken"


class Forbidden(NanoTypeDBError):
    """The caller may not do this."""

    code = "Forbidden"
    status = 403


class PolicyDenied(Forbidden):
    """A row-level security policy refused this write."""

    code = "PolicyDenied"


class DevelopmentOnly(Forbidden):
    """This is a development convenience, refused in a prod environment."""

    code = "DevelopmentOnly"


class NotFound(NanoTypeDBError):
    """Not found."""

    code = "NotFound"
    status = 404


class FunctionNotFound(NotFound):
    """There is no function of that name."""

    code = "FunctionNotFound"


class RowNotFound(NotFound):
    """No row with that id is visible to the caller."""

    code = "RowNotFound"


class EnvironmentNotFound(NotFound):
    """There is no environment of that name: create it with `nanotypedb env create NAME --type dev`."""

    code = "EnvironmentNotFound"


class Conflict(NanoTypeDBError):
    """The write conflicts with the current data."""

    code = "Conflict"
    status = 409


class EnvironmentExists(Conflict):
    """An environment of that name exists already."""

    code = "EnvironmentExists"


class PayloadTooLarge(NanoTypeDBError):
    """The request body is larger than the server accepts."""

    code = "PayloadTooLarge"
    status = 413


class AuditExportTooLarge(PayloadTooLarge):
    """More audit entries match than exportAuditLog returns: narrow the filters or use GET /api/audit/export."""

    code = "AuditExportTooLarge"


class RateLimited(NanoTypeDBError):
    """Too many calls: wait and try again."""

    code = "RateLimited"
    status = 429

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class ServiceUnavailable(NanoTypeDBError):
    """The server is shutting down or overloaded: try again shortly."""

    code = "ServiceUnavailable"
    status = 503


class UpstreamError(NanoTypeDBError):
    """A service the server calls for you (an embedding provider, a webhook receiver) failed or timed out."""

    code = "UpstreamError"
    status = 502


class SchemaError(NanoTypeDBError):
    """The declared schema does not match the database and needs a migration."""

    code = "SchemaError"


class MigrationError(NanoTypeDBError):
    """A migration could not be applied."""

    code = "MigrationError"


class ConfigError(NanoTypeDBError):
    """The configuration is not valid."""

    code = "ConfigError"


class StorageError(NanoTypeDBError):
    """A database file cannot be opened: damaged, not a database, or not readable."""

    code = "StorageError"


ALL_ERRORS: tuple[type[NanoTypeDBError], ...] = (
    InternalError,
    BadRequest,
    ValidationFailed,
    MalformedMessage,
    InvalidEnvironmentName,
    Unauthenticated,
    InvalidToken,
    Forbidden,
    PolicyDenied,
    DevelopmentOnly,
    NotFound,
    FunctionNotFound,
    RowNotFound,
    EnvironmentNotFound,
    Conflict,
    EnvironmentExists,
    PayloadTooLarge,
    AuditExportTooLarge,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)

BY_CODE: dict[str, type[NanoTypeDBError]] = {e.code: e for e in ALL_ERRORS}


def from_dict(body: dict[str, Any]) -> NanoTypeDBError:
    """Rebuild a typed error from the wire shape (used by the clients). A code this module does
    not know (an app's own error class, a newer server's) keeps its code on a class of its own."""
    code = str(body.get("code") or InternalError.code)
    cls = BY_CODE.get(code) or _unknown_code(code)
    if cls is RateLimited:
        retry = (body.get("details") or {}).get("retry_after", 1.0)
        err: NanoTypeDBError = RateLimited(body.get("message"), retry_after=float(retry))
    else:
        err = cls(body.get("message"), details=body.get("details"))
    err.request_id = body.get("request_id")  # type: ignore[attr-defined]
    return err


@functools.lru_cache(maxsize=128)  # bounded: a server could send any number of codes
def _unknown_code(code: str) -> type[NanoTypeDBError]:
    return type(code, (NanoTypeDBError,), {"code": code, "__doc__": f"The server's error {code}."})


class MethodNotAllowed(NanoTypeDBError):
    """This route does not accept that HTTP method."""

    code = "MethodNotAllowed"
    status = 405


ALL_ERRORS = (*ALL_ERRORS, MethodNotAllowed)
BY_CODE[MethodNotAllowed.code] = MethodNotAllowed
