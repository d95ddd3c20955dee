"""One WebSocket connection: authenticate, run calls concurrently up to a bound, answer pings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import protocol
from ..auth.principal import ANONYMOUS, Principal
from ..errors import MalformedMessage, NanoTypeDBError, PayloadTooLarge, RateLimited
from ..lib.ids import request_id
from ..service import Service
from .http import bearer
from .responses import as_public_error

log = logging.getLogger(__name__)


class Session:
    """The state of one connection: who is calling and which calls are still running."""

    def __init__(self, websocket: WebSocket, service: Service) -> None:
        self.ws = websocket
        self.service = service
        self.principal: Principal = ANONYMOUS
        self.in_flight: set[asyncio.Task[None]] = set()
        client = websocket.client
        self.client = client.host if client else ""

    async def run(self) -> None:
        await self.ws.accept()
        try:
            self.principal = self.service.authenticate(bearer(self.ws.headers.get("authorization")))
        except NanoTypeDBError as exc:
            # Say why before closing: a browser cannot read the reason of a refused handshake.
            await self.send_error(None, exc, request_id())
            await self.ws.close(code=4401, reason=exc.code)
            return
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self.handle(message.get("text") or message.get("bytes") or "")
        except WebSocketDisconnect:
            pass
        finally:
            # Calls already started finish (their writes commit) even if nobody hears the reply.
            if self.in_flight:
                await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def handle(self, raw: str | bytes) -> None:
        msg_id: Any = None
        try:
            if len(raw) > self.service.config.ws_max_frame_bytes:
                raise PayloadTooLarge(
                    f"The frame is {len(raw)} bytes; the limit is {self.service.config.ws_max_frame_bytes}."
                )
            msg = protocol.loads(raw)
            if not isinstance(msg, dict):
                raise MalformedMessage("A message must be a JSON object with a `type`.")
            msg_id = msg.get("id")
            await self.dispatch(msg, msg_id)
        except Exception as exc:
            await self.send_error(msg_id, exc, request_id())

    async def dispatch(self, msg: dict[str, Any], msg_id: Any) -> None:
        kind = msg.get("type")
        if kind == protocol.PING:
            await self.send({"type": protocol.PONG, "id": msg_id})
        elif kind == protocol.RPC:
            self.start_call(msg, msg_id)
        elif kind == protocol.AUTH:
            await self.auth(msg, msg_id)
        else:
            raise MalformedMessage(f"Unknown message type {kind!r}; expected one of {sorted(protocol.CLIENT_TYPES)}.")

    async def auth(self, msg: dict[str, Any], msg_id: Any) -> None:
        token = msg.get("token")
        if token is not None and not isinstance(token, str):
            raise MalformedMessage("`token` must be a string (or null to sign out).")
        self.principal = self.service.authenticate(token)
        await self.send(protocol.result(msg_id, self.principal.to_dict(), self.service.engine.version))

    def start_call(self, msg: dict[str, Any], msg_id: Any) -> None:
        name, args = msg.get("name"), msg.get("args", {})
        if msg_id is None:
            raise MalformedMessage("An rpc message needs an `id` to match its reply.")
        if not isinstance(name, str) or not isinstance(args, dict):
            raise MalformedMessage("An rpc message needs a string `name` and an object `args`.")
        if len(self.in_flight) >= self.service.config.ws_max_in_flight:
            raise RateLimited(
                f"This connection already has {len(self.in_flight)} calls running; wait for replies.",
                retry_after=0.1,
            )
        task = asyncio.create_task(self.call(name, args, msg_id))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def call(self, name: str, args: dict[str, Any], msg_id: Any) -> None:
        rid = request_id()
        try:
            result = await self.service.runtime.call(
                self.principal, name, protocol.dumps(args), request_id=rid, client=self.client
            )
        except Exception as exc:
            await self.send_error(msg_id, exc, rid)
            return
        await self.send(protocol.result(msg_id, result.data, result.version))

    async def send_error(self, msg_id: Any, exc: BaseException, rid: str) -> None:
        await self.send(protocol.error(msg_id, as_public_error(exc, rid).to_dict(rid)))

    async def send(self, message: dict[str, Any]) -> None:
        if self.ws.application_state is not WebSocketState.CONNECTED:
            return
        # A client that went away raises here; the next receive() ends the session.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.ws.send_text(protocol.dumps(message).decode())


async def websocket_endpoint(websocket: WebSocket) -> None:
    await Session(websocket, websocket.app.state.service).run()
