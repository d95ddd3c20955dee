"""One WebSocket connection: a reader that hands each message on, and a writer that sends in order without
making its callers wait."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .. import protocol

log = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 10


class Connection:
    """Messages are decoded and passed to `on_message` in the reader task; `on_closed` runs once when it ends."""

    def __init__(
        self, ws: ClientConnection, on_message: Callable[[Any], None], on_closed: Callable[[Connection], None]
    ) -> None:
        self.ws = ws
        self._on_message = on_message
        self._on_closed = on_closed
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.alive = True
        self._reader = asyncio.create_task(self._read())
        self._writer = asyncio.create_task(self._write())

    @classmethod
    async def open(
        cls, url: str, on_message: Callable[[Any], None], on_closed: Callable[[Connection], None]
    ) -> Connection:
        # No frame limit on what the server sends: a live query's result may be larger than any request.
        ws = await connect(url, max_size=None, open_timeout=OPEN_TIMEOUT_SECONDS)
        return cls(ws, on_message, on_closed)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message; messages leave in the order they were queued."""
        if self.alive:
            self._outbox.put_nowait(protocol.dumps(message).decode())

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self._dispatch(raw)
        except ConnectionClosed:
            pass
        finally:
            self.alive = False
            self._outbox.put_nowait(None)
            self._on_closed(self)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = protocol.loads(raw)
            self._on_message(message)
        except Exception:
            # A bad frame or a bug in handling one must not end the connection's other work.
            log.exception("Could not handle a message from the server")

    async def _write(self) -> None:
        while (text := await self._outbox.get()) is not None:
            try:
                await self.ws.send(text)
            except ConnectionClosed:
                return
