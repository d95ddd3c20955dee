"""The asyncio client: calls, live queries and optimistic mutations over one WebSocket, reconnecting on its own."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import protocol
from ..errors import NanoTypeDBError, from_dict
from . import functions
from .backoff import Backoff
from .connection import Connection
from .errors import ClientClosed, ConnectionLost
from .local import CustomUpdate, LocalState, Pending
from .principal import ANONYMOUS, Principal
from .status import Status
from .subscription import Subscription

log = logging.getLogger(__name__)

# A credential, or a function that gives one (maybe a fresh one) for each connection.
Token = str | Callable[[], str | None] | Callable[[], Awaitable[str | None]] | None


@dataclass(eq=False)
class _Call:
    """A message waiting for its `result` or `error`, and the optimistic mutation riding on it, if any."""

    future: asyncio.Future[tuple[Any, int]]
    mutation: Pending | None = None


class AsyncClient:
    """`async with AsyncClient("ws://127.0.0.1:8787/ws", token) as client:` — see docs/python-client.md."""

    def __init__(
        self, url: str, token: Token = None, *, reconnect: bool = True, backoff: Backoff | None = None
    ) -> None:
        self.url = url
        self.principal: Principal = ANONYMOUS
        self.status = Status.CLOSED
        self._token: Token = token
        self._credential: str | None = None  # what `_token` gave for the current connection
        self._status_changed = asyncio.Event()
        self._reconnect = reconnect
        self._backoff = backoff or Backoff()
        self._ids = itertools.count(1)
        self._conn: Connection | None = None
        self._refusal: NanoTypeDBError | None = None  # why the server closed the connection, if it said
        self._calls: dict[int, _Call] = {}
        self._subs: dict[int, Subscription] = {}
        self._local = LocalState()
        self._seen = 0  # the version of the last transition on this connection
        self._custom: dict[str, CustomUpdate] = {}
        self._functions: dict[str, dict[str, Any]] | None = None
        self._functions_lock = asyncio.Lock()
        self._status_callbacks: list[Callable[[Status], None]] = []
        self._lost = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- connecting

    async def connect(self) -> None:
        """Connect and sign in; raises when that fails (InvalidToken, OSError…). Later drops reconnect on their own."""
        if self._runner is not None or self._closing:
            raise RuntimeError("connect() is called once per client.")
        self._set_status(Status.CONNECTING)
        try:
            await self._open(first=True)
        except BaseException:
            self._set_status(Status.CLOSED)
            raise
        self._runner = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        """Close the connection: pending calls fail with ConnectionLost, subscriptions end."""
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._shut(ClientClosed("The client was closed."), ended=None)

    async def _open(self, *, first: bool) -> None:
        """One connection: open it, sign in, (re)subscribe, then report `open`."""
        self._lost.clear()
        self._refusal = None
        credential = await self._resolve(self._token)
        conn = await Connection.open(self.url, self._on_message, self._on_closed)
        self._conn, self._seen, self._credential = conn, 0, credential
        try:
            if credential is not None:
                await self._sign_in(credential, strict=first)
        except ConnectionLost as exc:
            self._conn = None
            await conn.close()
            # The server said why before closing (too many connections, say): that is the error.
            raise (self._refusal or exc) from None
        except BaseException:
            self._conn = None
            await conn.close()
            raise
        for sub in self._subs.values():
            conn.send(self._subscribe_message(sub))
        self._set_status(Status.OPEN)

    @staticmethod
    async def _resolve(token: Token) -> str | None:
        if not callable(token):
            return token
        value = token()
        return await value if isinstance(value, Awaitable) else value

    async def _sign_in(self, token: str | None, *, strict: bool) -> None:
        try:
            data, _ = await self._request({"type": protocol.AUTH, "token": token}, opening=True)
        except ConnectionLost:
            raise
        except NanoTypeDBError:
            # The server made the connection anonymous; on a reconnection the subscriptions say what that costs.
            self.principal = ANONYMOUS
            if strict:
                raise
            log.warning("The token was refused on reconnection; the connection is anonymous")
            return
        self.principal = Principal.from_dict(data)

    async def _supervise(self) -> None:
        """After each drop: give up (reconnect off), or try again with backoff until a connection opens."""
        while True:
            await self._lost.wait()
            if not self._reconnect:
                error = ConnectionLost("The connection closed and reconnect is off.")
                self._shut(error, ended=error)
                return
            for attempt in itertools.count():
                await asyncio.sleep(self._backoff.delay(attempt).total_seconds())
                try:
                    await self._open(first=False)
                    break
                except Exception as exc:  # refused, reset, timed out, or the token function failed: again
                    log.debug("Reconnection attempt %d failed: %r", attempt + 1, exc)

    def _on_closed(self, conn: Connection) -> None:
        """The reader of `conn` ended: every unanswered call is lost, and its optimistic effect rolled back."""
        if conn is not self._conn:
            return
        self._conn = None
        for sub in self._subs.values():
            sub.current = False
        self._fail_calls(ConnectionLost("The connection closed before the server answered."))
        if not self._closing:
            self._set_status(Status.RECONNECTING if self._reconnect else Status.CLOSED)
            self._lost.set()

    def _fail_calls(self, error: ConnectionLost) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            if call.mutation is not None and call.mutation.version is None:
                self._local.remove(call.mutation)
            if not call.future.done():
                call.future.set_exception(error)
        self._refresh()

    def _shut(self, error: ConnectionLost, *, ended: ConnectionLost | None) -> None:
        """The client is done: calls fail with `error`, subscriptions end (with `ended`, if any), status `closed`."""
        self._fail_calls(error)
        self._local.pending.clear()
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub._end(ended)
        self._set_status(Status.CLOSED)
        self._refresh()

    # ---- status and auth

    def on_status(self, callback: Callable[[Status], None]) -> Callable[[], None]:
        """Call `callback(status)` on every change of `status`; returns a function that stops it."""
        self._status_callbacks.append(callback)
        return lambda: self._status_callbacks.remove(callback) if callback in self._status_callbacks else None

    def _set_status(self, status: Status) -> None:
        if status is self.status:
            return
        self.status = status
        changed, self._status_changed = self._status_changed, asyncio.Event()
        changed.set()
        for callback in list(self._status_callbacks):
            try:
                callback(status)
            except Exception:
                log.exception("A status callback raised")

    async def set_auth(self, token: Token) -> Principal:
        """Sign in as `token` (a JWT or API key, a function giving one, or None for anonymous), on this connection
        and every later one. The subscriptions re-run as the new caller.

        A refused token raises its error and leaves the client anonymous. While not connected, it raises
        ConnectionLost and the next connection signs in with the token.
        """
        self._token, self._functions = token, None
        credential = await self._resolve(token)
        try:
            await self._sign_in(credential, strict=True)
        except ConnectionLost:
            raise
        except NanoTypeDBError:
            self._token = self._credential = None
            raise
        self._credential = credential
        return self.principal

    # ---- calls and mutations

    async def call(self, name: str, /, **args: Any) -> Any:
        """Call a function; returns its result or raises its error (a NanoTypeDBError subclass by code)."""
        data, _ = await self._request({"type": protocol.RPC, "name": name, "args": args})
        return data

    async def mutate(self, name: str, /, **args: Any) -> Any:
        """Call a mutation with its optimistic update: subscriptions show its effect at once, until the server's
        results include it; a refused or lost mutation is rolled back and raises."""
        mutation = await self._optimistic(name, args)
        data, _ = await self._request({"type": protocol.RPC, "name": name, "args": args}, mutation=mutation)
        return data

    async def wait_settled(self) -> None:
        """Wait until no mutation is pending: each was answered and its write is in the subscriptions' results
        (or it was rolled back)."""
        await self._settled.wait()

    def register_optimistic(self, name: str, update: CustomUpdate) -> None:
        """The update that mutations declared `custom:<name>` apply: `update(store, args)` edits `store`'s queries."""
        self._custom[name] = update

    async def _optimistic(self, name: str, args: dict[str, Any]) -> Pending | None:
        spec = functions.optimistic_spec(await self._function_list(), name)
        if spec is None:
            return None
        custom = self._custom.get(str(spec.get("name"))) if spec["kind"] == "custom" else None
        if spec["kind"] == "custom" and custom is None:
            return None
        mutation = self._local.add(name, dict(args), spec, self.principal.user_id, custom)
        self._refresh()
        return mutation

    async def _function_list(self) -> dict[str, dict[str, Any]]:
        """Fetched once (again after `set_auth`): the list shows only what the caller may call."""
        async with self._functions_lock:
            if self._functions is None:
                self._functions = await functions.load(self.url, self._credential)
            return self._functions

    async def _request(
        self, message: dict[str, Any], *, mutation: Pending | None = None, opening: bool = False
    ) -> tuple[Any, int]:
        try:
            conn = self._conn if opening else await self._wait_open()
            if conn is None or not conn.alive:
                raise ConnectionLost(f"Not connected to the server (status {self.status}).")
        except BaseException:
            if mutation is not None:
                self._local.remove(mutation)
                self._refresh()
            raise
        msg_id = next(self._ids)
        future: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()
        self._calls[msg_id] = _Call(future, mutation)
        conn.send({**message, "id": msg_id})
        return await future

    async def _wait_open(self) -> Connection | None:
        """The open connection; while (re)connecting, wait for it."""
        while self.status is not Status.OPEN:
            if self._closing:
                raise ClientClosed("The client was closed.")
            if self.status is Status.CLOSED:
                raise ConnectionLost("The client is not connected: call connect() first.")
            await self._status_changed.wait()
        return self._conn

    @property
    def pending_mutations(self) -> int:
        """How many optimistic effects are still shown."""
        return len(self._local.pending)

    # ---- subscriptions

    def subscribe(self, name: str, args: dict[str, Any] | None = None) -> Subscription:
        """Start a live query; its first result arrives shortly (`async for` waits for it)."""
        sub = Subscription(self, next(self._ids), name, dict(args or {}))
        if self._closing:
            sub._end(ClientClosed("The client was closed."))
            return sub
        self._subs[sub.id] = sub
        if self._conn is not None and self.status is Status.OPEN:
            self._conn.send(self._subscribe_message(sub))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.id, None) is not None and self._conn is not None:
            self._conn.send({"type": protocol.UNSUBSCRIBE, "id": sub.id})

    @staticmethod
    def _subscribe_message(sub: Subscription) -> dict[str, Any]:
        return {"type": protocol.SUBSCRIBE, "id": sub.id, "name": sub.name, "args": sub.args}

    # ---- messages from the server

    def _on_message(self, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == protocol.TRANSITION:
            self._on_transition(message)
        elif kind in (protocol.RESULT, protocol.ERROR):
            self._on_reply(message)

    def _on_reply(self, message: dict[str, Any]) -> None:
        msg_id = message.get("id")
        call = self._calls.pop(msg_id, None) if isinstance(msg_id, int) else None
        if call is None:
            self._on_other_reply(msg_id, message)
            return
        if message["type"] == protocol.RESULT:
            self._answered(call, message.get("data"), int(message.get("version", 0)))
        else:
            self._refused(call, from_dict(message.get("error") or {}))

    def _answered(self, call: _Call, data: Any, version: int) -> None:
        if call.mutation is not None:
            # With no subscription the server sends no transition to wait for, and nothing shows the effect.
            seen = self._seen if self._subs else version
            self._local.confirm(call.mutation, data, version, seen)
            self._refresh()
        if not call.future.done():
            call.future.set_result((data, version))

    def _refused(self, call: _Call, error: NanoTypeDBError) -> None:
        if call.mutation is not None:
            self._local.remove(call.mutation)
            self._refresh()
        if not call.future.done():
            call.future.set_exception(error)

    def _on_other_reply(self, msg_id: Any, message: dict[str, Any]) -> None:
        sub = self._subs.get(msg_id) if message["type"] == protocol.ERROR else None
        if sub is not None:  # the server refused the subscribe and kept nothing
            del self._subs[sub.id]
            sub.set_error(from_dict(message.get("error") or {}), None)
            sub._end(None)
        elif msg_id is None and message["type"] == protocol.ERROR:
            # About the connection itself, just before the server closes it.
            self._refusal = from_dict(message.get("error") or {})
            log.info("The server refused the connection: %s", self._refusal.message)
        else:
            log.warning("Unexpected message from the server: %.200r", message)

    def _on_transition(self, message: dict[str, Any]) -> None:
        version = int(message["version"])
        for update in message.get("updates") or ():
            sub = self._subs.get(update.get("id"))
            if sub is None:
                continue  # ended here; the server had already sent this
            if "error" in update:
                sub.set_error(from_dict(update["error"]), version)
            else:
                sub.set_result(update.get("data"), update.get("reads") or [], version)
        # Every subscription of the connection now shows the database at this version.
        for sub in self._subs.values():
            if sub.current and sub.has_data:
                sub.version = version
        self._seen = max(self._seen, version)
        self._local.drop_seen(self._seen)
        self._refresh()

    def _refresh(self) -> None:
        """Show each subscription the server's data with the pending mutations on top."""
        queries = {sub.id: sub for sub in self._subs.values() if sub.has_data}
        for sub_id, value in self._local.views(queries).items():
            queries[sub_id].show(value)
        if self._local.pending:
            self._settled.clear()
        else:
            self._settled.set()
