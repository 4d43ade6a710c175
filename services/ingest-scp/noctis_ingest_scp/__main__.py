"""Run the DIMSE gateway alone: ``python -m noctis_ingest_scp``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from noctis_common.context import ArchiveContext
from noctis_common.logs import configure_logging
from noctis_common.settings import Settings
from noctis_ingest_scp.scp import StorageSCP


def main() -> None:
    settings = Settings()
    configure_logging(settings)
    context = ArchiveContext.create(settings)
    context.start()
    scp = StorageSCP(context)
    try:
        scp.start()
        metrics_server = start_metrics_server(settings)
    except (OSError, ValueError) as error:  # a taken port, or an invalid configuration file
        logging.getLogger("noctis_ingest_scp").error("cannot start the DIMSE gateway: %s", error)
        scp.stop()
        context.close()
        sys.exit(1)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    scp.stop()
    if metrics_server is not None:
        metrics_server.shutdown()
    context.close()


def start_metrics_server(settings: Settings) -> WSGIServer | None:
    """Serve ``/metrics`` on ``NOCTIS_METRICS_PORT`` in a background thread, unless it is 0."""
    if settings.metrics_port == 0:
        return None
    server, _ = start_http_server(settings.metrics_port, addr=settings.http_host)
    logging.getLogger("noctis_ingest_scp").info(
        "Prometheus metrics served on http://%s:%d/metrics",
        settings.http_host,
        settings.metrics_port,
    )
    return server


if __name__ == "__main__":
    main()
