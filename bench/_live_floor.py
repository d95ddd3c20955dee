"""The fan-out floor of bench/live.py: insert a row, broadcast it to every subscriber, nothing else.

Run as a script, it serves a bare `websockets` handler on 127.0.0.1 (/ws, and GET /healthz), in
its own process like the real server. A `subscribe` message registers the connection (its answer
is a `transition` with an empty result, so the client knows it is subscribed); an `rpc` does the
same SQLite insert as the server's createTask (bench/_floor.py: the real tasks table, WAL, one
commit per row), then sends the new row, encoded once, to every subscriber with
`websockets.broadcast`, and answers the writer. No query re-runs, no auth, no read sets, no
versions: the least a server must do to fan a write out.

With `--push list`, each write instead re-reads the newest 20 rows once (what listTasks
{"limit": 20} returns) and broadcasts that list, encoded once: a shared re-run and a payload
of the same size as the server's, still with nothing per subscriber but the socket write.
"""

from __future__ import annotations

import argparse
from http import HTTPStatus

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from _floor import insert_task, open_db

LIST = "SELECT id, title, status, created_at, updated_at, owner_id FROM tasks ORDER BY id DESC LIMIT 20"
COLUMNS = ("id", "title", "status", "created_at", "updated_at", "owner_id")


async def run(db: str, synchronous: str, port: int, push: str) -> None:
    conn = open_db(db, synchronous)
    subscribers: set[ServerConnection] = set()
    version = 0

    async def handler(socket: ServerConnection) -> None:
        nonlocal version
        try:
            async for frame in socket:
                message = orjson.loads(frame)
                kind = message.get("type")
                if kind == "subscribe":
                    subscribers.add(socket)
                    first = {"type": "transition", "version": version, "updates": [{"id": message["id"], "data": []}]}
                    await socket.send(orjson.dumps(first).decode())
                elif kind == "rpc":
                    row = insert_task(conn, message["args"]["title"])
                    version += 1
                    rows = [row] if push == "row" else [dict(zip(COLUMNS, r, strict=True)) for r in conn.execute(LIST)]
                    update = {"type": "transition", "version": version, "updates": [{"id": 1, "data": rows}]}
                    broadcast(subscribers, orjson.dumps(update).decode())
                    answer = {"type": "result", "id": message["id"], "data": row, "version": version}
                    await socket.send(orjson.dumps(answer).decode())
        finally:
            subscribers.discard(socket)

    def healthz(socket: ServerConnection, request: Request) -> Response | None:
        return socket.respond(HTTPStatus.OK, "ok\n") if request.path == "/healthz" else None

    # A backlog as deep as the server's (uvicorn's is 2,048): 1,000 clients connect at once.
    async with serve(handler, "127.0.0.1", port, process_request=healthz, compression=None, backlog=2048) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], required=True)
    parser.add_argument("--push", choices=["row", "list"], default="row", help="the new row, or the newest 20")
    args = parser.parse_args()
    uvloop.run(run(args.db, args.synchronous, args.port, args.push))


if __name__ == "__main__":
    main()
