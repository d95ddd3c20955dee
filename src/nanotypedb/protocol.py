"""Wire messages shared by the server and the clients: JSON encoding and the WebSocket message types.

Return values serialize as JSON: datetimes as ISO 8601 strings, bytes as base64
strings, Decimals as strings (so no precision is lost), sets and tuples as arrays.
"""

from __future__ import annotations

import base64
import decimal
from typing import Any, Final

import orjson

from .errors import MalformedMessage

PROTOCOL_VERSION: Final = 1

# Client → server message types.
AUTH: Final = "auth"
RPC: Final = "rpc"
SUBSCRIBE: Final = "subscribe"
UNSUBSCRIBE: Final = "unsubscribe"
SUBSCRIBE_SEMANTIC: Final = "subscribeSemantic"
PING: Final = "ping"
CLIENT_TYPES: Final = frozenset({AUTH, RPC, SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE_SEMANTIC, PING})
SUPPORTED_TYPES: Final = CLIENT_TYPES

# Server → client message types.
RESULT: Final = "result"
TRANSITION: Final = "transition"
SEMANTIC: Final = "semantic"
ERROR: Final = "error"
PONG: Final = "pong"

API_KEY_PREFIX: Final = "ntdb_"


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Encode a value as compact UTF-8 JSON."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def loads(data: str | bytes) -> Any:
    """Decode JSON, raising MalformedMessage (never a bare ValueError)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"The message is not valid JSON: {exc.msg}.") from None


def http_result(encoded: bytes, version: int) -> bytes:
    """`{"data": …, "version": N}` around a result already encoded as JSON."""
    return b'{"data":' + encoded + b',"version":' + str(version).encode() + b"}"


def ws_result(msg_id: Any, encoded: bytes, version: int) -> bytes:
    """A `result` message around a result already encoded as JSON."""
    head = b'{"type":"result","id":' + dumps(msg_id) + b',"data":'
    return head + encoded + b',"version":' + str(version).encode() + b"}"


def result(msg_id: Any, data: Any, version: int) -> dict[str, Any]:
    return {"type": RESULT, "id": msg_id, "data": data, "version": version}


def error(msg_id: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": ERROR, "id": msg_id, "error": body}
