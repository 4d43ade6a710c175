"""Run the DIMSE gateway alone: ``python -m noctis_ingest_scp``.

DIMSE is served on ``NOCTIS_DIMSE_PORT`` and metrics and health on
``NOCTIS_METRICS_PORT`` (``NOCTIS_HTTP_PORT`` when that is 0). On SIGTERM or SIGINT the
gateway stops accepting associations, readiness returns 503, and open associations
get ``NOCTIS_DIMSE_SHUTDOWN_TIMEOUT_S`` seconds to be released before they are aborted.
Then the process exits with status 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from noctis_common.health import STORE_SERVICE_OPTIONAL, STORE_SERVICE_REQUIRED, ReadinessProbe
from noctis_common.logs import configure_logging
from noctis_common.service import SHUTDOWN_SIGNALS, open_context
from noctis_common.settings import Settings
from noctis_common.tracing import configure_tracing
from noctis_ingest_scp.scp import StorageSCP
from noctis_ingest_scp.status_server import StatusServer

logger = logging.getLogger("noctis_ingest_scp")

SIGNAL_CHECK_INTERVAL_S = 0.5


def main() -> None:
    settings = Settings()
    configure_logging(settings)
    configure_tracing()
    context = open_context(settings, "the DIMSE gateway")
    probe = ReadinessProbe(context, STORE_SERVICE_REQUIRED, STORE_SERVICE_OPTIONAL)
    status_server = StatusServer(settings, probe)
    scp = StorageSCP(context)
    received_signal: list[int] = []
    stopped = threading.Event()

    def handle_shutdown_signal(signum: int, frame: FrameType | None) -> None:
        received_signal.append(signum)
        stopped.set()

    for signum in SHUTDOWN_SIGNALS:
        signal.signal(signum, handle_shutdown_signal)
    context.start()
    try:
        scp.start()
        status_server.start()
    except (OSError, ValueError) as error:  # a taken port, or an invalid configuration file
        logger.error("cannot start the DIMSE gateway: %s", error)
        scp.stop()
        context.close()
        sys.exit(1)

    # The kernel may deliver the signal to any thread, but Python runs the handler only
    # in the main thread, when it next executes bytecode. A wait without timeout could
    # sleep through the signal, so the main thread wakes up twice a second.
    while not stopped.wait(SIGNAL_CHECK_INTERVAL_S):
        pass
    probe.shutting_down = True
    logger.info(
        "received %s; the DIMSE gateway stops accepting associations",
        signal.Signals(received_signal[0]).name,
    )
    scp.stop(settings.dimse_shutdown_timeout_s)
    status_server.stop()
    context.close()
    logger.info("the DIMSE gateway exited after a graceful shutdown")


if __name__ == "__main__":
    main()
