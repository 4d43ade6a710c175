"""An event consumer run as its own process, for the SIGTERM test.

Usage: ``python -m tests.common.consumer_process BOOTSTRAP TOPIC GROUP DATABASE_URL LOG
HANDLER_DELAY_S``. The handler writes ``start <id>`` and ``end <id>`` lines to LOG around
a sleep of HANDLER_DELAY_S seconds, so a test can signal the process while it handles a
record.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from sqlalchemy.orm import Session

from noctis_common.consumer import ConsumerConfig, EventConsumer, ReceivedEvent
from noctis_common.db import Database


def main() -> None:
    bootstrap_servers, topic, group_id, database_url, log_path, delay_text = sys.argv[1:7]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    log = Path(log_path)
    delay_s = float(delay_text)

    def handle(event: ReceivedEvent, _session: Session) -> None:
        with log.open("a", encoding="utf-8") as output:
            output.write(f"start {event.id}\n")
        time.sleep(delay_s)
        with log.open("a", encoding="utf-8") as output:
            output.write(f"end {event.id}\n")

    database = Database(database_url)
    consumer = EventConsumer(
        ConsumerConfig(group_id=group_id, topics=[topic], session_timeout_ms=6000),
        handle,
        database,
        {"bootstrap_servers": [bootstrap_servers]},
    )
    consumer.install_signal_handlers()
    try:
        consumer.run()
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
