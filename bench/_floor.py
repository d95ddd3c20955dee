"""Floors: the least a server can do for createTask, and the rate of one fsync per mutation.

Run as a script, this serves one floor on 127.0.0.1 so it runs in its own process like the
real server: `websockets` (a bare websockets handler on /ws) or `starlette` (under uvicorn,
a bare Starlette endpoint on POST /api/rpc/createTask and a bare WebSocket route on /ws).
Each does the same SQLite insert as the server's createTask, in WAL mode with the synchronous
setting it is compared with, and nothing else: no auth, validation, row-level security or
versioning. Each answers GET /healthz.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson

# The bundled app's tasks table as migrations 1-7 leave it, with its one index: the floor's
# insert touches the same b-trees as the server's, so the gap measured is the server's own.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT NOT NULL,
    updated_at TEXT,
    owner_id TEXT
)""",
    "CREATE INDEX IF NOT EXISTS ix_tasks_owner_id ON tasks (owner_id)",
)
INSERT = "INSERT INTO tasks (title, status, owner_id, created_at) VALUES (?, ?, ?, ?)"


def open_db(path: str, synchronous: str) -> sqlite3.Connection:
    """Open in autocommit mode, so each INSERT is its own transaction (one commit per row)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def insert_task(conn: sqlite3.Connection, title: str) -> dict[str, Any]:
    row = {"title": title, "status": "pending", "owner_id": "alice"}
    row["created_at"] = datetime.now(UTC).isoformat()
    cursor = conn.execute(INSERT, (title, row["status"], row["owner_id"], row["created_at"]))
    return {"id": cursor.lastrowid, **row}


def fsync_loop(path: str, warmup: float, duration: float) -> list[float]:
    """Commit one row per transaction with synchronous=FULL; return the measured latencies."""
    conn = open_db(path, "FULL")
    start = time.perf_counter() + warmup
    end = start + duration
    latencies: list[float] = []
    while (t0 := time.perf_counter()) < end:
        insert_task(conn, "fsync")
        t1 = time.perf_counter()
        if t1 >= start:
            latencies.append(t1 - t0)
    conn.close()
    return latencies


def answer_rpc(conn: sqlite3.Connection, frame: str | bytes) -> str:
    """Handle one WebSocket frame; createTask is the only call a floor knows."""
    message = orjson.loads(frame)
    data = insert_task(conn, message["args"]["title"]) if message["type"] == "rpc" else {}
    return orjson.dumps({"type": "result", "id": message["id"], "data": data}).decode()


async def serve_websockets(conn: sqlite3.Connection, port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.http11 import Request, Response

    async def handler(socket: ServerConnection) -> None:
        async for frame in socket:
            await socket.send(answer_rpc(conn, frame))

    def healthz(socket: ServerConnection, request: Request) -> Response | None:
        return socket.respond(HTTPStatus.OK, "ok\n") if request.path == "/healthz" else None

    async with serve(handler, "127.0.0.1", port, process_request=healthz, compression=None) as s:
        await s.serve_forever()


def starlette_app(conn: sqlite3.Connection) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def create_task(request: Request) -> Response:
        args = orjson.loads(await request.body())
        body = orjson.dumps({"data": insert_task(conn, args["title"])})
        return Response(body, media_type="application/json")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(answer_rpc(conn, await websocket.receive_text()))
        except WebSocketDisconnect:
            return

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/api/rpc/createTask", create_task, methods=["POST"]),
            Route("/healthz", healthz),
            WebSocketRoute("/ws", socket),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["websockets", "starlette"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], required=True)
    args = parser.parse_args()
    conn = open_db(args.db, args.synchronous)
    if args.kind == "websockets":
        import uvloop

        uvloop.run(serve_websockets(conn, args.port))
    else:
        import uvicorn

        app = starlette_app(conn)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
