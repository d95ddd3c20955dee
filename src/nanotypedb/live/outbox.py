"""Outbox: what one connection is still to be sent of its live queries, merged so a slow reader skips ahead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import LiveQuery

log = logging.getLogger(__name__)


class Outbox:
    """One connection's subscriptions, and the transition it has not been sent yet.

    Staged entries wait here until a frame can go; while one waits for the socket, newer
    results replace older ones for the same subscription, so the backlog never grows
    beyond one entry per subscription.
    """

    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.subs: dict[Any, LiveQuery] = {}  # subscription id → its live query
        self.sent_version = -1
        self.frames_sent = 0
        self._send = send
        self._pending: dict[Any, bytes] = {}
        self._version = -1
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        # Set by the connection: whether its credentials lapsed (then it is sent nothing more as that caller).
        self.lapsed: Callable[[], bool] = lambda: False

    def stage(self, sub_id: Any, entry: bytes) -> None:
        self._pending[sub_id] = entry

    def forget(self, sub_id: Any) -> None:
        self._pending.pop(sub_id, None)

    def flush(self, version: int) -> None:
        """Send everything staged as one transition at `version` (or with a later one, if a send is waiting)."""
        self._version = max(self._version, version)
        if self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def _drain(self) -> None:
        try:
            while not self.closed and (self._pending or self._version > self.sent_version):
                entries, version = list(self._pending.values()), self._version
                self._pending.clear()
                self.sent_version = version
                self.frames_sent += 1
                await self._send(_frame(version, entries))
        except Exception:
            log.exception("sending a transition failed")
        finally:
            self._task = None


def _frame(version: int, entries: list[bytes]) -> bytes:
    return b'{"type":"transition","version":%d,"updates":[%s]}' % (version, b",".join(entries))
