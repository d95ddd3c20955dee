"""Load-generator clients: a raw HTTP/1.1 keep-alive client and a thin WebSocket RPC client.

httpx tops out near 300-500 requests/s and would measure itself (shared/MEASURED.md), so
HTTP goes over bare asyncio streams: write the request bytes, read the status line, the
headers and a Content-Length (or chunked) body. WebSocket is raw too (RawWebSocket), with
the `websockets` client kept as a cross-check; neither offers compression, so neither side
spends CPU on deflate for 100-byte frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import connect

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask


class OpError(Exception):
    """The server answered, but not with a success (HTTP status >= 400 or an error frame)."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; reconnects if the server closes it."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host = host
        self.port = port
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._headers = (f"Host: {host}:{port}\r\n{auth}Content-Type: application/json\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def post_json(self, path: str, payload: Any) -> Any:
        """POST a JSON body and return the decoded JSON answer; raise OpError on >= 400."""
        status, body = await self.request("POST", path, orjson.dumps(payload))
        if status >= 400:
            raise OpError(f"HTTP {status}: {body[:300]!r}")
        return orjson.loads(body)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._headers
        self._writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, headers = await _read_head(self._reader)
        payload = await _read_body(self._reader, headers)
        if headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, payload


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return await _read_chunked(reader)
    return await reader.readexactly(int(headers.get(b"content-length", b"0")))


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected: just the final CRLF
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class RawWebSocket:
    """The client side of RFC 6455 over asyncio streams: text frames out, whole messages in.

    Half the CPU per round trip of the `websockets` client, which matters for one client:
    its time adds to every round trip. No extensions are offered, so no compression.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str) -> RawWebSocket:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status, _ = await _read_head(reader)
        if status != 101:
            writer.close()
            raise OpError(f"WebSocket upgrade answered HTTP {status}")
        return cls(reader, writer)

    async def send(self, text: str) -> None:
        self._writer.write(_frame(OP_TEXT, text.encode()))

    async def recv(self) -> bytes:
        """The next data message, answering pings and raising ConnectionError on a close."""
        parts = []
        while True:
            fin, opcode, payload = await self._read_frame()
            if opcode == OP_PING:
                self._writer.write(_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                raise ConnectionError(f"WebSocket closed by the server: {payload[:200]!r}")
            elif opcode != OP_PONG:
                parts.append(payload)
                if fin:
                    return b"".join(parts)

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        first, second = await self._reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._reader.readexactly(8))
        mask = await self._reader.readexactly(4) if second & 0x80 else b""
        payload = await self._reader.readexactly(length)
        return bool(first & 0x80), first & 0x0F, apply_mask(payload, mask) if mask else payload

    async def close(self) -> None:
        self._writer.write(_frame(OP_CLOSE, struct.pack("!H", 1000)))
        self._writer.close()


OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final frame, masked as RFC 6455 requires of a client."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + mask + apply_mask(payload, mask)


class Socket(Protocol):
    """What WsConnection needs of a WebSocket: RawWebSocket and websockets' client both fit."""

    async def send(self, message: str) -> None: ...
    async def recv(self) -> str | bytes: ...
    async def close(self) -> None: ...


async def open_socket(url: str, impl: str) -> Socket:
    """`raw` (RawWebSocket) or `websockets` (the library's client, to cross-check raw)."""
    if impl == "websockets":
        return await connect(url, compression=None, max_size=None, ping_interval=None)
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await RawWebSocket.connect(parts.hostname, parts.port, parts.path or "/")


class WsConnection:
    """One WebSocket speaking the NanoTypeDB protocol: JSON text frames, one call at a time."""

    def __init__(self, socket: Socket) -> None:
        self._socket = socket
        self._next_id = 0

    @classmethod
    async def open(cls, url: str, token: str | None = None, impl: str = "raw") -> WsConnection:
        conn = cls(await open_socket(url, impl))
        if token is not None:
            await conn.call({"type": "auth", "token": token})
        return conn

    async def close(self) -> None:
        await self._socket.close()

    async def rpc(self, name: str, args: dict[str, Any]) -> Any:
        return await self.call({"type": "rpc", "name": name, "args": args})

    async def call(self, message: dict[str, Any]) -> Any:
        """Send one request frame and wait for its answer; raise OpError on an error frame."""
        message["id"] = msg_id = self._next_id
        self._next_id += 1
        await self._socket.send(orjson.dumps(message).decode())
        answer = orjson.loads(await self._socket.recv())
        while answer.get("type") not in ("result", "error"):  # skip pushes we did not ask for
            answer = orjson.loads(await self._socket.recv())
        if answer.get("type") != "result" or answer.get("id") != msg_id:
            raise OpError(f"unexpected frame: {str(answer)[:300]}")
        return answer.get("data")
