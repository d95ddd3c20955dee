"""`nanotypedb serve`, unchanged, plus one route that reports the live-query hub's counters.

The server exposes no live-query statistics over HTTP, so for the 1,000-users scenario
bench/live.py runs the real CLI (`nanotypedb serve ARGS...`) in this wrapper process: it
replaces the CLI's `build_asgi` with one that answers GET /_bench/live-stats itself (the hub's
counters, read on the server's event loop) and hands every other request to the real app.
Everything else, the service, uvicorn and its settings, is the CLI's own code path.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import orjson

import nanotypedb.cli.serve as serve_module
from nanotypedb.cli.main import main

STATS_PATH = "/_bench/live-stats"


def live_stats(service: Any) -> dict[str, Any]:
    """The hub's counters (`cycles`, `reruns`: query runs, first runs included, `entries`:
    results staged for connections), how many live queries it holds, and the engine's
    `mutations` (committed mutations), so re-runs can be counted per committed write."""
    hub = getattr(service, "hub", None)
    if hub is None:
        return {"error": "the service has no live-query hub"}
    found = _counters(hub.stats)
    found["live_queries"] = len(getattr(hub, "queries", ()))
    engine = getattr(getattr(service, "engine", None), "stats", None)
    if engine is not None:
        found["mutations"] = _counters(engine).get("mutations")
    return found


def _counters(stats: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    return {name: getattr(stats, name) for name in getattr(stats, "__slots__", ())} or dict(vars(stats))


def with_stats(build: Any) -> Any:
    def build_asgi(service: Any) -> Any:
        inner = build(service)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == STATS_PATH:
                body = orjson.dumps(live_stats(service))
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await inner(scope, receive, send)

        return app

    return build_asgi


if __name__ == "__main__":
    serve_module.build_asgi = with_stats(serve_module.build_asgi)
    sys.argv = ["nanotypedb", "serve", *sys.argv[1:]]
    main()
