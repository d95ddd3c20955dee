"""One WebSocket connection: authenticate, run calls concurrently up to a bound, answer pings.

The session speaks raw ASGI rather than through Starlette's WebSocket wrapper: every
frame of a busy connection passes here, and each wrapper layer costs a little on each.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from .. import protocol
from ..auth.principal import ANONYMOUS, Principal
from ..errors import (
    BadRequest,
    InvalidToken,
    MalformedMessage,
    NanoTypeDBError,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
)
from ..functions.registry import FunctionKind
from ..lib.ids import request_id
from ..live.outbox import Outbox
from ..service import Service
from .http import bearer
from .responses import as_public_error

log = logging.getLogger(__name__)
# How stale an open connection's view of its API key may be: one key lookup per second at most.
KEY_RECHECK_SECONDS = 1.0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Session:
    """The state of one connection: who is calling and which calls are still running."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, service: Service) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.service = service
        self.in_flight: set[asyncio.Task[None]] = set()
        self.key_checked_at = time.monotonic()
        self.open = False
        client = scope.get("client")
        self.client = str(client[0]) if client else ""
        # uvicorn's send is a method of its protocol, whose transport tells whether the socket has room.
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        self.outbox = Outbox(
            self.send_raw, transport if hasattr(transport, "get_write_buffer_size") else None, direct_writer(send)
        )
        self.outbox.lapsed = self.lapsed
        self._principal: Principal = ANONYMOUS
        self._credential: str | None = None

    @property
    def principal(self) -> Principal:
        return self._principal

    @principal.setter
    def principal(self, value: Principal) -> None:
        self._principal = value
        self._caller_changed()

    @property
    def credential(self) -> str | None:
        return self._credential

    @credential.setter
    def credential(self, value: str | None) -> None:
        self._credential = value
        self._caller_changed()

    def _caller_changed(self) -> None:
        """Tell the hub from when on it must ask `lapsed`: at the token's expiry, at every result
        for an API key (which can be revoked), never for a caller with neither."""
        exp = self._principal.claims.get("exp")
        if self._credential is not None and self._credential.startswith(protocol.API_KEY_PREFIX):
            self.outbox.lapses_at = -math.inf
        else:
            self.outbox.lapses_at = float(exp) if isinstance(exp, int | float) else math.inf

    async def run(self) -> None:
        if (await self.receive())["type"] != "websocket.connect":
            return
        await self._send({"type": "websocket.accept"})
        self.open = True
        if self.service.connections >= self.service.config.ws_max_connections:
            await self.refuse_overload()
            return
        self.service.connections += 1
        try:
            if await self.authenticate_handshake():
                await self.serve()
        finally:
            self.service.connections -= 1
            self.service.hub.drop(self.outbox)
            self.service.semantic.drop(self)
            # Calls already started finish (their writes commit) even if nobody hears the reply.
            if self.in_flight:
                await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def refuse_overload(self) -> None:
        """Past --ws-max-connections: say why (a browser cannot read a refused handshake), then
        close with 1013, "try again later", which the clients answer by reconnecting with backoff."""
        self.service.connections_refused += 1
        limit = self.service.config.ws_max_connections
        busy = ServiceUnavailable(f"The server holds {limit} WebSocket connections, the most it may: try again later.")
        await self.send_error(None, busy, request_id())
        await self.close(1013, busy.code)

    async def authenticate_handshake(self) -> bool:
        try:
            self.credential = bearer(_header(self.scope, b"authorization"))
            self.principal = self.service.authenticate(self.credential)
        except NanoTypeDBError as exc:
            # Say why before closing: a browser cannot read the reason of a refused handshake.
            await self.send_error(None, exc, request_id())
            await self.close(4401, exc.code)
            return False
        return True

    async def serve(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] != "websocket.receive":
                self.open = False
                return
            await self.handle(message.get("text") or message.get("bytes") or "")

    async def handle(self, raw: str | bytes) -> None:
        msg_id: Any = None
        try:
            limit = self.service.config.ws_max_frame_bytes
            # A character is at most 4 UTF-8 bytes: only long text frames need encoding to measure.
            size = len(raw) if isinstance(raw, bytes) or len(raw) * 4 <= limit else len(raw.encode())
            if size > limit:
                raise PayloadTooLarge(f"The frame is {size} bytes; the limit is {limit}.")
            msg = protocol.loads(raw)
            if not isinstance(msg, dict):
                raise MalformedMessage("A message must be a JSON object with a `type`.")
            msg_id = msg.get("id")
            await self.dispatch(msg, msg_id)
        except Exception as exc:
            await self.send_error(msg_id, exc, request_id())

    async def dispatch(self, msg: dict[str, Any], msg_id: Any) -> None:
        kind = msg.get("type")
        if kind == protocol.RPC:
            self.start_call(msg, msg_id)
        elif kind == protocol.SUBSCRIBE:
            self.subscribe(msg, msg_id)
        elif kind == protocol.UNSUBSCRIBE:
            if not self.service.semantic.unsubscribe(self, msg_id):
                self.service.hub.unsubscribe(self.outbox, msg_id)
        elif kind == protocol.SUBSCRIBE_SEMANTIC:
            self.subscribe_semantic(msg, msg_id)
        elif kind == protocol.PING:
            await self.send({"type": protocol.PONG, "id": msg_id})
        elif kind == protocol.AUTH:
            await self.auth(msg, msg_id)
        else:
            raise MalformedMessage(
                f"Unknown message type {kind!r}; expected one of {sorted(protocol.SUPPORTED_TYPES)}."
            )

    async def auth(self, msg: dict[str, Any], msg_id: Any) -> None:
        token = msg.get("token")
        if token is not None and not isinstance(token, str):
            raise MalformedMessage("`token` must be a string (or null to sign out).")
        # A failed sign-in leaves the connection anonymous, never as the previous caller.
        self.principal, self.credential = ANONYMOUS, None
        try:
            self.principal = self.service.authenticate(token)
            self.credential = token
            await self.send(protocol.result(msg_id, self.principal.to_dict(), self.service.engine.version))
        finally:
            await self.resubscribe()

    def subscribe(self, msg: dict[str, Any], msg_id: Any) -> None:
        name, args = msg.get("name"), msg.get("args", {})
        if not isinstance(msg_id, str | int) or isinstance(msg_id, bool):
            raise MalformedMessage("A subscribe message needs an `id`, a string or an integer, to name it.")
        if not isinstance(name, str) or not isinstance(args, dict):
            raise MalformedMessage("A subscribe message needs a string `name` and an object `args`.")
        self.check_expiry()
        self.start_subscription(msg_id, name, protocol.dumps(args))

    def subscribe_semantic(self, msg: dict[str, Any], msg_id: Any) -> None:
        if not isinstance(msg_id, str | int) or isinstance(msg_id, bool) or msg_id in self.outbox.subs:
            raise MalformedMessage("A subscribeSemantic message needs an `id` (a string or an integer) not in use.")
        self.check_expiry()
        # Embedding the description waits for the model: it runs as a task, like an rpc.
        task = asyncio.create_task(self.start_semantic(msg, msg_id))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def start_semantic(self, msg: dict[str, Any], msg_id: Any) -> None:
        rid = request_id()
        try:
            await self.service.semantic.subscribe(
                self,
                msg_id,
                self.principal,
                msg.get("topic"),
                msg.get("description"),
                msg.get("threshold", 0.5),
                self.send_raw,
                len(self.outbox.subs),
            )
        except Exception as exc:
            await self.send_error(msg_id, exc, rid)
            return
        data = {"topic": msg.get("topic"), "threshold": msg.get("threshold", 0.5)}
        await self.send(protocol.result(msg_id, data, self.service.engine.version))

    def start_subscription(self, sub_id: Any, name: str, args: bytes) -> None:
        fn = self.service.runtime.lookup(name, self.principal, self.client)
        if fn.kind is not FunctionKind.QUERY:
            raise BadRequest(f"{name!r} is a {fn.kind.value}; only queries can be subscribed to.")
        if not fn.cacheable:
            raise BadRequest(f"{name!r} reads what commits do not announce; call it instead of subscribing.")
        parsed = fn.parse_args(args)
        raw = orjson.dumps(orjson.loads(args), option=orjson.OPT_SORT_KEYS)
        self.service.hub.subscribe(self.outbox, sub_id, fn, self.principal, parsed, raw)

    async def resubscribe(self) -> None:
        """The caller changed: every subscription runs again as the new one, or ends with an error."""
        hub = self.service.hub
        for sub_id, lq in list(self.outbox.subs.items()):
            hub.unsubscribe(self.outbox, sub_id)
            try:
                self.start_subscription(sub_id, lq.fn.name, lq.raw)
            except Exception as exc:
                await self.send_error(sub_id, exc, request_id())

    def lapsed(self) -> bool:
        """Whether the credentials expired or were revoked; if so, the subscriptions end as that caller.

        Nothing can have lapsed before `outbox.lapses_at` (see `_caller_changed`).
        """
        if self.outbox.lapses_at > time.time():
            return False
        try:
            self.check_expiry()
        except InvalidToken:
            asyncio.get_running_loop().create_task(self.resubscribe())
            return True
        return False

    def start_call(self, msg: dict[str, Any], msg_id: Any) -> None:
        name, args = msg.get("name"), msg.get("args", {})
        if msg_id is None:
            raise MalformedMessage("An rpc message needs an `id` to match its reply.")
        if not isinstance(name, str) or not isinstance(args, dict):
            raise MalformedMessage("An rpc message needs a string `name` and an object `args`.")
        self.check_expiry()
        if len(self.in_flight) >= self.service.config.ws_max_in_flight:
            raise RateLimited(
                f"This connection already has {len(self.in_flight)} calls running; wait for replies.",
                retry_after=0.1,
            )
        runtime = self.service.runtime
        runtime.active += 1  # counted before the task runs, so calls arriving together see each other
        # The caller as of this message: an `auth` right after it must not change who runs it.
        task = asyncio.create_task(self.call(self.principal, name, args, msg_id))
        self.in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.service.runtime.active -= 1

    def check_expiry(self) -> None:
        """Credentials that lapse while the connection is open stop working, as they would over HTTP:
        a token at its `exp`, an API key within a second of being revoked."""
        exp = self.principal.claims.get("exp")
        if isinstance(exp, int | float) and exp <= time.time():
            self.principal, self.credential = ANONYMOUS, None
            raise InvalidToken("The token expired: send a fresh one in an `auth` message.")
        if self.credential is not None and self.credential.startswith(protocol.API_KEY_PREFIX):
            now = time.monotonic()
            if now - self.key_checked_at >= KEY_RECHECK_SECONDS:
                self.key_checked_at = now
                try:
                    self.service.authenticate(self.credential)
                except InvalidToken:
                    self.principal, self.credential = ANONYMOUS, None
                    raise

    async def call(self, principal: Principal, name: str, args: dict[str, Any], msg_id: Any) -> None:
        rid = request_id()
        runtime, hub, version = self.service.runtime, self.service.hub, None
        fn = runtime.registry.get(name)
        if fn is not None and fn.kind is FunctionKind.MUTATION:
            hub.expect_reply(self.outbox, rid)
        try:
            result = await runtime.call(
                principal, name, protocol.dumps(args), request_id=rid, client=self.client, counted=True
            )
        except Exception as exc:
            await self.send_error(msg_id, exc, rid)
        else:
            await self.send_raw(protocol.ws_result(msg_id, result.encoded, result.version))
            version = result.version
        finally:
            hub.replied(self.outbox, rid, version)

    async def send_error(self, msg_id: Any, exc: BaseException, rid: str) -> None:
        await self.send(protocol.error(msg_id, as_public_error(exc, rid).to_dict(rid)))

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(protocol.dumps(message))

    async def send_raw(self, encoded: bytes) -> None:
        if not self.open:
            return
        try:
            await self._send({"type": "websocket.send", "text": encoded.decode()})
        except (OSError, RuntimeError):
            # The client went away mid-send; the next receive() ends the session.
            self.open = False

    async def close(self, code: int, reason: str) -> None:
        if self.open:
            self.open = False
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def direct_writer(send: Send) -> DirectWriter | None:
    """A synchronous text-frame send through uvicorn's sans-I/O WebSocket protocol, when `send` is its.

    A live result goes to every subscriber of a commit: the ASGI path costs a coroutine
    chain and a message dict per frame, about half of each delivery (bench/live.py). This
    does what that path does (frame the text, write it to the transport) without them.
    Only used while the socket has room; any other server gets None and the ASGI path.
    """
    proto: Any = getattr(send, "__self__", None)
    conn, transport = getattr(proto, "conn", None), getattr(proto, "transport", None)
    needed = ("close_sent", "disconnected", "handshake_complete")
    if (
        conn is None
        or transport is None
        or not all(hasattr(conn, a) for a in ("send_text", "data_to_send", "writes", "extensions", "state"))
        or not all(hasattr(proto, a) for a in needed)
    ):
        return None
    return DirectWriter(proto, conn, transport)


class DirectWriter:
    """Writes text frames to one uvicorn connection with no await (see `direct_writer`)."""

    __slots__ = ("conn", "plain", "proto", "transport")

    def __init__(self, proto: Any, conn: Any, transport: Any) -> None:
        self.proto, self.conn, self.transport = proto, conn, transport
        # A server's frames are not masked, and uvicorn sends each message as one frame: with no
        # extension (compression) to change them, the same text is the same bytes on every
        # connection, as websockets.broadcast relies on. Known once the handshake is done.
        self.plain: bool | None = None

    def write(self, frame: bytes) -> bool:
        p = self.proto
        if not p.handshake_complete or not self._open():
            return False
        self.conn.send_text(frame)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.plain is None:
            self.plain = not self.conn.extensions
        return True

    def _open(self) -> bool:
        p = self.proto
        return not (p.close_sent or p.disconnected or self.conn.state is not State.OPEN or self.transport.is_closing())

    def encode(self, frame: bytes) -> bytes:
        return Frame(Opcode.TEXT, frame).serialize(mask=False, extensions=[])

    def write_wire(self, wire: bytes) -> bool:
        # Only called once `plain` is set, so after the handshake.
        if not self._open():
            return False
        if self.conn.writes:  # anything the protocol queued (a pong, say) goes first
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.write(wire)
        return True


class WebSocketEndpoint:
    """The ASGI app behind /ws (a class, so Starlette passes it raw ASGI messages)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Session(scope, receive, send, scope["app"].state.service).run()


websocket_endpoint = WebSocketEndpoint()


class WebSocketFirst:
    """Hands /ws connections to their Session straight from the server, past Starlette's layers.

    Each layer wraps `send`, and a live result crosses them once per connection per commit:
    with a thousand subscribers that is most of the cost of a fan-out. Everything else
    goes to `app`.
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await Session(scope, receive, send, self.service).run()
        else:
            await self.app(scope, receive, send)
