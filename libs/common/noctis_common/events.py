"""The event outbox and the relay that publishes its rows.

The archive writes each event as an ``outbox_event`` row in the same transaction as the
index change it reports, so an event exists exactly when its change is committed. An
:class:`OutboxRelay` then hands unpublished rows to an :class:`EventPublisher` and marks
them published. On one machine the publisher is :class:`InProcessPublisher`; with
``NOCTIS_EVENTS_BACKEND=kafka`` it is :class:`noctis_common.kafka_publisher.KafkaPublisher`
followed by the in-process one, so no service changes when Kafka is added.

Delivery is at least once: a crash or a broker error after publishing and before marking
publishes the same event again later, so subscribers deduplicate by :attr:`Event.id`.

Order. Every transaction that writes an event of a study first locks the study row
(stores, deletions and the study-complete sweep select it ``FOR UPDATE``), so within a
study the outbox ids grow in commit order. The relay publishes in id order, so one
study's events reach the publisher in the order they were committed. Events of different
studies may be published out of id order, when a transaction with a smaller id commits
later.

One relay at a time. On PostgreSQL a relay runs each batch in a transaction that first
takes the advisory lock :data:`RELAY_LOCK_KEY` with ``pg_try_advisory_xact_lock``. The
relays of other replicas skip that round and try again at their next poll. On SQLite a
batch is claimed in one write transaction and marked in a second one. It is published
in between with no lock held, because a slow or unreachable broker would otherwise keep
the write lock and stop ingest. One process should run the relay there.

Each event gets its ``sequence`` when a relay first claims it: consecutive numbers in
publication order across all studies, which the REST change feed pages by.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from noctis_common.db import Database
from noctis_common.db.models import OutboxEvent
from noctis_common.failure_log import RepeatedFailureLog
from noctis_common.metrics import OUTBOX_EVENTS_PUBLISHED, OUTBOX_PUBLISH_ERRORS
from noctis_common.tracing import (
    IN_PROCESS_MESSAGING_SYSTEM,
    consumer_span,
    current_traceparent,
    mark_current_span_failed,
    messaging_attributes,
    producer_span,
)

logger = logging.getLogger(__name__)

INSTANCE_STORED = "instance.stored"
RELAY_BATCH_SIZE = 500
# Key of the PostgreSQL advisory lock that one relay holds while it publishes a batch:
# the first 8 bytes of "noctis-outbox-relay" read as a signed big-endian integer.
RELAY_LOCK_KEY = int.from_bytes(b"noctis-o", "big", signed=True)


@dataclass(frozen=True)
class Event:
    """One published event."""

    id: int
    type: str
    study_instance_uid: str
    payload: dict[str, Any]
    created_at: datetime
    # Publication order across all studies, given by the relay; None before.
    sequence: int | None = None
    # W3C trace context of the transaction that wrote the event, when it was traced.
    traceparent: str | None = None


def add_event(
    session: Session, event_type: str, study_instance_uid: str, payload: dict[str, Any]
) -> None:
    """Add an event to the outbox within the caller's transaction.

    The caller must hold the lock on the study row (see the module docstring), so that
    one study's events are numbered in commit order.
    """
    session.add(
        OutboxEvent(
            event_type=event_type,
            study_instance_uid=study_instance_uid,
            payload_json=json.dumps(payload, separators=(",", ":")),
            traceparent=current_traceparent(),
        )
    )


OUTBOX_EVENT: Table = OutboxEvent.__table__  # type: ignore[assignment]
_INSERT_EVENT = insert(OutboxEvent)


def add_event_row(
    connection: Connection, event_type: str, study_instance_uid: str, payload: dict[str, Any]
) -> None:
    """Insert an event into the outbox within the transaction of ``connection``.

    The Core counterpart of :func:`add_event`, for the store path, which writes its
    index rows with Core statements. The same locking rule applies.
    """
    connection.execute(
        _INSERT_EVENT,
        {
            "event_type": event_type,
            "study_instance_uid": study_instance_uid,
            "payload_json": json.dumps(payload, separators=(",", ":")),
            "traceparent": current_traceparent(),
        },
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

    Each event is published in a ``publish <type>`` span whose parent is the event's
    ``traceparent``, and each subscriber handles it in a ``process <type>`` span below
    that, so both join the trace of the request that stored the instance. The event
    type is the destination here, and ``messaging.system`` is
    :data:`~noctis_common.tracing.IN_PROCESS_MESSAGING_SYSTEM`; the Kafka publisher and
    consumer name their spans and attributes the same way, after the topic.
    """

    subscribers: list[Subscriber] = field(default_factory=list)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            with producer_span(
                f"publish {event.type}", event.traceparent, _span_attributes("publish", event)
            ) as headers:
                for subscriber in self.subscribers:
                    self._deliver(subscriber, event, headers)

    @staticmethod
    def _deliver(subscriber: Subscriber, event: Event, headers: dict[str, str]) -> None:
        attributes = _span_attributes("process", event)
        with consumer_span(f"process {event.type}", headers, attributes):
            try:
                subscriber(event)
            except Exception as error:
                logger.exception(
                    "event subscriber %r failed on event %d (%s)",
                    subscriber,
                    event.id,
                    event.type,
                )
                mark_current_span_failed(f"{type(error).__name__}: {error}")


def _span_attributes(operation: Literal["publish", "process"], event: Event) -> dict[str, str]:
    """Return the messaging attributes of an in-process ``publish`` or ``process`` span."""
    # event_envelope imports this module, so it is imported here, when first needed.
    from noctis_common.event_envelope import cloudevent_type  # noqa: PLC0415

    return messaging_attributes(
        operation,
        system=IN_PROCESS_MESSAGING_SYSTEM,
        destination=event.type,
        message_id=str(event.id),
        event_type=cloudevent_type(event.type),
    )


@dataclass
class PublisherChain:
    """Hands each batch to several publishers in turn.

    The first publisher that raises ends the call, so the batch stays unpublished and
    the relay retries it, starting again with the first publisher.
    """

    publishers: Sequence[EventPublisher]

    def publish(self, events: Sequence[Event]) -> None:
        for publisher in self.publishers:
            publisher.publish(events)


class OutboxRelay:
    """Publishes outbox rows in a background thread.

    The thread wakes when :meth:`notify` is called after a commit, or every
    ``poll_interval_s`` seconds to pick up rows written by other processes. After a
    failed batch it waits ``poll_interval_s`` and doubles the wait after each further
    failure, up to ``retry_max_s``, while the rows wait in the outbox.

    After a :meth:`notify`, the thread waits ``batch_delay_s`` more before it publishes,
    so that the events of stores committed meanwhile go out in the same batch. Each
    batch costs two write transactions on SQLite, which queue behind the stores'
    commits for the index's single write lock.
    """

    def __init__(
        self,
        database: Database,
        publisher: EventPublisher,
        poll_interval_s: float = 1.0,
        retry_max_s: float = 60.0,
        batch_delay_s: float = 0.0,
    ) -> None:
        self.batch_delay_s = batch_delay_s
        self.database = database
        self.publisher = publisher
        self.poll_interval_s = poll_interval_s
        self.retry_max_s = max(retry_max_s, poll_interval_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure_log = RepeatedFailureLog(logger, "publishing outbox events")

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
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
        failures = 0
        while not self._stop.is_set():
            try:
                while self.relay_once() == RELAY_BATCH_SIZE and not self._stop.is_set():
                    pass
            except Exception as error:
                failures += 1
                OUTBOX_PUBLISH_ERRORS.inc()
                delay_s = min(self.retry_max_s, self.poll_interval_s * 2 ** (failures - 1))
                self.failure_log.failed(error, retry_in_s=delay_s)
                # New events must not cut the backoff short, so only stop() ends it.
                self._stop.wait(delay_s)
                continue
            failures = 0
            self.failure_log.succeeded()
            notified = self._wake.wait(self.poll_interval_s)
            self._wake.clear()
            if notified and self.batch_delay_s > 0:
                self._stop.wait(self.batch_delay_s)
        logger.info("outbox relay stopped")

    def relay_once(self) -> int:
        """Publish one batch of unpublished events; return how many were published.

        Returns 0 when there is nothing to publish or, on PostgreSQL, when another
        relay holds the lock. Raises what the publisher or the database raised; the
        batch then stays unpublished.
        """
        if self.database.is_sqlite:
            published = self._relay_claimed_batch()
        else:
            published = self._relay_locked_batch()
        if published:
            OUTBOX_EVENTS_PUBLISHED.inc(published)
        return published

    def _relay_locked_batch(self) -> int:
        with self.database.write_session() as session:
            if not session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))):
                session.rollback()
                return 0
            events = claim_batch(session)
            if not events:
                session.rollback()
                return 0
            self.publisher.publish(events)
            mark_published(session, events)
            session.commit()
        return len(events)

    def _relay_claimed_batch(self) -> int:
        # SQLite: queue with this process's stores on its writer lock rather than in
        # SQLite's busy handler (see Database.write_transaction).
        lock = self.database.sqlite_writer_lock
        with lock, self.database.write_session() as session:
            events = claim_batch(session)
            session.commit()
        if not events:
            return 0
        self.publisher.publish(events)
        with lock, self.database.write_session() as session:
            mark_published(session, events)
            session.commit()
        return len(events)


def claim_batch(session: Session, limit: int = RELAY_BATCH_SIZE) -> list[Event]:
    """Load the next unpublished events and give a sequence number to those without one.

    Events claimed earlier and not yet marked published come first, in sequence order,
    then unclaimed events in id order. The caller must be the only relay at work (see
    the module docstring) and commit ``session`` to keep the numbers.
    """
    # Plain rows, not ORM objects: the relay runs for every few stored instances.
    table = OUTBOX_EVENT.c
    unpublished = select(
        table.id,
        table.event_type,
        table.study_instance_uid,
        table.payload_json,
        table.created_at,
        table.sequence,
        table.traceparent,
    ).where(table.published_at.is_(None))
    rows = list(
        session.execute(
            unpublished.where(table.sequence.is_not(None)).order_by(table.sequence).limit(limit)
        )
    )
    if len(rows) < limit:
        rows += session.execute(
            unpublished.where(table.sequence.is_(None)).order_by(table.id).limit(limit - len(rows))
        )
    sequences = {row.id: row.sequence for row in rows}
    unclaimed = [row.id for row in rows if row.sequence is None]
    if unclaimed:
        last_sequence = session.scalar(select(func.max(table.sequence))) or 0
        for offset, event_id in enumerate(unclaimed, start=1):
            sequences[event_id] = last_sequence + offset
        session.execute(
            update(OUTBOX_EVENT).where(table.id == bindparam("b_id")),
            [{"b_id": event_id, "sequence": sequences[event_id]} for event_id in unclaimed],
        )
    return [
        Event(
            id=row.id,
            type=row.event_type,
            study_instance_uid=row.study_instance_uid,
            payload=json.loads(row.payload_json),
            created_at=row.created_at,
            sequence=sequences[row.id],
            traceparent=row.traceparent,
        )
        for row in rows
    ]


def mark_published(session: Session, events: Sequence[Event]) -> None:
    """Mark ``events`` published within ``session``; rows marked already keep their time."""
    session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.id.in_([event.id for event in events]),
            OutboxEvent.published_at.is_(None),
        )
        .values(published_at=datetime.now(UTC))
    )
