"""The Kafka publisher of the outbox relay: events as CloudEvents on one topic.

Each event becomes one Kafka record:

- value: the CloudEvent in structured content mode (:mod:`noctis_common.event_envelope`);
- key: the StudyInstanceUID, so the default partitioner puts every event of a study in
  one partition, where Kafka keeps their order;
- headers: ``content-type`` (``application/cloudevents+json; charset=UTF-8``, by which
  the CloudEvents Kafka protocol binding distinguishes structured from binary mode) and, when
  the event was traced, ``traceparent`` (W3C trace context) of the publication span,
  whose parent is the span that wrote the event.

The producer waits for all in-sync replicas (``acks=all``) and is idempotent, so the
broker drops the duplicates that the producer's own retries would add, and a partition
keeps the order of the records sent to it. A batch counts as published only when every
record was acknowledged. Otherwise :meth:`KafkaPublisher.publish` raises, the producer
is discarded and the relay sends the whole batch again later, so consumers can see an
event twice but never miss one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer

from noctis_common.event_envelope import (
    STRUCTURED_CONTENT_TYPE,
    cloudevent_type,
    encode_cloudevent,
)
from noctis_common.events import Event
from noctis_common.kafka_client import kafka_connection_options
from noctis_common.settings import Settings
from noctis_common.tracing import KAFKA_MESSAGING_SYSTEM, messaging_attributes, producer_span

logger = logging.getLogger(__name__)

# Maximum time kafka-python waits for one broker request, in milliseconds; it must stay
# below the delivery timeout, which is the publish timeout.
MAX_REQUEST_TIMEOUT_MS = 30_000
# Seconds close() waits for a batch in progress before it gives up closing.
CLOSE_LOCK_TIMEOUT_S = 1.0


class KafkaPublisher:
    """Publishes event batches to one Kafka topic; an :class:`EventPublisher`.

    The producer connects on the first batch, so an archive starts while the brokers
    are down. ``timeout_s`` bounds each stage of a batch: connecting, waiting for topic
    metadata and waiting for the acknowledgements.
    """

    def __init__(
        self,
        connection_options: dict[str, Any],
        topic: str,
        source: str,
        timeout_s: float = 30.0,
    ) -> None:
        self.connection_options = connection_options
        self.topic = topic
        self.source = source
        self.timeout_s = timeout_s
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaPublisher:
        return cls(
            kafka_connection_options(settings),
            settings.kafka_topic,
            settings.events_source,
            settings.kafka_publish_timeout_s,
        )

    def publish(self, events: Sequence[Event]) -> None:
        """Send ``events`` in order and wait until the brokers acknowledged all of them.

        Raises the kafka-python error of the first record that failed, or
        :class:`kafka.errors.KafkaTimeoutError` when the brokers did not respond within
        the timeout.
        """
        with self._lock:
            producer = self._connected_producer()
            try:
                futures = [self._send(producer, event) for event in events]
                producer.flush(timeout=self.timeout_s)
                for future in futures:
                    future.get(timeout=0)
            except Exception:
                # A producer that failed may hold records in unknown states; a new one
                # starts from a clean slate when the relay retries.
                self._discard_producer()
                raise
        logger.debug("published %d events to Kafka topic %s", len(events), self.topic)

    def close(self) -> None:
        """Close the producer after sending what it holds, waiting at most the timeout.

        While a batch is still being published (the relay did not stop in time), the
        close is skipped. Unless that batch finishes before the process exits, its
        events stay in the outbox for the next relay.
        """
        if not self._lock.acquire(timeout=CLOSE_LOCK_TIMEOUT_S):
            logger.warning(
                "closing the Kafka producer skipped: a batch for topic %s is still being published",
                self.topic,
            )
            return
        try:
            if self._producer is not None:
                self._producer.close(timeout=self.timeout_s)
                self._producer = None
        finally:
            self._lock.release()

    def _send(self, producer: KafkaProducer, event: Event) -> Any:
        attributes = messaging_attributes(
            "publish",
            system=KAFKA_MESSAGING_SYSTEM,
            destination=self.topic,
            message_id=str(event.id),
            event_type=cloudevent_type(event.type),
        )
        with producer_span(f"publish {self.topic}", event.traceparent, attributes) as trace:
            headers = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
            headers += [(name, value.encode()) for name, value in trace.items()]
            return producer.send(
                self.topic,
                key=event.study_instance_uid.encode(),
                value=encode_cloudevent(event, self.source),
                headers=headers,
            )

    def _connected_producer(self) -> KafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.timeout_s * 1000)
            self._producer = KafkaProducer(
                **self.connection_options,
                acks="all",
                enable_idempotence=True,
                # Connecting, topic metadata and delivery each give up after the timeout.
                bootstrap_timeout_ms=timeout_ms,
                max_block_ms=timeout_ms,
                delivery_timeout_ms=timeout_ms,
                request_timeout_ms=min(MAX_REQUEST_TIMEOUT_MS, max(1000, timeout_ms // 2)),
            )
            logger.info(
                "Kafka producer connected to %s for topic %s",
                ", ".join(self.connection_options.get("bootstrap_servers", [])),
                self.topic,
            )
        return self._producer

    def _discard_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:
                logger.exception("closing the failed Kafka producer failed")
            self._producer = None
