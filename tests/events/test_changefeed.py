"""GET /dicom-web/changefeed: published events as CloudEvents, paged by sequence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from noctis_common.auth import Principal, current_principal
from noctis_common.context import ArchiveContext
from noctis_common.db.models import OutboxEvent
from noctis_common.event_envelope import to_cloudevent
from noctis_common.events import Event
from noctis_common.roles import Role, Scope
from noctis_common.study_complete import announce_complete_studies
from tests.support import make_dataset

FEED = "/dicom-web/changefeed"


def store(context: ArchiveContext, count: int, study_instance_uid: str | None = None) -> str:
    study_instance_uid = study_instance_uid or generate_uid()
    series_instance_uid = generate_uid()
    for number in range(1, count + 1):
        path = context.archive.new_spool_path()
        make_dataset(
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            instance_number=number,
        ).save_as(path, enforce_file_format=True)
        context.archive.store_part10(path)
    return study_instance_uid


def publish_all(context: ArchiveContext) -> None:
    while context.relay.relay_once():
        pass


def read_all(client: TestClient, **parameters: Any) -> list[dict[str, Any]]:
    """Follow next_offset from offset 0 until a page comes back empty."""
    events: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.get(FEED, params={**parameters, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return events
        events.extend(page["events"])
        offset = page["next_offset"]


def test_feed_pages_follow_sequence(context: ArchiveContext, feed_client: TestClient) -> None:
    store(context, 5)
    publish_all(context)

    first = feed_client.get(FEED, params={"limit": 2}).json()
    events = read_all(feed_client, limit=2)

    assert len(first["events"]) == 2
    assert first["next_offset"] == int(first["events"][-1]["sequence"]) + 1
    assert len(events) == 5
    sequences = [int(event["sequence"]) for event in events]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 5
    assert len({event["id"] for event in events}) == 5


def test_feed_sequence_grows_across_batches(
    context: ArchiveContext, feed_client: TestClient
) -> None:
    for _ in range(3):
        store(context, 2)
        publish_all(context)

    sequences = [int(event["sequence"]) for event in read_all(feed_client, limit=4)]

    assert sequences == list(range(sequences[0], sequences[0] + 6))


def test_feed_event_is_the_published_cloudevent(
    context: ArchiveContext, feed_client: TestClient
) -> None:
    published: list[Event] = []
    context.publisher.subscribe(published.append)
    study_instance_uid = store(context, 1)
    publish_all(context)

    [event] = feed_client.get(FEED).json()["events"]

    assert event == to_cloudevent(published[0], context.settings.events_source)
    assert event["specversion"] == "1.0"
    assert event["type"] == "noctis.instance.stored.v1"
    assert event["subject"] == study_instance_uid
    assert event["data"]["StudyInstanceUID"] == study_instance_uid


def test_unpublished_events_not_listed(context: ArchiveContext, feed_client: TestClient) -> None:
    store(context, 2)

    before = feed_client.get(FEED).json()
    publish_all(context)
    after = feed_client.get(FEED).json()

    assert before == {"events": [], "next_offset": 0}
    assert len(after["events"]) == 2


def test_offset_past_end_returns_empty_page(
    context: ArchiveContext, feed_client: TestClient
) -> None:
    store(context, 1)
    publish_all(context)

    page = feed_client.get(FEED, params={"offset": 1000}).json()

    assert page == {"events": [], "next_offset": 1000}


def test_type_filter_selects_study_complete(
    context: ArchiveContext, feed_client: TestClient
) -> None:
    study_instance_uid = store(context, 3)
    announce_complete_studies(
        context.database, 60.0, None, now=datetime.now(UTC) + timedelta(minutes=5)
    )
    publish_all(context)

    page = feed_client.get(FEED, params={"type": "study.complete"}).json()

    [event] = page["events"]
    assert event["type"] == "noctis.study.complete.v1"
    assert event["subject"] == study_instance_uid
    assert event["data"]["Revision"] == 1
    assert event["data"]["NumberOfStudyRelatedInstances"] == 3
    assert page["next_offset"] == int(event["sequence"]) + 1


def test_filtered_page_advances_past_skipped_events(
    context: ArchiveContext, feed_client: TestClient
) -> None:
    store(context, 3)
    publish_all(context)

    page = feed_client.get(FEED, params={"type": "study.complete,study.deleted"}).json()
    everything = feed_client.get(FEED).json()

    assert page["events"] == []
    assert page["next_offset"] == everything["next_offset"]
    assert page["next_offset"] == int(everything["events"][-1]["sequence"]) + 1


def test_time_window_selects_events(context: ArchiveContext, feed_client: TestClient) -> None:
    store(context, 3)
    publish_all(context)
    days = [datetime(2026, 1, day, 12, tzinfo=UTC) for day in (1, 2, 3)]
    with context.database.write_session() as session:
        ids = session.scalars(select(OutboxEvent.id).order_by(OutboxEvent.id)).all()
        for event_id, day in zip(ids, days, strict=True):
            session.execute(
                update(OutboxEvent).where(OutboxEvent.id == event_id).values(created_at=day)
            )
        session.commit()

    window = read_all(feed_client, since="2026-01-02T00:00:00Z", until="2026-01-03T12:00:00Z")
    since_only = read_all(feed_client, since="2026-01-02T12:00:00+00:00")
    until_only = read_all(feed_client, until="2026-01-02")

    assert [event["id"] for event in window] == [str(ids[1])]
    assert [event["id"] for event in since_only] == [str(ids[1]), str(ids[2])]
    assert [event["id"] for event in until_only] == [str(ids[0])]
    assert window[0]["time"] == "2026-01-02T12:00:00Z"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("offset=-1", "offset=-1 is out of range; give an integer from 0"),
        ("offset=first", "offset='first' is not an integer"),
        ("limit=0", "limit=0 is out of range; give an integer from 1 to 1000"),
        ("limit=1001", "limit=1001 is out of range; give an integer from 1 to 1000"),
        ("since=yesterday", "since='yesterday' is not an ISO 8601 date and time"),
        ("until=2026-13-01", "until='2026-13-01' is not an ISO 8601 date and time"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since (2026-01-02T00:00:00Z) must be earlier than until (2026-01-01T00:00:00Z)",
        ),
        ("type=study.finished", "type='study.finished' names no known event type"),
        ("type=", "type='' names no known event type"),
        ("offest=5", "unknown query parameter 'offest'"),
        ("offset=1&offset=2", "query parameter 'offset' is repeated"),
    ],
)
def test_invalid_parameter_rejected(
    sqlite_feed_client: TestClient, query: str, message: str
) -> None:
    response = sqlite_feed_client.get(f"{FEED}?{query}")

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_referring_physician_token_rejected(sqlite_feed_client: TestClient) -> None:
    restricted = Principal(
        subject="physician",
        username="physician",
        roles=frozenset({Role.REFERRING_PHYSICIAN.value}),
        scopes=frozenset({Scope.SEARCH, Scope.RETRIEVE}),
        client_address="127.0.0.1",
        referring_physician_name="Smith^John",
        restricted_to_referring_physician=True,
    )
    app = sqlite_feed_client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[current_principal] = lambda: restricted

    response = sqlite_feed_client.get(FEED)

    assert response.status_code == 403
    assert "limited to the studies of one referring physician" in response.json()["detail"]
