"""The event consumer framework: one Kafka consumer group per service, handling CloudEvents.

A service (AI, reports, ...) builds an :class:`EventConsumer` with a :class:`ConsumerConfig`
and a handler, and calls :meth:`EventConsumer.run`. For each record, in partition order:

1. The value is parsed as a structured-mode CloudEvent. A record that is not one goes
   to the dead-letter topic at once.
2. Deduplication: when the ``processed_event`` table already lists the event's
   ``source`` and ``id`` for this consumer group, the record is skipped.
3. The handler runs with a write session of the index. The framework adds the
   ``processed_event`` row to that session and commits it, so the handler's own
   database writes and the row commit together or not at all. The session begins its
   transaction on first use. On SQLite that takes the index's write lock until the
   commit, so a handler should do slow work (HTTP calls, inference) before it touches
   the session.
4. A handler that raises, or an index error in steps 2 and 3, is retried after
   ``retry_initial_s``, doubling up to ``retry_max_s``. After ``max_attempts`` attempts,
   or at once when the handler raises :class:`PermanentEventError`, the record goes to
   the dead-letter topic.
5. The record's offset is committed after the handler's commit or the dead-letter write,
   so a crash in between delivers the record again and step 2 skips it.

Effects outside the index (an HTTP call, a STOW-RS request) happen at least once: a crash
after them and before the commit repeats them, so they must be idempotent too.

Dead-letter records (topic ``<group_id>.dead-letter`` unless configured) keep the key,
value and headers of the original and add the headers in :data:`DEAD_LETTER_HEADERS`.

:meth:`EventConsumer.stop` (which SIGTERM and SIGINT call after
:meth:`EventConsumer.install_signal_handlers`) lets the handler finish the record in
hand, commits it, and closes the consumer, which leaves the group so its partitions
move to the other members at once. A stop during the wait between two attempts ends
the wait, and the record, not committed, goes to the next owner of its partition.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, cast

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from noctis_common.consumer_records import (
    DEAD_LETTER_HEADERS,
    InvalidEventError,
    PermanentEventError,
    ReceivedEvent,
    dead_letter_headers,
    parse_cloudevent,
)
from noctis_common.db import Database
from noctis_common.db.models import ProcessedEvent
from noctis_common.kafka_client import kafka_connection_options
from noctis_common.metrics import (
    CONSUMER_EVENTS,
    CONSUMER_HANDLE_DURATION,
    CONSUMER_HANDLER_ERRORS,
    CONSUMER_LAG,
)
from noctis_common.settings import Settings
from noctis_common.tracing import KAFKA_MESSAGING_SYSTEM, consumer_span, messaging_attributes

logger = logging.getLogger(__name__)

__all__ = [
    "DEAD_LETTER_HEADERS",
    "ConsumerConfig",
    "EventConsumer",
    "EventHandler",
    "InvalidEventError",
    "PermanentEventError",
    "ReceivedEvent",
    "parse_cloudevent",
]

POLL_TIMEOUT_MS = 500
PRUNE_INTERVAL_S = 3600.0
LAG_INTERVAL_S = 1.0
LAG_REQUEST_TIMEOUT_MS = 2000
# Time allowed for the handler attempts of one record, on top of the waits between them,
# before the group coordinator counts the consumer as stuck (max.poll.interval.ms).
HANDLER_TIME_BUDGET_S = 300.0


EventHandler = Callable[[ReceivedEvent, Session], None]


@dataclass(frozen=True)
class ConsumerConfig:
    """The topics, retries and group settings of one service's consumer."""

    group_id: str
    topics: Sequence[str]
    # Default: "<group_id>.dead-letter".
    dead_letter_topic: str | None = None
    max_attempts: int = 5
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0
    session_timeout_ms: int = 10_000
    # processed_event rows of this group older than this are deleted. Keep it longer
    # than any redelivery can lag: relay retries during a broker outage, offset resets.
    dedupe_retention_s: float = 7 * 24 * 3600.0
    # Where a group without committed offsets starts: "earliest" or "latest".
    auto_offset_reset: str = "earliest"

    @classmethod
    def from_settings(
        cls, settings: Settings, group_id: str, topics: Sequence[str] | None = None
    ) -> ConsumerConfig:
        """Build the configuration of ``group_id`` from ``NOCTIS_KAFKA_*`` settings.

        ``topics`` defaults to the event topic, ``NOCTIS_KAFKA_TOPIC``.
        """
        return cls(
            group_id=group_id,
            topics=list(topics) if topics is not None else [settings.kafka_topic],
            max_attempts=settings.kafka_consumer_max_attempts,
            retry_initial_s=settings.kafka_consumer_retry_initial_s,
            retry_max_s=settings.kafka_consumer_retry_max_s,
            session_timeout_ms=settings.kafka_consumer_session_timeout_ms,
        )

    @property
    def resolved_dead_letter_topic(self) -> str:
        return self.dead_letter_topic or f"{self.group_id}.dead-letter"

    def retry_delay_s(self, failed_attempts: int) -> float:
        """Return the wait after ``failed_attempts`` failed attempts of one record."""
        return float(min(self.retry_max_s, self.retry_initial_s * 2 ** (failed_attempts - 1)))

    @property
    def max_poll_interval_ms(self) -> int:
        """Return the longest handling of one record, waits between attempts included."""
        waits_s = sum(self.retry_delay_s(n) for n in range(1, self.max_attempts))
        return int((waits_s + HANDLER_TIME_BUDGET_S) * 1000)


class EventConsumer:
    """Runs one consumer group member: poll, deduplicate, handle, commit (see the module)."""

    def __init__(
        self,
        config: ConsumerConfig,
        handler: EventHandler,
        database: Database,
        connection_options: Mapping[str, Any],
    ) -> None:
        self.config = config
        self.handler = handler
        self.database = database
        self.connection_options = dict(connection_options)
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._last_prune = 0.0
        self._last_end_offsets_request = -LAG_INTERVAL_S

    @classmethod
    def from_settings(
        cls, settings: Settings, config: ConsumerConfig, handler: EventHandler, database: Database
    ) -> EventConsumer:
        return cls(config, handler, database, kafka_connection_options(settings))

    # -- life cycle ----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT call :meth:`stop`; call it from the main thread."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            logger.info(
                "consumer group %s: %s received", self.config.group_id, signal.strsignal(signum)
            )
            self.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the record in hand; safe from any thread."""
        self._stop.set()

    def run(self) -> None:
        """Consume until :meth:`stop`; then leave the group and return."""
        consumer = self._join_group()
        if consumer is None:
            return
        logger.info(
            "consumer group %s reading %s", self.config.group_id, ", ".join(self.config.topics)
        )
        try:
            while not self._stop.is_set():
                self._prune_if_due()
                batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=1)
                self._update_lag(consumer)
                for records in batches.values():
                    for record in records:
                        if not self._consume(consumer, record):
                            break
        finally:
            consumer.close(autocommit=False)
            self._consumer = None
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None
            logger.info("consumer group %s: left the group and stopped", self.config.group_id)

    def _join_group(self) -> KafkaConsumer | None:
        """Connect the consumer, retrying with backoff while the brokers are unreachable."""
        failures = 0
        while not self._stop.is_set():
            try:
                self._consumer = KafkaConsumer(
                    *self.config.topics,
                    **self.connection_options,
                    group_id=self.config.group_id,
                    enable_auto_commit=False,
                    auto_offset_reset=self.config.auto_offset_reset,
                    session_timeout_ms=self.config.session_timeout_ms,
                    heartbeat_interval_ms=max(100, self.config.session_timeout_ms // 3),
                    max_poll_interval_ms=self.config.max_poll_interval_ms,
                )
                return self._consumer
            except KafkaError as error:
                failures += 1
                delay_s = self.config.retry_delay_s(failures)
                logger.warning(
                    "consumer group %s could not reach the brokers (%s); retrying in %.1f s",
                    self.config.group_id,
                    error,
                    delay_s,
                )
                self._stop.wait(delay_s)
        return None

    # -- one record ----------------------------------------------------------------------

    def _consume(self, consumer: KafkaConsumer, record: Any) -> bool:
        """Handle one record and commit its offset; return False when it was not finished."""
        started = time.monotonic()
        outcome = self._process(record)
        if outcome is None:
            return False
        partition = TopicPartition(record.topic, record.partition)
        try:
            consumer.commit({partition: OffsetAndMetadata(record.offset + 1, "", -1)})
        except CommitFailedError as error:
            # The group rebalanced: the partition's new owner reads the record again and
            # finds it in processed_event.
            logger.warning(
                "consumer group %s: committing offset %d of %s[%d] failed (%s); the "
                "partition's next owner skips it as a duplicate",
                self.config.group_id,
                record.offset,
                record.topic,
                record.partition,
                error,
            )
            return False
        CONSUMER_EVENTS.labels(self.config.group_id, outcome).inc()
        CONSUMER_HANDLE_DURATION.labels(self.config.group_id).observe(time.monotonic() - started)
        logger.info(
            "consumer group %s: %s[%d]@%d %s",
            self.config.group_id,
            record.topic,
            record.partition,
            record.offset,
            outcome.replace("_", " "),
        )
        return True

    def _process(self, record: Any) -> str | None:
        """Return the outcome: handled, duplicate or dead_lettered; None when stopped."""
        try:
            event = parse_cloudevent(record)
        except InvalidEventError as error:
            logger.warning(
                "consumer group %s: %s[%d]@%d is not a CloudEvent (%s); dead-lettering it",
                self.config.group_id,
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            return "dead_lettered" if self._dead_letter(record, error, 0) else None

        attributes = {
            **messaging_attributes(
                "process",
                system=KAFKA_MESSAGING_SYSTEM,
                destination=record.topic,
                message_id=event.id,
                event_type=event.type,
            ),
            "messaging.consumer.group.name": self.config.group_id,
        }
        with consumer_span(f"process {record.topic}", event.headers, attributes):
            attempts = 0
            while True:
                attempts += 1
                try:
                    if self._is_processed(event):
                        return "duplicate"
                    return self._handle(event)
                except Exception as error:
                    CONSUMER_HANDLER_ERRORS.labels(self.config.group_id).inc()
                    permanent = isinstance(error, PermanentEventError)
                    if permanent or attempts >= self.config.max_attempts:
                        logger.error(
                            "consumer group %s: event %s (%s) failed %d times, last with "
                            "%s: %s; dead-lettering it",
                            self.config.group_id,
                            event.id,
                            event.type,
                            attempts,
                            type(error).__name__,
                            error,
                        )
                        if not self._dead_letter(record, error, attempts):
                            return None
                        self._mark_processed(event, "dead-lettered")
                        return "dead_lettered"
                    delay_s = self.config.retry_delay_s(attempts)
                    logger.warning(
                        "consumer group %s: event %s (%s) failed (attempt %d of %d, %s: %s); "
                        "retrying in %.1f s",
                        self.config.group_id,
                        event.id,
                        event.type,
                        attempts,
                        self.config.max_attempts,
                        type(error).__name__,
                        error,
                        delay_s,
                    )
                    if self._stop.wait(delay_s):
                        return None

    def _is_processed(self, event: ReceivedEvent) -> bool:
        with self.database.read_session() as session:
            found = session.scalar(
                select(ProcessedEvent.id).where(
                    ProcessedEvent.consumer_group == self.config.group_id,
                    ProcessedEvent.event_source == event.source,
                    ProcessedEvent.event_id == event.id,
                )
            )
        return found is not None

    def _handle(self, event: ReceivedEvent) -> str:
        with self.database.write_session() as session:
            self.handler(event, session)
            session.add(self._processed_row(event, "handled"))
            try:
                session.commit()
            except IntegrityError:
                # Another member of the group handled it meanwhile (a rebalance). Its
                # commit is kept and this one's writes are rolled back.
                session.rollback()
                return "duplicate"
        return "handled"

    def _mark_processed(self, event: ReceivedEvent, outcome: str) -> None:
        try:
            with self.database.write_session() as session:
                session.add(self._processed_row(event, outcome))
                session.commit()
        except IntegrityError:
            pass  # another member of the group listed it first
        except SQLAlchemyError:
            # The record is committed all the same; a redelivery dead-letters it again.
            logger.exception(
                "consumer group %s: listing event %s as %s failed",
                self.config.group_id,
                event.id,
                outcome,
            )

    def _processed_row(self, event: ReceivedEvent, outcome: str) -> ProcessedEvent:
        return ProcessedEvent(
            consumer_group=self.config.group_id,
            event_source=event.source,
            event_id=event.id,
            outcome=outcome,
        )

    # -- dead letters --------------------------------------------------------------------

    def _dead_letter(self, record: Any, error: BaseException, attempts: int) -> bool:
        """Copy ``record`` to the dead-letter topic; retry until written or stopped.

        Returns whether the record was written.
        """
        failures = 0
        headers = dead_letter_headers(record, error, attempts, self.config.group_id)
        topic = self.config.resolved_dead_letter_topic
        while True:
            try:
                producer = self._dead_letter_producer()
                producer.send(topic, key=record.key, value=record.value, headers=headers).get(
                    timeout=30
                )
                return True
            except KafkaError as error_writing:
                failures += 1
                self._discard_producer()
                delay_s = self.config.retry_delay_s(failures)
                logger.error(
                    "consumer group %s: writing %s[%d]@%d to dead-letter topic %s failed "
                    "(%s); retrying in %.1f s",
                    self.config.group_id,
                    record.topic,
                    record.partition,
                    record.offset,
                    topic,
                    error_writing,
                    delay_s,
                )
                if self._stop.wait(delay_s):
                    return False

    def _dead_letter_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **self.connection_options, acks="all", enable_idempotence=True
            )
        return self._producer

    def _discard_producer(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=0)
            self._producer = None

    # -- housekeeping --------------------------------------------------------------------

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        """Set the lag gauge: records after the fetch position, summed per topic.

        The record in hand is not counted. The high watermarks come with the fetched
        records. For partitions not fetched from yet they are requested from the
        brokers, at most once per :data:`LAG_INTERVAL_S`. The gauge keeps its last value
        while such a request fails or waits for that interval.
        """
        assigned = list(consumer.assignment())
        highwaters = {partition: consumer.highwater(partition) for partition in assigned}
        unknown = [partition for partition, offset in highwaters.items() if offset is None]
        try:
            if unknown:
                now = time.monotonic()
                if now - self._last_end_offsets_request < LAG_INTERVAL_S:
                    return
                self._last_end_offsets_request = now
                highwaters.update(consumer.end_offsets(unknown, timeout_ms=LAG_REQUEST_TIMEOUT_MS))
            lag_by_topic: dict[str, int] = dict.fromkeys(self.config.topics, 0)
            for partition in assigned:
                position = consumer.position(partition, timeout_ms=LAG_REQUEST_TIMEOUT_MS)
                highwater = highwaters.get(partition)
                lag = max(0, highwater - position) if highwater is not None else 0
                lag_by_topic[partition.topic] = lag_by_topic.get(partition.topic, 0) + lag
        except KafkaError as error:
            logger.debug("consumer group %s: lag not measured: %s", self.config.group_id, error)
            return
        for topic, lag in lag_by_topic.items():
            CONSUMER_LAG.labels(self.config.group_id, topic).set(lag)

    def _prune_if_due(self) -> None:
        now = time.monotonic()
        if self._last_prune and now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        cutoff = datetime.now(UTC) - timedelta(seconds=self.config.dedupe_retention_s)
        try:
            with self.database.write_session() as session:
                result = session.execute(
                    delete(ProcessedEvent).where(
                        ProcessedEvent.consumer_group == self.config.group_id,
                        ProcessedEvent.processed_at < cutoff,
                    )
                )
                pruned = cast("CursorResult[Any]", result).rowcount
                session.commit()
        except Exception:
            logger.exception(
                "consumer group %s: deleting old processed_event rows failed; retrying in %.0f s",
                self.config.group_id,
                PRUNE_INTERVAL_S,
            )
            return
        if pruned:
            logger.info(
                "consumer group %s: deleted %d processed_event rows older than %s",
                self.config.group_id,
                pruned,
                cutoff.isoformat(),
            )
