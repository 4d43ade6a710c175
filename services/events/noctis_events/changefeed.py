"""The change feed: published events paged by their publication sequence.

An event gets its ``sequence`` from the outbox relay when the relay first claims it.
One relay at a time numbers events (see :mod:`noctis_common.events`), so the numbers
grow in publication order and each batch commits before the next is numbered. The
published sequences a reader sees are therefore always a gapless prefix, and a client
that passes each page's ``next_offset`` as the next ``offset`` reads every event once,
in publication order. Paging by the row id would skip an event whose transaction took
a smaller id but committed after a larger one had been read.

The feed lists only events marked published, which are the events the relay has handed
to the broker (or, without Kafka, to the in-process subscribers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from noctis_common.db import Database
from noctis_common.db.models import OutboxEvent
from noctis_common.event_envelope import EVENT_SCHEMA_VERSIONS, to_cloudevent
from noctis_common.events import Event

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PARAMETERS = ("offset", "limit", "since", "until", "type")


class ChangeFeedRequestError(ValueError):
    """A query parameter of a change feed request is invalid; the message names it."""


@dataclass(frozen=True)
class ChangeFeedRequest:
    """The parameters of one change feed request.

    ``offset`` is the sequence number of the first event to return. ``since`` (inclusive)
    and ``until`` (exclusive) bound the time the event was written, in UTC.
    ``event_types`` empty means every type.
    """

    offset: int = 0
    limit: int = DEFAULT_LIMIT
    since: datetime | None = None
    until: datetime | None = None
    event_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeFeedPage:
    """One page of events, as CloudEvents, and the offset of the next request."""

    events: list[dict[str, Any]]
    next_offset: int


def parse_changefeed_request(parameters: Sequence[tuple[str, str]]) -> ChangeFeedRequest:
    """Parse the query parameters of ``GET /changefeed``.

    Raises :class:`ChangeFeedRequestError` for an unknown or repeated parameter and for
    a value out of range or not in its format.
    """
    values: dict[str, str] = {}
    for name, value in parameters:
        if name not in PARAMETERS:
            raise ChangeFeedRequestError(
                f"unknown query parameter {name!r}; the change feed accepts {', '.join(PARAMETERS)}"
            )
        if name in values:
            raise ChangeFeedRequestError(
                f"query parameter {name!r} is repeated; give it once"
                + (" with comma-separated types" if name == "type" else "")
            )
        values[name] = value

    offset = _integer(values, "offset", 0, minimum=0)
    limit = _integer(values, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    since = _timestamp(values, "since")
    until = _timestamp(values, "until")
    if since is not None and until is not None and since >= until:
        raise ChangeFeedRequestError(
            f"since ({values['since']}) must be earlier than until ({values['until']})"
        )
    return ChangeFeedRequest(
        offset=offset,
        limit=limit,
        since=since,
        until=until,
        event_types=_event_types(values.get("type")),
    )


def _integer(
    values: dict[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    text = values.get(name)
    if text is None:
        return default
    accepted = f"an integer from {minimum}" + (f" to {maximum}" if maximum is not None else "")
    try:
        number = int(text)
    except ValueError:
        raise ChangeFeedRequestError(
            f"{name}={text!r} is not an integer; give {accepted}"
        ) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise ChangeFeedRequestError(f"{name}={number} is out of range; give {accepted}")
    return number


def _timestamp(values: dict[str, str], name: str) -> datetime | None:
    """Parse an ISO 8601 time. A time without a UTC offset is taken as UTC."""
    text = values.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ChangeFeedRequestError(
            f"{name}={text!r} is not an ISO 8601 date and time; give for example "
            "2026-12-05T08:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _event_types(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    event_types = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [event_type for event_type in event_types if event_type not in EVENT_SCHEMA_VERSIONS]
    if unknown or not event_types:
        raise ChangeFeedRequestError(
            f"type={text!r} names no known event type; give one or more of "
            f"{', '.join(sorted(EVENT_SCHEMA_VERSIONS))}, separated by commas"
        )
    return event_types


def read_changefeed(database: Database, request: ChangeFeedRequest, source: str) -> ChangeFeedPage:
    """Return the published events at or after ``request.offset`` that match its filters.

    A full page continues after its last event. A shorter page has read every event
    published so far, so its ``next_offset`` follows the highest published sequence,
    and the next request skips the events that the filters left out.
    """
    with database.read_session() as session:
        # The latest sequence first: events up to it are all committed, so the query
        # below cannot miss one that commits while it runs.
        highest = session.scalar(
            select(func.max(OutboxEvent.sequence)).where(OutboxEvent.published_at.is_not(None))
        )
        if highest is None or highest < request.offset:
            return ChangeFeedPage(events=[], next_offset=request.offset)
        query = (
            select(OutboxEvent)
            .where(
                OutboxEvent.sequence >= request.offset,
                OutboxEvent.sequence <= highest,
                OutboxEvent.published_at.is_not(None),
            )
            .order_by(OutboxEvent.sequence)
            .limit(request.limit)
        )
        if request.event_types:
            query = query.where(OutboxEvent.event_type.in_(request.event_types))
        # Both times are in UTC, the zone of the stored times. SQLite compares them as
        # text without the offset.
        if request.since is not None:
            query = query.where(OutboxEvent.created_at >= request.since)
        if request.until is not None:
            query = query.where(OutboxEvent.created_at < request.until)
        rows = session.scalars(query).all()
        events = [to_cloudevent(_event(row), source) for row in rows]
    if len(rows) == request.limit:
        last_sequence = rows[-1].sequence
        assert last_sequence is not None  # the query selects numbered rows only
        return ChangeFeedPage(events=events, next_offset=last_sequence + 1)
    return ChangeFeedPage(events=events, next_offset=highest + 1)


def _event(row: OutboxEvent) -> Event:
    return Event(
        id=row.id,
        type=row.event_type,
        study_instance_uid=row.study_instance_uid,
        payload=json.loads(row.payload_json),
        created_at=row.created_at,
        sequence=row.sequence,
        traceparent=row.traceparent,
    )
