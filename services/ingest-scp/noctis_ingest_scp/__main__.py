"""Run the DIMSE gateway alone: ``python -m noctis_ingest_scp``."""

from __future__ import annotations

import logging
import signal
import sys
import threading

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
    except (OSError, ValueError) as error:  # a taken port, or an invalid configuration file
        logging.getLogger("noctis_ingest_scp").error("cannot start the DIMSE gateway: %s", error)
        context.close()
        sys.exit(1)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    scp.stop()
    context.close()


if __name__ == "__main__":
    main()
