"""CloudEvents in Kafka records, as event consumers read them and dead-letter them.

:func:`parse_cloudevent` reads a record's value as a structured-mode CloudEvent, and
:func:`dead_letter_headers` builds the headers of the copy that goes to a dead-letter
topic. :mod:`noctis_common.consumer` uses both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from noctis_common.kafka_client import record_headers

# Headers added to a dead-letter record, each a UTF-8 string.
DEAD_LETTER_HEADERS = (
    "noctis-dead-letter-error",  # exception class and message of the last attempt
    "noctis-dead-letter-attempts",  # handler attempts made; 0 for a record not parsed
    "noctis-dead-letter-topic",  # where the record was read from
    "noctis-dead-letter-partition",
    "noctis-dead-letter-offset",
    "noctis-dead-letter-group",  # the consumer group that gave up
    "noctis-dead-letter-time",  # when, RFC 3339 in UTC
)
# Maximum length of a CloudEvent id or source: the processed_event column length.
MAX_IDENTITY_LENGTH = 255
MAX_ERROR_HEADER_LENGTH = 2000


class PermanentEventError(Exception):
    """Raised by a handler for an event that no retry can handle; it is dead-lettered."""


class InvalidEventError(ValueError):
    """A Kafka record whose value is not a structured-mode CloudEvent."""


@dataclass(frozen=True)
class ReceivedEvent:
    """A CloudEvent read from Kafka, with the record's place in its topic."""

    id: str
    source: str
    type: str
    subject: str | None
    data: Any
    # Every attribute of the envelope, extensions (such as ``sequence``) included.
    attributes: dict[str, Any]
    topic: str
    partition: int
    offset: int
    headers: dict[str, str]


def parse_cloudevent(record: Any) -> ReceivedEvent:
    """Read a Kafka record's value as a structured-mode CloudEvent (JSON format).

    Raises :class:`InvalidEventError` naming the first problem found.
    """
    try:
        envelope = json.loads(record.value)
    except (TypeError, ValueError) as error:
        raise InvalidEventError(f"the record value is not JSON: {error}") from error
    if not isinstance(envelope, dict):
        raise InvalidEventError("the record value is not a JSON object")
    if envelope.get("specversion") != "1.0":
        raise InvalidEventError(
            f"specversion is {envelope.get('specversion')!r}; only CloudEvents 1.0 is read"
        )
    for attribute in ("id", "source", "type"):
        value = envelope.get(attribute)
        if not isinstance(value, str) or not value:
            raise InvalidEventError(f"the CloudEvent has no {attribute} string")
        if attribute != "type" and len(value) > MAX_IDENTITY_LENGTH:
            raise InvalidEventError(
                f"the CloudEvent {attribute} is {len(value)} characters long; at most "
                f"{MAX_IDENTITY_LENGTH} are stored for deduplication"
            )
    subject = envelope.get("subject")
    return ReceivedEvent(
        id=envelope["id"],
        source=envelope["source"],
        type=envelope["type"],
        subject=subject if isinstance(subject, str) else None,
        data=envelope.get("data"),
        attributes=envelope,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        headers=record_headers(record.headers),
    )


def dead_letter_headers(
    record: Any, error: BaseException, attempts: int, group_id: str
) -> list[tuple[str, bytes]]:
    """Return the headers of ``record``'s dead-letter copy: its own plus the failure's.

    Headers of an earlier dead-lettering are replaced, so a record dead-lettered again
    after a replay carries only the latest failure.
    """
    headers = [
        (str(name), value or b"")
        for name, value in (record.headers or [])
        if str(name) not in DEAD_LETTER_HEADERS
    ]
    values = (
        f"{type(error).__name__}: {error}"[:MAX_ERROR_HEADER_LENGTH],
        str(attempts),
        record.topic,
        str(record.partition),
        str(record.offset),
        group_id,
        datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    headers += [
        (name, value.encode()) for name, value in zip(DEAD_LETTER_HEADERS, values, strict=True)
    ]
    return headers
