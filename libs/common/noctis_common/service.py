"""Running one service alone: start-up checks, graceful shutdown, the HTTP server.

A service logs why and exits with status 1 at start when its index or object
store cannot be opened or when the index lacks migrations and
``NOCTIS_DB_MIGRATE_ON_START`` is false. On SIGTERM (or SIGINT) an HTTP service stops
accepting connections, lets requests in progress finish for at most
``NOCTIS_HTTP_SHUTDOWN_TIMEOUT_S`` and exits with status 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Collection, Sequence
from types import FrameType

import uvicorn
from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from noctis_common.context import ArchiveContext
from noctis_common.db import IndexSchemaOutdatedError
from noctis_common.health import STORE_SERVICE_OPTIONAL, STORE_SERVICE_REQUIRED, Dependency
from noctis_common.logs import configure_logging
from noctis_common.settings import Settings
from noctis_common.storage import StorageError
from noctis_common.tracing import configure_tracing
from noctis_common.web import create_app

logger = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def open_context(settings: Settings, service_name: str) -> ArchiveContext:
    """Open the archive context, or log why it cannot be opened and exit with status 1."""
    try:
        return ArchiveContext.create(settings)
    except IndexSchemaOutdatedError as error:
        logger.error("%s cannot start: %s", service_name, error)
    except SQLAlchemyError as error:
        database_url = make_url(settings.resolved_database_url)
        logger.error(
            "%s cannot start: opening the index database %s failed: %s; check "
            "NOCTIS_DATABASE_URL and that the database server accepts connections",
            service_name,
            database_url.render_as_string(hide_password=True),
            error,
        )
    except StorageError as error:
        logger.error(
            "%s cannot start: opening the object store failed: %s; check "
            "NOCTIS_STORAGE_BACKEND and the NOCTIS_S3_* settings",
            service_name,
            error,
        )
    sys.exit(1)


class _GracefulServer(uvicorn.Server):
    """A uvicorn server that calls ``on_shutdown_signal`` when the first signal arrives."""

    def __init__(self, config: uvicorn.Config, on_shutdown_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown_signal = on_shutdown_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first_signal = not self.should_exit
        super().handle_exit(sig, frame)
        if first_signal:
            logger.info(
                "received %s; finishing requests in progress (at most %g s)",
                signal.Signals(sig).name,
                self.config.timeout_graceful_shutdown,
            )
            self.on_shutdown_signal()


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """Ignore the signal that uvicorn raises again after its graceful shutdown."""


def serve_http(
    app: FastAPI, settings: Settings, on_shutdown_signal: Callable[[], None] = lambda: None
) -> None:
    """Serve ``app`` on ``NOCTIS_HTTP_HOST:NOCTIS_HTTP_PORT`` until SIGTERM or SIGINT.

    At the first signal uvicorn stops accepting connections, ``on_shutdown_signal``
    runs, and requests in progress get ``NOCTIS_HTTP_SHUTDOWN_TIMEOUT_S`` seconds to
    finish before uvicorn cancels them. Then this function returns.
    """
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=settings.http_shutdown_timeout_s,
        # The client address and the links come from forwarded headers of trusted
        # proxies only (noctis_common.client_address), so uvicorn must leave the TCP
        # peer's address in the request instead of replacing it with X-Forwarded-For.
        proxy_headers=False,
    )
    server = _GracefulServer(config, on_shutdown_signal)
    # After its shutdown uvicorn restores the handlers it found and raises the signal
    # again. With the default handlers that would kill the process by the signal;
    # with these it returns, and the service exits with status 0.
    previous = {signum: signal.signal(signum, _ignore_signal) for signum in SHUTDOWN_SIGNALS}
    try:
        server.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_http_service(
    title: str,
    routers: Sequence[APIRouter],
    root_routers: Sequence[APIRouter] = (),
    *,
    required_dependencies: Collection[Dependency] = STORE_SERVICE_REQUIRED,
    optional_dependencies: Collection[Dependency] = STORE_SERVICE_OPTIONAL,
) -> None:
    """Serve ``routers`` on ``NOCTIS_HTTP_HOST:NOCTIS_HTTP_PORT`` until SIGTERM.

    ``routers`` are served under ``/dicom-web`` and ``root_routers`` (WADO-URI) at the
    root. ``/health/ready`` checks the dependencies the two collections name.
    """
    settings = Settings()
    configure_logging(settings)
    configure_tracing()
    context = open_context(settings, title)
    app = create_app(
        title,
        routers,
        settings,
        context,
        required_dependencies=required_dependencies,
        optional_dependencies=optional_dependencies,
    )
    for router in root_routers:
        app.include_router(router)

    def begin_shutdown() -> None:
        app.state.readiness.shutting_down = True

    context.start()
    try:
        serve_http(app, settings, begin_shutdown)
    finally:
        context.close()
        logger.info("%s stopped", title)
