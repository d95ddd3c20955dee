"""Outbox: what one connection is still to be sent of its live queries, merged so a slow reader skips ahead."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol import dumps

if TYPE_CHECKING:
    from .hub import LiveQuery

log = logging.getLogger(__name__)
# A frame is sent in line only while the socket holds less than this unsent: well under the
# 64 KiB at which the WebSocket layer makes a sender wait, so an inline send never waits.
INLINE_ROOM = 32 * 1024


# Staged for a subscription: its head (`{"id":…,`) and its query's body, which every
# subscriber of the query shares; joined only when the frame is built.
Entry = tuple[bytes, bytes]


class Shared:
    """Wire frames built in one delivery round, by what they say: connections due the same
    transition get the same bytes, built and framed once (see DirectWriter.plain)."""

    __slots__ = ("frames", "hits")

    def __init__(self) -> None:
        self.frames: dict[tuple[Any, ...], bytes] = {}
        self.hits = 0  # frames written that an earlier connection of the round had built


class Transport(Protocol):
    def get_write_buffer_size(self) -> int: ...


class DirectWriter(Protocol):
    """A synchronous send of text frames that the server may offer (server/ws.py)."""

    # Whether this connection's wire bytes for a text are the same as any other's (no
    # extension); None until its first frame is written.
    plain: bool | None

    def write(self, frame: bytes) -> bool:
        """Frame `frame` and write it; False when the connection cannot take it now."""

    def encode(self, frame: bytes) -> bytes:
        """The wire bytes of `frame` as one text frame."""

    def write_wire(self, wire: bytes) -> bool:
        """Write bytes from `encode`; False when the connection cannot take them now."""


class Outbox:
    """One connection's subscriptions, and the transition it has not been sent yet.

    Staged entries wait here until a frame can go; while one waits for the socket, newer
    results replace older ones for the same subscription, so the backlog never grows
    beyond one entry per subscription.
    """

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        transport: Transport | None = None,
        write: DirectWriter | None = None,
    ) -> None:
        self.subs: dict[Any, LiveQuery] = {}  # subscription id → its live query
        self.sent_version = -1
        self.frames_sent = 0
        self.closed = False
        # Request ids of this connection's mutations that committed but whose replies have not
        # gone out: while any is here, nothing is sent, so the reply comes before its transition.
        self.holds: set[str] = set()
        # Set by the connection: whether its credentials lapsed (then it is sent nothing more as
        # that caller), to be asked from the time `lapses_at` on.
        self.lapsed: Callable[[], bool] = lambda: False
        self.lapses_at = math.inf
        self._send = send
        self._transport = transport
        self._write = write  # a synchronous send, when the server offers one; False: use `send`
        self._pending: dict[Any, Entry] = {}
        self._heads: dict[Any, bytes] = {}
        self._version = -1
        self._busy = False  # a frame is on its way; it will look for more when it is sent

    def stage(self, sub_id: Any, body: bytes) -> None:
        """Stage a result (`"data":…,"reads":…` or `"error":…`) for subscription `sub_id`."""
        self._pending[sub_id] = (self._heads.get(sub_id) or self.entry_head(sub_id), body)

    def forget(self, sub_id: Any) -> None:
        self._pending.pop(sub_id, None)
        self._heads.pop(sub_id, None)

    def entry_head(self, sub_id: Any) -> bytes:
        """`{"id":<sub_id>,` encoded once per subscription, not once per result."""
        head = self._heads.get(sub_id)
        if head is None:
            head = self._heads[sub_id] = b'{"id":' + dumps(sub_id) + b","
        return head

    def advance(self, version: int) -> None:
        """The next frame says `version` (with whatever is staged, possibly nothing)."""
        self._version = max(self._version, version)

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def write_now(self, shared: Shared | None = None, version: int = -1) -> bool:
        """Send what is due (at `version` at least) at once, with no await, when the socket has room
        and the server allows it. True when nothing is left to send here. Connections of one
        round that are due the same transition share its wire bytes through `shared`: the text
        is built and framed once."""
        # The hub calls this once per connection and commit: what methods would do is inlined.
        if version > self._version:
            self._version = version
        if self._busy or self.closed or self.holds or not (self._pending or self._version > self.sent_version):
            return True
        writer, transport = self._write, self._transport
        if writer is None or transport is None or transport.get_write_buffer_size() >= INLINE_ROOM:
            return False
        if shared is not None and writer.plain:
            # Heads are equal bytes and bodies the same object: the key hashes and compares cheaply.
            key = (self._version, *self._pending.values())
            wire = shared.frames.get(key)
            if wire is None:
                wire = shared.frames[key] = writer.encode(self._frame())
            else:
                shared.hits += 1
            written = writer.write_wire(wire)
        else:
            written = writer.write(self._frame())
        if not written:
            return False
        self._pending.clear()
        self.sent_version = self._version
        self.frames_sent += 1
        return True

    async def send_now(self) -> None:
        """Send what is due: in line while the socket has room (no task per connection and
        commit), otherwise from a task of its own that waits for the socket."""
        if self._busy or self.closed or self.holds or not self.due():
            return
        self._busy = True
        if not self._has_room():
            asyncio.get_running_loop().create_task(self._drain())
            return
        try:
            await self._send_one()
        except Exception:
            log.exception("sending a transition failed")
        finally:
            self._busy = False

    def _has_room(self) -> bool:
        return self._transport is not None and self._transport.get_write_buffer_size() < INLINE_ROOM

    def due(self) -> bool:
        return bool(self._pending) or self._version > self.sent_version

    async def _drain(self) -> None:
        try:
            while not self.closed and not self.holds and self.due():
                await self._send_one()
        except Exception:
            log.exception("sending a transition failed")
        finally:
            self._busy = False

    async def _send_one(self) -> None:
        frame = self._frame()
        self._sent()  # before the await: what is staged meanwhile belongs to the next frame
        await self._send(frame)

    def _frame(self) -> bytes:
        entries = b",".join([head + body + b"}" for head, body in self._pending.values()])
        return b'{"type":"transition","version":%d,"updates":[%s]}' % (self._version, entries)

    def _sent(self) -> None:
        self._pending.clear()
        self.sent_version = self._version
        self.frames_sent += 1
