"""The event outbox and the relay that publishes its rows.

The archive writes each event as an ``outbox_event`` row in the same transaction as the
index change it reports, so an event exists exactly when its change is committed. An
:class:`OutboxRelay` then hands unpublished rows, oldest first, to an
:class:`EventPublisher` and marks them published. On one machine the publisher is
:class:`InProcessPublisher`; a broker publisher (Kafka) implements the same protocol,
so no service changes when it replaces the in-process one.

Delivery is at least once: a crash after publishing and before marking publishes the
same event again after restart, so subscribers deduplicate by :attr:`Event.id`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from noctis_common.db import Database
from noctis_common.db.models import OutboxEvent
from noctis_common.metrics import OUTBOX_EVENTS_PUBLISHED

logger = logging.getLogger(__name__)

INSTANCE_STORED = "instance.stored"
RELAY_BATCH_SIZE = 500


@dataclass(frozen=True)
class Event:
    """One published event."""

    id: int
    type: str
    study_instance_uid: str
    payload: dict[str, Any]
    created_at: datetime


def add_event(
    session: Session, event_type: str, study_instance_uid: str, payload: dict[str, Any]
) -> None:
    """Add an event to the outbox within the caller's transaction."""
    session.add(
        OutboxEvent(
            event_type=event_type,
            study_instance_uid=study_instance_uid,
            payload_json=json.dumps(payload, separators=(",", ":")),
        )
    )


class EventPublisher(Protocol):
    """Delivers a batch of events; raises when any of them could not be delivered."""

    def publish(self, events: Sequence[Event]) -> None: ...


Subscriber = Callable[[Event], None]


@dataclass
class InProcessPublisher:
    """Calls subscribers in this process, in event order.

    A subscriber that raises is logged and skipped: one faulty subscriber must not
    hold back the others or block the outbox.
    """

    subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            for subscriber in self.subscribers:
                try:
                    subscriber(event)
                except Exception:
                    logger.exception(
                        "event subscriber %r failed on event %d (%s)",
                        subscriber,
                        event.id,
                        event.type,
                    )


class OutboxRelay:
    """Publishes outbox rows in a background thread.

    The thread wakes when :meth:`notify` is called after a commit, or every
    ``poll_interval_s`` seconds to pick up rows written by other processes.
    """

    def __init__(
        self, database: Database, publisher: EventPublisher, poll_interval_s: float = 1.0
    ) -> None:
        self.database = database
        self.publisher = publisher
        self.poll_interval_s = poll_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        logger.info("outbox relay started")
        while not self._stop.is_set():
            try:
                while self.relay_once() == RELAY_BATCH_SIZE and not self._stop.is_set():
                    pass
            except Exception:
                logger.exception("outbox relay failed; retrying in %.1f s", self.poll_interval_s)
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
        logger.info("outbox relay stopped")

    def relay_once(self) -> int:
        """Publish one batch of unpublished events; return how many were published."""
        with self.database.write_session() as session:
            rows = session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.id)
                .limit(RELAY_BATCH_SIZE)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                session.rollback()
                return 0
            events = [
                Event(
                    id=row.id,
                    type=row.event_type,
                    study_instance_uid=row.study_instance_uid,
                    payload=json.loads(row.payload_json),
                    created_at=row.created_at,
                )
                for row in rows
            ]
            self.publisher.publish(events)
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_([event.id for event in events]))
                .values(published_at=datetime.now(UTC))
            )
            session.commit()
        OUTBOX_EVENTS_PUBLISHED.inc(len(events))
        return len(events)
