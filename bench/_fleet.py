"""The subscriber fleet of bench/live.py: many WebSocket connections in one process of their own.

Run as a script by live.py, it reads one JSON command per line on stdin and answers one JSON line
on stdout. It holds groups of connections (each an asyncio.Protocol on uvloop, no streams and no
library client, so that 10,000 sockets stay cheap) and reports when every target connection of a
group has received a frame holding a given title:

    {"cmd": "open", "group": "g", "host": ..., "port": ..., "count": N,
     "users": [...] | null, "secret": ... | null, "subscribe": {"name": ..., "args": ...} | null}
        -> {"opened": N, "failed": 0, "first_error": null, "seconds": 1.2}
    {"cmd": "expect", "group": "g", "title": "...", "targets": [0] | null}   -> {"armed": N}
        ... later, once every target has the title:
        {"t_first": ..., "t_last": ..., "missing": 0, "of": N, "frame_bytes": size of a frame that held it}
    {"cmd": "cancel"}          -> the pending expect's report now (if any), then {"cancel_ack": true}
    {"cmd": "frames", "group": "g"}  -> {"frames": [...], "closed": 0}
    {"cmd": "close", "group": "g"}   -> {"closed": N}

Times are time.monotonic(), which is CLOCK_MONOTONIC on Linux and so comparable across
processes: live.py takes the send time of the write, this process the time each row arrives.

A connection parses frame headers only (to answer pings, notice closes and find frame bounds)
and looks for the title's bytes inside each data frame, without decoding JSON: the server's
frames are unmasked and uncompressed (no extension is offered), so a title is in the bytes as
sent. With an `open` that subscribes, a connection is ready once its first data frame (the
subscription's first result) has arrived; an `error` frame then fails it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from datetime import timedelta
from typing import Any

import orjson
import uvloop

from _clients import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, _frame

OPEN_CONCURRENCY = 200  # handshakes in flight at once: well inside uvicorn's listen backlog
HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes in base64; the answer is not checked


def raise_nofile() -> int:
    """Lift the soft limit on open files to the hard one: 10,000 sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Sub(asyncio.Protocol):
    """One client WebSocket: handshake, optional subscribe, then frame scanning."""

    def __init__(self, fleet: Fleet, handshake: bytes, subscribe: bytes | None) -> None:
        self.fleet = fleet
        self.handshake = handshake
        self.subscribe = subscribe
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.needle: bytes | None = None
        self.frames = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self.transport.write(self.handshake)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.fail(f"upgrade answered {status!r}")
                return
            self.upgraded = True
            if self.subscribe is None:
                self.ready.set_result(None)
            else:
                self.send(self.subscribe)
        self.scan()

    def scan(self) -> None:
        """Consume every whole frame in the buffer (server frames are never masked)."""
        buf = self.buf
        while len(buf) >= 2:
            opcode, length, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, off = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, off = int.from_bytes(buf[2:10], "big"), 10
            end = off + length
            if len(buf) < end:
                return
            if opcode == OP_PING:
                self.transport.write(_frame(OP_PONG, bytes(buf[off:end])))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                self.closed = True
                if not self.ready.done():
                    self.fail(f"closed by the server: {bytes(buf[off:end])[:200]!r}")
            elif opcode != OP_PONG:
                self.on_data(buf, off, end)
            del buf[:end]

    def on_data(self, buf: bytearray, off: int, end: int) -> None:
        self.frames += 1
        if not self.ready.done():
            if buf.find(b'"type":"error"', off, end) >= 0:
                self.fail(bytes(buf[off:end])[:300].decode(errors="replace"))
            else:
                self.ready.set_result(None)
        elif self.needle is not None and buf.find(self.needle, off, end) >= 0:
            self.needle = None
            self.fleet.arrived(end - off)

    def send(self, text: bytes) -> None:
        self.transport.write(_frame(OP_TEXT, text))  # type: ignore[union-attr]

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()


class Fleet:
    """Groups of connections and the one `expect` in progress."""

    def __init__(self) -> None:
        self.groups: dict[str, list[Sub]] = {}
        self.pending = 0
        self.targets: list[Sub] = []
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.frame_bytes = 0  # size of the last frame that held an expected title

    def arrived(self, frame_bytes: int) -> None:
        now = time.monotonic()
        self.frame_bytes = frame_bytes
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.pending -= 1
        if self.pending == 0:
            self.report()

    def report(self) -> None:
        missing = sum(1 for s in self.targets if s.needle is not None)
        for sub in self.targets:
            sub.needle = None
        reply(
            {
                "t_first": self.t_first,
                "t_last": self.t_last,
                "missing": missing,
                "of": len(self.targets),
                "frame_bytes": self.frame_bytes,
            }
        )
        self.targets, self.pending = [], 0

    def expect(self, group: str, title: str, targets: list[int] | None) -> None:
        subs = self.groups[group]
        self.targets = subs if targets is None else [subs[i] for i in targets]
        needle = orjson.dumps(title)  # with both quotes: no title is a prefix of another
        for sub in self.targets:
            sub.needle = needle
        self.pending = len(self.targets)
        self.t_first = self.t_last = None
        reply({"armed": self.pending})

    def cancel(self) -> None:
        """Report the pending expect as it stands (if one is pending), then acknowledge."""
        if self.targets:
            self.report()
        reply({"cancel_ack": True})

    async def open(self, cmd: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        host, port, count = cmd["host"], int(cmd["port"]), int(cmd["count"])
        users: list[str] | None = cmd.get("users")
        tokens = mint_all(cmd["secret"], users) if users else None
        sub_msg = cmd.get("subscribe")
        subscribe = None
        if sub_msg is not None:
            subscribe = orjson.dumps({"type": "subscribe", "id": 1, "name": sub_msg["name"], "args": sub_msg["args"]})
        base = (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        )
        group = self.groups.setdefault(cmd["group"], [])
        gate = asyncio.Semaphore(int(cmd.get("concurrency", OPEN_CONCURRENCY)))
        errors: list[str] = []
        started = time.monotonic()

        async def one(i: int) -> Sub | None:
            auth = f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n" if tokens else ""
            handshake = (base + auth + "\r\n").encode()
            async with gate:
                try:
                    _, sub = await loop.create_connection(lambda: Sub(self, handshake, subscribe), host, port)
                    await asyncio.wait_for(sub.ready, 30)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return None
                return sub

        opened = await asyncio.gather(*(one(i) for i in range(count)))
        group.extend(s for s in opened if s is not None)
        reply(
            {
                "opened": count - len(errors),
                "failed": len(errors),
                "first_error": errors[0][:400] if errors else None,
                "seconds": round(time.monotonic() - started, 3),
                "group_size": len(group),
            }
        )

    async def close(self, group: str) -> None:
        subs = self.groups.pop(group, [])
        for sub in subs:
            sub.close()
        await asyncio.sleep(0.2)
        reply({"closed": len(subs)})


def mint_all(secret: str, users: list[str]) -> list[str]:
    from nanotypedb.auth.tokens import mint_token

    return [mint_token(secret, user, ttl=timedelta(hours=2)) for user in users]


def reply(message: dict[str, Any]) -> None:
    os.write(1, orjson.dumps(message) + b"\n")


async def main() -> None:
    raise_nofile()
    fleet = Fleet()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = orjson.loads(line)
        name = cmd["cmd"]
        try:
            if name == "open":
                await fleet.open(cmd)
            elif name == "expect":
                fleet.expect(cmd["group"], cmd["title"], cmd.get("targets"))
            elif name == "cancel":
                fleet.cancel()
            elif name == "frames":
                subs = fleet.groups.get(cmd["group"], [])
                reply({"frames": [s.frames for s in subs], "closed": sum(s.closed for s in subs)})
            elif name == "close":
                await fleet.close(cmd["group"])
            else:
                reply({"error": f"unknown command {name!r}"})
        except Exception as exc:  # report it to live.py rather than die with the pipe open
            reply({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    uvloop.run(main())
