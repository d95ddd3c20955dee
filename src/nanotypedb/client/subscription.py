"""A live query as the application sees it: its current value (with optimistic updates), an async iterator that
skips to the latest value, and callbacks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NanoTypeDBError
from . import optimistic

if TYPE_CHECKING:
    from .async_client import AsyncClient

log = logging.getLogger(__name__)

Watcher = Callable[["Subscription"], None]


class Subscription:
    """One `subscribe`: `value` is the server's latest result with the pending mutations applied on top.

    `async for value in subscription` yields the current value, then each newer one; a consumer slower than the
    updates gets the latest, never a backlog. An error result is raised by the iterator (the subscription stays:
    iterate again to wait for the next result); the iteration ends when the subscription does.
    """

    def __init__(self, client: AsyncClient, sub_id: int, name: str, args: dict[str, Any]) -> None:
        self._client = client
        self.id = sub_id
        self.name = name
        self.args = args
        # The server's side: its last result, what the query read, and the version it shows.
        self.data: Any = None
        self.reads: list[dict[str, Any]] = []
        self.has_data = False
        self.current = False  # has a result from the current connection
        self.version: int | None = None
        # What the application sees.
        self.value: Any = None
        self.error: NanoTypeDBError | None = None
        self.active = True
        self.changes = 0  # counts what the application was shown: values, errors and the end
        self._error_shown = False
        self._changed = asyncio.Event()
        self._watchers: list[Watcher] = []

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.name}({self.args}) version={self.version}>"

    # ---- the application's side

    def __aiter__(self) -> SubscriptionIterator:
        return SubscriptionIterator(self)

    def on_result(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call `callback(value)` with each new value (in the client's event loop); returns a function that stops it."""
        return self.watch(lambda sub: callback(sub.value) if sub.error is None and sub.active else None)

    def on_error(self, callback: Callable[[NanoTypeDBError], None]) -> Callable[[], None]:
        """Call `callback(error)` when the query raises, or when the subscription is refused or lost."""
        return self.watch(lambda sub: callback(sub.error) if sub.error is not None else None)

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call `watcher(subscription)` after every change (a value, an error, the end)."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def unsubscribe(self) -> None:
        """End the subscription: the server stops sending it, and iterators over it stop."""
        if self.active:
            self._client._unsubscribe(self)
            self._end(None)

    # ---- the client's side

    def set_result(self, data: Any, reads: list[dict[str, Any]], version: int) -> None:
        self.data, self.reads, self.version = data, reads, version
        self.has_data = self.current = True
        self.error = None

    def set_error(self, error: NanoTypeDBError, version: int | None) -> None:
        self.has_data, self.current, self.data, self.version = False, True, None, version
        self.error = error
        self._error_shown = True
        self._notify()

    def show(self, value: Any) -> None:
        """Show a new value, unless it equals the one shown (a re-sent or undone change is no change)."""
        if self.changes and not self._error_shown and optimistic.same(value, self.value):
            return
        self.value, self._error_shown = value, False
        self._notify()

    def _end(self, error: NanoTypeDBError | None) -> None:
        self.active = False
        self.error = error or self.error
        self._notify()

    def _notify(self) -> None:
        self.changes += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for watcher in list(self._watchers):
            try:
                watcher(self)
            except Exception:
                log.exception("A callback of %r raised", self)

    async def wait_changed(self, seen: int) -> None:
        while self.changes <= seen and self.active:
            await self._changed.wait()


class SubscriptionIterator:
    """Yields a subscription's value each time it changed since the last one it yielded."""

    def __init__(self, subscription: Subscription) -> None:
        self._sub = subscription
        self._seen = 0
        self._ended = False

    def __aiter__(self) -> SubscriptionIterator:
        return self

    async def __anext__(self) -> Any:
        sub = self._sub
        await sub.wait_changed(self._seen)
        if self._ended or (sub.changes <= self._seen and not sub.active):
            raise StopAsyncIteration
        self._seen = sub.changes
        if not sub.active:
            self._ended = True
            if sub.error is not None:
                raise sub.error
            raise StopAsyncIteration
        if sub.error is not None:
            raise sub.error
        return sub.value
