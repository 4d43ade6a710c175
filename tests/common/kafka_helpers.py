"""Helpers for the event tests: storing instances, reading a topic, checking CloudEvents."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from kafka import KafkaConsumer, TopicPartition

from noctis_common.context import ArchiveContext
from noctis_common.event_envelope import ENVELOPE_SCHEMA, load_event_schema
from tests.support import make_dataset


def store_instance(context: ArchiveContext, study_instance_uid: str, **attributes: Any) -> str:
    """Store one new instance of ``study_instance_uid``; return its SOPInstanceUID."""
    dataset = make_dataset(study_instance_uid=study_instance_uid, **attributes)
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)
    return str(dataset.SOPInstanceUID)


def read_topic(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 30
) -> list[Any]:
    """Read every record of ``topic`` from the start until ``expected`` have arrived.

    Reads without a consumer group, partition by partition. Returns the records sorted
    by partition and offset; fewer than ``expected`` when the timeout passed first.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, consumer_timeout_ms=500
    )
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                time.sleep(0.2)
        assignment = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assignment)
        consumer.seek_to_beginning(*assignment)
        records: list[Any] = []
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda record: (record.partition, record.offset))
    finally:
        consumer.close()


def validation_errors(envelope: dict[str, Any]) -> list[str]:
    """Return the schema violations of a CloudEvent: envelope first, then its data."""
    envelope_schema = load_event_schema(ENVELOPE_SCHEMA, 1)
    errors = [
        f"envelope: {error.message}"
        for error in Draft202012Validator(
            envelope_schema, format_checker=FormatChecker()
        ).iter_errors(envelope)
    ]
    dataschema = str(envelope.get("dataschema", ""))
    # urn:noctis:event-schema:<type>:v<version>
    _, _, name, version = dataschema.rsplit(":", 3)
    data_schema = load_event_schema(name, int(version.removeprefix("v")))
    errors += [
        f"data: {error.message}"
        for error in Draft202012Validator(data_schema).iter_errors(envelope.get("data"))
    ]
    return errors


def decode(record: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(record.value)
    return envelope


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll ``condition`` every 0.1 s until it is true or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()
