"""The outbox relay publishes events to a real Kafka broker (Tansu) as CloudEvents."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError
from opentelemetry import trace
from prometheus_client import REGISTRY
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from noctis_common.context import ArchiveContext
from noctis_common.db.models import OutboxEvent
from noctis_common.event_envelope import STRUCTURED_CONTENT_TYPE
from noctis_common.events import RELAY_LOCK_KEY, OutboxRelay
from noctis_common.kafka_publisher import KafkaPublisher
from noctis_common.settings import Settings
from tests.common.kafka_helpers import (
    decode,
    read_topic,
    store_instance,
    validation_errors,
    wait_for,
)
from tests.common.spans import recording_spans
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.tansu import TansuBroker

TOPIC = "noctis-events"


def kafka_context(
    tmp_path: Path, broker: TansuBroker, database_url: str | None = None, **overrides: Any
) -> ArchiveContext:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        auth_mode="off",
        outbox_poll_interval_s=0.2,
        outbox_retry_max_s=1.0,
        **{**broker.noctis_settings(TOPIC), **overrides},
    )
    return ArchiveContext.create(settings)


def pending_events(context: ArchiveContext) -> int:
    with context.database.read_session() as session:
        count = session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        )
    return int(count or 0)


def outbox_ids(context: ArchiveContext) -> list[int]:
    with context.database.read_session() as session:
        return list(session.scalars(select(OutboxEvent.id).order_by(OutboxEvent.id)))


def ids_by_study(records: list[Any]) -> dict[str, list[int]]:
    """Group the event ids of ``records`` by study in topic order, first occurrences only."""
    seen: set[int] = set()
    by_study: dict[str, list[int]] = defaultdict(list)
    for record in records:
        envelope = decode(record)
        event_id = int(envelope["id"])
        if event_id not in seen:
            seen.add(event_id)
            by_study[envelope["subject"]].append(event_id)
    return by_study


@pytest.fixture
def context(tmp_path: Path, kafka_broker: TansuBroker) -> Iterator[ArchiveContext]:
    kafka_broker.create_topic(TOPIC, partitions=3)
    archive_context = kafka_context(tmp_path, kafka_broker)
    try:
        yield archive_context
    finally:
        archive_context.close()


def test_stored_events_reach_topic_as_cloudevents(
    context: ArchiveContext, kafka_broker: TansuBroker
) -> None:
    studies = [generate_uid() for _ in range(3)]
    for number in range(1, 4):
        for study in studies:
            store_instance(context, study, instance_number=number)

    assert context.relay.relay_once() == 9
    records = read_topic(kafka_broker.bootstrap_servers, TOPIC, expected=9)

    assert len(records) == 9
    for record in records:
        envelope = decode(record)
        assert validation_errors(envelope) == []
        assert record.key == envelope["subject"].encode()
        assert dict(record.headers)["content-type"] == STRUCTURED_CONTENT_TYPE.encode()
        assert envelope["source"] == "/noctis"
        assert envelope["type"] == "noctis.instance.stored.v1"


def test_one_study_stays_in_one_partition_in_order(
    context: ArchiveContext, kafka_broker: TansuBroker
) -> None:
    studies = [generate_uid() for _ in range(4)]
    for number in range(1, 6):
        for study in studies:
            store_instance(context, study, instance_number=number)
    context.relay.relay_once()

    records = read_topic(kafka_broker.bootstrap_servers, TOPIC, expected=20)
    partitions_by_study: dict[str, set[int]] = defaultdict(set)
    sequences_by_study: dict[str, list[int]] = defaultdict(list)
    for record in records:
        envelope = decode(record)
        partitions_by_study[envelope["subject"]].add(record.partition)
        sequences_by_study[envelope["subject"]].append(int(envelope["sequence"]))

    assert len(records) == 20
    for study in studies:
        assert len(partitions_by_study[study]) == 1
        assert sequences_by_study[study] == sorted(sequences_by_study[study])
    assert sorted(s for sequences in sequences_by_study.values() for s in sequences) == list(
        range(1, 21)
    )


def test_record_traceparent_joins_request_trace(
    context: ArchiveContext, kafka_broker: TansuBroker
) -> None:
    with recording_spans() as spans:
        with trace.get_tracer("tests").start_as_current_span("store request") as request:
            store_instance(context, generate_uid())
        context.relay.relay_once()
        publish = spans.one(f"publish {TOPIC}")

    records = read_topic(kafka_broker.bootstrap_servers, TOPIC, expected=1)
    traceparent = dict(records[0].headers)["traceparent"].decode()
    _version, trace_id, parent_id, _flags = traceparent.split("-")

    assert int(trace_id, 16) == request.get_span_context().trace_id
    assert publish.context is not None
    assert int(parent_id, 16) == publish.context.span_id


def test_ingest_continues_while_broker_down(tmp_path: Path, kafka_broker: TansuBroker) -> None:
    context = kafka_context(tmp_path, kafka_broker, kafka_publish_timeout_s=1.0)
    kafka_broker.stop()
    study = generate_uid()
    try:
        for number in range(1, 4):
            store_instance(context, study, instance_number=number)
        with pytest.raises(KafkaError):
            context.relay.relay_once()

        assert pending_events(context) == 3
    finally:
        context.close()


def test_relay_publishes_backlog_after_outage(tmp_path: Path, s3_server: SeaweedFS) -> None:
    """Events stored before, during and after a broker crash all reach the topic.

    The broker keeps its data in S3, so records published before its SIGKILL are still
    on the topic after the restart.
    """
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    errors_before = REGISTRY.get_sample_value("noctis_outbox_publish_errors_total") or 0.0
    with TansuBroker(f"s3://{bucket}/", s3_server.aws_environment()) as broker:
        broker.create_topic(TOPIC, partitions=3)
        context = kafka_context(tmp_path, broker)
        try:
            context.start()
            study = generate_uid()
            for number in range(1, 4):
                store_instance(context, study, instance_number=number)
            assert wait_for(lambda: pending_events(context) == 0)

            broker.kill()
            for number in range(4, 8):
                store_instance(context, study, instance_number=number)
            assert wait_for(
                lambda: (
                    (REGISTRY.get_sample_value("noctis_outbox_publish_errors_total") or 0.0)
                    > errors_before
                )
            )
            assert pending_events(context) == 4

            broker.start()
            assert wait_for(lambda: pending_events(context) == 0, timeout_s=60)
            store_instance(context, study, instance_number=8)
            assert wait_for(lambda: pending_events(context) == 0)
            records = read_topic(broker.bootstrap_servers, TOPIC, expected=8)
            expected_ids = outbox_ids(context)
        finally:
            context.close()

    assert ids_by_study(records)[study] == expected_ids


@pytest.mark.postgres
def test_two_relays_on_postgresql_keep_study_order(
    tmp_path: Path, kafka_broker: TansuBroker, postgres_url: str
) -> None:
    kafka_broker.create_topic(TOPIC, partitions=3)
    context = kafka_context(tmp_path, kafka_broker, database_url=postgres_url)
    second_publisher = KafkaPublisher.from_settings(context.settings)
    second_relay = OutboxRelay(context.database, second_publisher, 0.05, 0.5)
    context.relay.poll_interval_s = 0.05
    studies = [generate_uid() for _ in range(4)]
    failures: list[BaseException] = []

    def store_studies(numbers: range) -> None:
        try:
            for number in numbers:
                for study in studies:
                    store_instance(context, study, instance_number=number)
        except BaseException as error:
            failures.append(error)
            raise

    writers = [
        threading.Thread(target=store_studies, args=(range(start, start + 5),)) for start in (1, 6)
    ]
    try:
        context.relay.start()
        second_relay.start()
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=120)
        assert failures == []
        assert wait_for(lambda: pending_events(context) == 0, timeout_s=60)
        with context.database.read_session() as session:
            rows = session.execute(
                select(OutboxEvent.id, OutboxEvent.study_instance_uid, OutboxEvent.sequence)
            ).all()
    finally:
        second_relay.stop()
        second_publisher.close()
        context.close()
    records = read_topic(kafka_broker.bootstrap_servers, TOPIC, expected=len(rows))
    published = ids_by_study(records)

    assert len(rows) == 40
    assert sorted(row.sequence for row in rows) == list(range(1, 41))
    for study in studies:
        committed_order = sorted(row.id for row in rows if row.study_instance_uid == study)
        assert published[study] == committed_order


@pytest.mark.postgres
def test_relay_waits_while_other_relay_holds_lock(
    tmp_path: Path, kafka_broker: TansuBroker, postgres_url: str
) -> None:
    context = kafka_context(tmp_path, kafka_broker, database_url=postgres_url)
    try:
        store_instance(context, generate_uid())
        with context.database.write_session() as other_relay:
            other_relay.execute(select(func.pg_advisory_xact_lock(RELAY_LOCK_KEY)))

            assert context.relay.relay_once() == 0

        assert context.relay.relay_once() == 1
    finally:
        context.close()
