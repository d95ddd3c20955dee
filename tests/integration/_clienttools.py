"""Helpers for the client tests: wait for a subscription's value, record every value, and a TCP proxy that can hold
back the server's replies and cut connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from nanotypedb.client import AsyncClient, Status, Subscription

WAIT_SECONDS = 5


async def until(sub: Subscription, predicate: Callable[[Any], bool], timeout: float = WAIT_SECONDS) -> Any:
    """The subscription's first value (current or later) for which `predicate` holds."""
    async with asyncio.timeout(timeout):
        async for value in sub:
            if predicate(value):
                return value
    raise AssertionError(f"{sub!r} ended before the expected value")


def ids(rows: list[dict[str, Any]]) -> list[Any]:
    return [row["id"] for row in rows]


def titles(rows: list[dict[str, Any]]) -> list[str]:
    return [row["title"] for row in rows]


class Recorder:
    """Every value a subscription shows, in order."""

    def __init__(self, sub: Subscription) -> None:
        self.values: list[Any] = []
        sub.on_result(self.values.append)


class Statuses:
    """Every status a client reports, and a way to wait for one."""

    def __init__(self, client: AsyncClient) -> None:
        self.seen: list[Status] = []
        self._changed = asyncio.Event()
        client.on_status(self._on_status)

    def _on_status(self, status: Status) -> None:
        self.seen.append(status)
        self._changed.set()

    async def reach(self, status: str, times: int = 1, timeout: float = WAIT_SECONDS) -> None:
        """Wait until `status` was reported `times` times in all."""
        async with asyncio.timeout(timeout):
            while self.seen.count(Status(status)) < times:
                self._changed.clear()
                await self._changed.wait()


class Proxy:
    """127.0.0.1:port → the server. `hold()` keeps the server's bytes back; `cut()` aborts every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        self.release()  # a pipe held at the gate sees its connection cut, and ends
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, None), self._pipe(up_reader, writer, self._flowing))
        for w in (writer, up_writer):
            w.transport.abort()
        self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
