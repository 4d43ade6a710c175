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
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.published = threading.Condition()

    def publish(self, events: Sequence[Event]) -> None:
        with self.published:
            self.batches.append(list(events))
            self.published.notify_all()

    def wait_for_events(self, count: int, timeout_s: float) -> bool:
        with self.published:
            return self.published.wait_for(
                lambda: sum(len(batch) for batch in self.batches) >= count, timeout_s
            )


def commit_event(database: Database, study_instance_uid: str) -> None:
    with database.write_session() as session:
        add_event(session, "instance.stored", study_instance_uid, {})
        session.commit()


def test_relay_batches_events_within_delay(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    database.upgrade()
    publisher = RecordingPublisher()
    relay = OutboxRelay(database, publisher, poll_interval_s=60, batch_delay_s=BATCH_DELAY_S)
    # The relay's first pass at start publishes this event, so the measured ones below
    # wait for a notify rather than racing with that pass.
    commit_event(database, "1.2.3.0")
    relay.start()
    try:
        started = publisher.wait_for_events(1, timeout_s=30)
        commit_event(database, "1.2.3.1")
        relay.notify()
        time.sleep(PAUSE_S)
        commit_event(database, "1.2.3.2")
        relay.notify()
        delivered = publisher.wait_for_events(3, timeout_s=30)
    finally:
        relay.stop()
        database.dispose()

    assert started
    assert delivered
    assert [len(batch) for batch in publisher.batches] == [1, 2]
