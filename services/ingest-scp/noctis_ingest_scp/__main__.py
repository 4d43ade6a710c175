"""Run the DIMSE gateway alone: ``python -m noctis_ingest_scp``."""

from __future__ import annotations

import signal
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
    scp.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    scp.stop()
    context.close()


if __name__ == "__main__":
    main()
