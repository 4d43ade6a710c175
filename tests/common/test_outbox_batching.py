"""The outbox relay's batch delay: events of stores close together go out in one batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from noctis_common.db import Database
from noctis_common.events import Event, OutboxRelay, add_event

# The second event follows the first after PAUSE_S. Without a batch delay the relay
# publishes the first one alone meanwhile; with it, both go out together. The delay
# leaves room for a slow commit on a loaded machine.
BATCH_DELAY_S = 3.0
PAUSE_S = 0.5


class RecordingPublisher:
    def __init__(self, expected_events: int) -> None:
        self.batches: list[list[Event]] = []
        self.expected_events = expected_events
        self.done = threading.Event()

    def publish(self, events: Sequence[Event]) -> None:
        self.batches.append(list(events))
        if sum(len(batch) for batch in self.batches) >= self.expected_events:
            self.done.set()


def commit_event(database: Database, study_instance_uid: str) -> None:
    with database.write_session() as session:
        add_event(session, "instance.stored", study_instance_uid, {})
        session.commit()


def test_relay_batches_events_within_delay(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    database.upgrade()
    publisher = RecordingPublisher(expected_events=2)
    relay = OutboxRelay(database, publisher, poll_interval_s=60, batch_delay_s=BATCH_DELAY_S)
    relay.start()
    try:
        commit_event(database, "1.2.3.1")
        relay.notify()
        time.sleep(PAUSE_S)
        commit_event(database, "1.2.3.2")
        relay.notify()
        delivered = publisher.done.wait(timeout=30)
    finally:
        relay.stop()
        database.dispose()

    assert delivered
    assert [len(batch) for batch in publisher.batches] == [2]
