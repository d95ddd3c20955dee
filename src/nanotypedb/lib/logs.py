"""Log records as one JSON object per line, and the request id of the call a record was logged for."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging

# The request being served by the current task; Runtime.call and the HTTP middleware set it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("nanotypedb_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, "exc_info"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        # default=str: a message argument JSON cannot carry must not lose the line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    """Set the root logger's level and, for `fmt` "json", format each of its handlers as JSON lines."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if fmt == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
