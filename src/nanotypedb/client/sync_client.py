"""The blocking client: an AsyncClient running on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from ..errors import NanoTypeDBError
from .async_client import AsyncClient
from .backoff import Backoff
from .local import CustomUpdate
from .principal import Principal
from .status import Status
from .subscription import Subscription

T = TypeVar("T")


class Client:
    """`with Client("ws://127.0.0.1:8787/ws", token) as client:` — the AsyncClient's API, blocking.

    Callbacks (`on_status`, `on_result`, custom optimistic updates) run in the client's thread: keep them short.
    """

    def __init__(
        self, url: str, token: str | None = None, *, reconnect: bool = True, backoff: Backoff | None = None
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nanotypedb-client", daemon=True)
        self._thread.start()
        self._client = self._run(_make(url, token, reconnect, backoff))
        self._stopped = False

    def __enter__(self) -> Client:
        try:
            self.connect()
        except BaseException:
            self.close()  # no `with` body runs, so no __exit__: stop the thread here
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def principal(self) -> Principal:
        return self._client.principal

    @property
    def status(self) -> Status:
        return self._client.status

    @property
    def pending_mutations(self) -> int:
        return self._client.pending_mutations

    def connect(self) -> None:
        self._run(self._client.connect())

    def close(self) -> None:
        """Close the connection and stop the client's thread."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._run(self._client.close())
            self._run(self._loop.shutdown_default_executor())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def call(self, name: str, /, **args: Any) -> Any:
        return self._run(self._client.call(name, **args))

    def mutate(self, name: str, /, **args: Any) -> Any:
        return self._run(self._client.mutate(name, **args))

    def set_auth(self, token: str | None) -> Principal:
        return self._run(self._client.set_auth(token))

    def wait_settled(self, timeout: timedelta | None = None) -> None:
        """Wait until no mutation is pending (see AsyncClient.wait_settled); TimeoutError past `timeout`."""
        seconds = None if timeout is None else timeout.total_seconds()
        self._run(asyncio.wait_for(self._client.wait_settled(), seconds))

    def register_optimistic(self, name: str, update: CustomUpdate) -> None:
        """`update(store, args)` runs in the client's thread, each time the subscriptions' values are computed."""
        self._in_loop(lambda: self._client.register_optimistic(name, update))

    def on_status(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        return self._in_loop(lambda: self._client.on_status(callback))

    def subscribe(self, name: str, args: dict[str, Any] | None = None) -> SyncSubscription:
        return self._in_loop(lambda: SyncSubscription(self, self._client.subscribe(name, args)))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("The client is closed.")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _in_loop(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self._run(run())


async def _make(url: str, token: str | None, reconnect: bool, backoff: Backoff | None) -> AsyncClient:
    return AsyncClient(url, token, reconnect=reconnect, backoff=backoff)


class SyncSubscription:
    """A Subscription read from another thread: `for value in subscription` blocks for each newer value."""

    def __init__(self, client: Client, subscription: Subscription) -> None:
        self._client = client
        self._sub = subscription
        self._cond = threading.Condition()
        # A copy of the subscription's state, taken in the loop thread after each change.
        self._state: tuple[int, Any, NanoTypeDBError | None, bool] = self._snapshot(subscription)
        self._returned = 0  # the change that next_value() last returned
        subscription.watch(self._changed)

    @staticmethod
    def _snapshot(sub: Subscription) -> tuple[int, Any, NanoTypeDBError | None, bool]:
        return sub.changes, sub.value, sub.error, sub.active

    def _changed(self, sub: Subscription) -> None:
        with self._cond:
            self._state = self._snapshot(sub)
            self._cond.notify_all()

    @property
    def id(self) -> int:
        return self._sub.id

    @property
    def value(self) -> Any:
        return self._state[1]

    @property
    def error(self) -> NanoTypeDBError | None:
        return self._state[2]

    @property
    def version(self) -> int | None:
        return self._sub.version

    def on_result(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Call `callback(value)` with each new value, in the client's thread."""
        return self._client._in_loop(lambda: self._sub.on_result(callback))

    def on_error(self, callback: Callable[[NanoTypeDBError], None]) -> Callable[[], None]:
        return self._client._in_loop(lambda: self._sub.on_error(callback))

    def unsubscribe(self) -> None:
        self._client._in_loop(self._sub.unsubscribe)

    def __iter__(self) -> Iterator[Any]:
        seen = 0
        while (step := self._next(seen, None)) is not None:
            value, seen = step
            yield value

    def next_value(self, timeout: timedelta | None = None) -> Any:
        """The next value not yet returned by this method (the current one at first), waiting up to `timeout`.

        Raises the query's error if it failed, TimeoutError past `timeout`, RuntimeError once the subscription ended.
        """
        step = self._next(self._returned, timeout)
        if step is None:
            raise RuntimeError(f"Subscription {self._sub.id} has ended.")
        value, self._returned = step
        return value

    def _next(self, seen: int, timeout: timedelta | None) -> tuple[Any, int] | None:
        """The value after change `seen`, or None once the subscription ended."""
        with self._cond:
            ready = self._cond.wait_for(
                lambda: self._state[0] > seen or not self._state[3],
                None if timeout is None else timeout.total_seconds(),
            )
            if not ready:
                raise TimeoutError(f"No new value of subscription {self._sub.id} within {timeout}.")
            changes, value, error, active = self._state
        if error is not None and changes > seen:
            raise error
        if not active:
            return None
        return value, changes
