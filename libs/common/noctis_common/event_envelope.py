"""The CloudEvents 1.0 envelope of published events, and their versioned JSON schemas.

Noctis sends events in the JSON event format of CloudEvents 1.0, in structured content
mode: the whole envelope is the Kafka record value, and the REST change feed returns the
same objects. The envelope's attributes:

- ``id``: the outbox row id in decimal. With ``source`` it identifies the event, so
  consumers deduplicate on the pair.
- ``type``: ``noctis.<event type>.v<major schema version>``, for example
  ``noctis.instance.stored.v1``.
- ``subject``: the StudyInstanceUID, also the Kafka record key.
- ``dataschema``: the ``$id`` of the data's JSON schema, kept in ``event_schemas/``.
- ``sequence`` (the CloudEvents sequence extension): the relay's publication order,
  zero-padded so that string order is numeric order.

A schema version changes only for an incompatible change of the data. New optional
members keep the version, so consumers ignore members they do not know.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from noctis_common.events import Event

logger = logging.getLogger(__name__)

SPECVERSION = "1.0"
# Content type of a structured-mode CloudEvent (CloudEvents JSON event format, 1.0).
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
SEQUENCE_DIGITS = 20
ENVELOPE_SCHEMA = "cloudevent"

# The current major version of each event type's data schema. Every type here has the
# file event_schemas/<type>.v<version>.json, and a test checks each one.
EVENT_SCHEMA_VERSIONS: dict[str, int] = {
    "instance.stored": 1,
    "study.deleted": 1,
    "series.deleted": 1,
    "instance.deleted": 1,
    "study.complete": 1,
}

_unversioned_types_logged: set[str] = set()


def cloudevent_type(event_type: str) -> str:
    """Return the CloudEvents ``type`` of an outbox event type."""
    return f"noctis.{event_type}.v{EVENT_SCHEMA_VERSIONS.get(event_type, 1)}"


def dataschema_id(event_type: str, version: int) -> str:
    """Return the ``$id`` of a data schema, the envelope's ``dataschema``."""
    return f"urn:noctis:event-schema:{event_type}:v{version}"


def to_cloudevent(event: Event, source: str) -> dict[str, Any]:
    """Build the structured-mode CloudEvent of an outbox event.

    An event type without a schema version in :data:`EVENT_SCHEMA_VERSIONS` is still
    sent, as version 1 without ``dataschema``, and a warning is logged once per type:
    a missing schema must not stop the relay.
    """
    envelope: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": str(event.id),
        "source": source,
        "type": cloudevent_type(event.type),
        "subject": event.study_instance_uid,
        "time": _rfc3339(event.created_at),
        "datacontenttype": "application/json",
    }
    version = EVENT_SCHEMA_VERSIONS.get(event.type)
    if version is not None:
        envelope["dataschema"] = dataschema_id(event.type, version)
    elif event.type not in _unversioned_types_logged:
        _unversioned_types_logged.add(event.type)
        logger.warning(
            "event type %s has no schema in EVENT_SCHEMA_VERSIONS; sending it without dataschema",
            event.type,
        )
    if event.sequence is not None:
        envelope["sequence"] = format_sequence(event.sequence)
    envelope["data"] = event.payload
    return envelope


def encode_cloudevent(event: Event, source: str) -> bytes:
    """Serialise :func:`to_cloudevent` as compact UTF-8 JSON."""
    return json.dumps(to_cloudevent(event, source), separators=(",", ":")).encode()


def format_sequence(sequence: int) -> str:
    """Write a sequence number as the zero-padded string of the sequence extension."""
    return f"{sequence:0{SEQUENCE_DIGITS}d}"


def _rfc3339(moment: datetime) -> str:
    # SQLite returns naive datetimes; the index stores UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@cache
def load_event_schema(name: str, version: int) -> dict[str, Any]:
    """Load ``event_schemas/<name>.v<version>.json``.

    ``name`` is an event type, or ``cloudevent`` for the envelope. Raises
    :class:`FileNotFoundError` when the repository has no such schema.
    """
    schema_file = resources.files("noctis_common.event_schemas").joinpath(f"{name}.v{version}.json")
    schema: dict[str, Any] = json.loads(schema_file.read_text(encoding="utf-8"))
    return schema
