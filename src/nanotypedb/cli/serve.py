"""`nanotypedb serve`: open the service, print the first admin key, run uvicorn until a signal."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
from collections.abc import Iterator

import click
import uvicorn

from ..ai import choice as ai_choice
from ..lib import logs
from ..server.cors import parse_origins
from ..server.routes import WS_PROTOCOL, build_asgi
from ..service import Service, load_app
from ..settings import Config

log = logging.getLogger("nanotypedb")
# The collector's thresholds for a long-running server (CPython's are 700, 10, 10). With
# thousands of connections a full collection walks every object they hold, 100-200 ms
# each, measured (bench/live.py): it came every few fan-outs and set their p99.
GC_THRESHOLDS = (50_000, 50, 100)


def run(config: Config) -> None:
    logs.configure(config.log_level, config.log_format)
    parse_origins(config.cors_origins)  # a bad value is refused before anything is opened
    service = Service(load_app(config.app), config)
    report = service.open()
    _announce(service, config, report)
    # What start-up built lives as long as the process: keep it out of every collection.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    server = _Server(
        uvicorn.Config(
            build_asgi(service),
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            # JSON: uvicorn's loggers pass their records to the root logger's JSON handler.
            log_config=None if config.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            access_log=False,
            ws=WS_PROTOCOL,
            ws_max_size=config.ws_max_frame_bytes * 4,
            timeout_graceful_shutdown=30,
            lifespan="on",
        )
    )
    try:
        server.run()
    finally:
        # uvicorn has stopped accepting and finished in-flight requests; now drain the writer.
        service.close()
        log.info("databases closed cleanly")


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT ends `run()` normally.

    uvicorn re-raises the signal once it has shut down, which would kill the process (or raise
    KeyboardInterrupt) before the databases are closed; we close them and exit with code 0 instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be handled on the main thread
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _announce(service: Service, config: Config, report: object) -> None:
    env = service.environment
    if service.first_admin_key:
        click.echo(f"Admin API key (shown once): {service.first_admin_key}", err=True)
    click.echo(
        f"NanoTypeDB serving app {service.app.name!r} on http://{config.host}:{config.port} "
        f"(environment: {env.name}, {env.type.value}; data: {config.data_dir}, durability: {config.durability})",
        err=True,
    )
    click.echo(ai_choice.describe_choice(config), err=True)
