"""`nanotypedb serve`: open the service, print the first admin key, run uvicorn until a signal."""

from __future__ import annotations

import logging

import click
import uvicorn

from ..server.routes import build_asgi
from ..service import Service, load_app
from ..settings import Config

log = logging.getLogger("nanotypedb")


def run(config: Config) -> None:
    logging.getLogger().setLevel(config.log_level.upper())
    service = Service(load_app(config.app), config)
    report = service.open()
    _announce(service, config, report)
    server = uvicorn.Server(
        uvicorn.Config(
            build_asgi(service),
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=False,
            ws_max_size=config.ws_max_frame_bytes * 4,
            timeout_graceful_shutdown=30,
            lifespan="off",
        )
    )
    try:
        server.run()
    finally:
        # uvicorn has stopped accepting and finished in-flight requests; now drain the writer.
        service.close()
        log.info("databases closed cleanly")


def _announce(service: Service, config: Config, report: object) -> None:
    if service.first_admin_key:
        click.echo(f"Admin API key (shown once): {service.first_admin_key}", err=True)
    click.echo(
        f"NanoTypeDB serving app {service.app.name!r} on http://{config.host}:{config.port} "
        f"(data: {config.data_dir}, durability: {config.durability})",
        err=True,
    )
