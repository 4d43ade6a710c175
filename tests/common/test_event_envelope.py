"""Published events are CloudEvents 1.0 whose data match the schemas in the repository."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from noctis_common.deletion import delete_instance, delete_series, delete_study
from noctis_common.event_envelope import (
    ENVELOPE_SCHEMA,
    EVENT_SCHEMA_VERSIONS,
    cloudevent_type,
    dataschema_id,
    format_sequence,
    load_event_schema,
    to_cloudevent,
)
from noctis_common.events import Event, claim_batch
from noctis_common.settings import Settings
from noctis_common.study_complete import announce_complete_studies
from tests.common.kafka_helpers import store_instance, validation_errors


@pytest.fixture
def sqlite_context(sqlite_settings: Settings) -> Iterator[ArchiveContext]:
    context = ArchiveContext.create(sqlite_settings)
    try:
        yield context
    finally:
        context.close()


@pytest.mark.parametrize("event_type", sorted(EVENT_SCHEMA_VERSIONS))
def test_every_event_type_has_schema(event_type: str) -> None:
    version = EVENT_SCHEMA_VERSIONS[event_type]
    schema = load_event_schema(event_type, version)

    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == dataschema_id(event_type, version)


def test_envelope_schema_is_valid() -> None:
    Draft202012Validator.check_schema(load_event_schema(ENVELOPE_SCHEMA, 1))


def test_every_written_event_matches_schema(sqlite_context: ArchiveContext) -> None:
    context = sqlite_context
    study = generate_uid()
    series = generate_uid()
    first = store_instance(context, study, series_instance_uid=series)
    store_instance(context, study, series_instance_uid=series, instance_number=2)
    other_series = generate_uid()
    store_instance(context, study, series_instance_uid=other_series, modality="MR")
    announce_complete_studies(context.database, 0.0, "https://pacs.example.org/dicom-web")
    delete_instance(context.database, context.store, study, series, first)
    delete_series(context.database, context.store, study, other_series)
    delete_study(context.database, context.store, study)

    with context.database.write_session() as session:
        events = claim_batch(session)
        session.commit()
    envelopes = [to_cloudevent(event, "/noctis-test") for event in events]

    assert [envelope["type"] for envelope in envelopes] == [
        "noctis.instance.stored.v1",
        "noctis.instance.stored.v1",
        "noctis.instance.stored.v1",
        "noctis.study.complete.v1",
        "noctis.instance.deleted.v1",
        "noctis.series.deleted.v1",
        "noctis.study.deleted.v1",
    ]
    for envelope in envelopes:
        assert validation_errors(envelope) == [], envelope


def test_envelope_carries_identity_and_order() -> None:
    event = Event(
        id=42,
        type="instance.stored",
        study_instance_uid="1.2.3",
        payload={"StudyInstanceUID": "1.2.3"},
        created_at=datetime(2026, 12, 5, 10, 0, 0, 123456),
        sequence=7,
    )

    envelope = to_cloudevent(event, "/noctis")

    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == "42"
    assert envelope["source"] == "/noctis"
    assert envelope["subject"] == "1.2.3"
    assert envelope["time"] == "2026-12-05T10:00:00.123456Z"
    assert envelope["sequence"] == "00000000000000000007"
    assert envelope["data"] == {"StudyInstanceUID": "1.2.3"}


def test_sequence_strings_sort_numerically() -> None:
    numbers = [1, 9, 10, 99, 100, 12345678901234]

    assert sorted(format_sequence(number) for number in numbers) == [
        format_sequence(number) for number in numbers
    ]


def test_unknown_event_type_is_sent_without_dataschema() -> None:
    event = Event(1, "report.signed", "1.2.3", {}, datetime.now(UTC), sequence=1)

    envelope = to_cloudevent(event, "/noctis")

    assert envelope["type"] == cloudevent_type("report.signed") == "noctis.report.signed.v1"
    assert "dataschema" not in envelope
