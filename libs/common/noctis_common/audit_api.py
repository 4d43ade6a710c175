"""The administrators' API of the audit trail: search and export. Needs the admin scope.

``GET /audit/records`` returns matching records as JSON, newest first, and
``GET /audit/export`` the same selection as DICOM audit messages (PS3.15 A.5, see
:mod:`noctis_common.audit_export`). Both take these query parameters, all optional:

- ``user``: the token subject, user name or calling AE title;
- ``patient_id``, ``study_instance_uid``: records concerning that patient or study;
- ``since``, ``until``: ISO 8601 date-times (UTC when they carry no offset), ``until``
  exclusive;
- ``outcome``: ``success``, ``failure`` or an EventOutcomeIndicator (0, 4, 8, 12);
- ``event_type``: query, retrieve, store, delete, login, logout, audit-read, admin,
  report-read, report-write, report-sign;
- ``limit`` (default 100, at most 1000; export at most 10000) and ``offset``.

An unknown or repeated parameter, and ``since`` not earlier than ``until``, get 400, so
that a misspelt filter never widens a search silently.

Each search and export is itself recorded as ``audit-read``. Before searching, the
records this process has journaled are flushed, so they are found at once; records of
other processes appear after their next flush.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import selectinload

from noctis_common.audit import AuditEventType, Outcome
from noctis_common.audit_export import audit_message_document, audit_messages_document
from noctis_common.audit_http import note_audit_details
from noctis_common.auth import require_scope
from noctis_common.context import ArchiveContext
from noctis_common.db import Database
from noctis_common.db.models import AuditObject, AuditRecord
from noctis_common.roles import Scope

router = APIRouter(
    prefix="/audit", tags=["Audit trail"], dependencies=[Depends(require_scope(Scope.ADMIN))]
)

DEFAULT_LIMIT = 100
MAX_SEARCH_LIMIT = 1000
MAX_EXPORT_LIMIT = 10_000
XML_MEDIA_TYPE = "application/xml"
# The largest value of a 64-bit signed integer column (SQLite INTEGER, PostgreSQL
# BIGINT): a larger offset or record id cannot be bound to a query.
MAX_INDEX_INTEGER = 2**63 - 1
Text = Annotated[str | None, Query()]
SEARCH_PARAMETERS = (
    "user",
    "patient_id",
    "study_instance_uid",
    "since",
    "until",
    "outcome",
    "event_type",
    "limit",
    "offset",
)


def _archive_context(request: Request) -> ArchiveContext:
    context: ArchiveContext = request.app.state.context
    return context


# noctis_common.web.Context, which web.py cannot lend this module: web.py imports it.
Context = Annotated[ArchiveContext, Depends(_archive_context)]


@dataclass(frozen=True)
class AuditSearch:
    """The filters of an audit trail search."""

    user: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcomes: tuple[int, ...] = ()
    event_type: str | None = None
    limit: int = 100
    offset: int = 0


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            400, f"invalid {name} {value!r}: give an ISO 8601 date-time, such as 2026-12-05T08:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def check_search_parameters(request: Request) -> None:
    """Raise 400 for a query parameter that is unknown or given more than once."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in SEARCH_PARAMETERS:
            raise HTTPException(
                400,
                f"unknown query parameter {name!r}; the audit API accepts "
                f"{', '.join(SEARCH_PARAMETERS)}",
            )
        if name in seen:
            raise HTTPException(400, f"query parameter {name!r} is repeated; give it once")
        seen.add(name)


def _parse_outcome(value: str | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if value == "success":
        return (Outcome.SUCCESS,)
    if value == "failure":
        return (Outcome.MINOR_FAILURE, Outcome.SERIOUS_FAILURE, Outcome.MAJOR_FAILURE)
    if _is_decimal(value) and int(value) in set(Outcome):
        return (int(value),)
    raise HTTPException(400, f"invalid outcome {value!r}: give success, failure, 0, 4, 8 or 12")


def _parse_event_type(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in {event_type.value for event_type in AuditEventType}:
        known = ", ".join(event_type.value for event_type in AuditEventType)
        raise HTTPException(400, f"invalid event_type {value!r}: give one of {known}")
    return value


def _parse_limit(value: str | None, maximum: int) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not _is_decimal(value) or not 1 <= int(value) <= maximum:
        raise HTTPException(400, f"invalid limit {value!r}: give an integer from 1 to {maximum}")
    return int(value)


def _parse_offset(value: str | None) -> int:
    if value is None:
        return 0
    if not _is_decimal(value) or int(value) > MAX_INDEX_INTEGER:
        raise HTTPException(
            400, f"invalid offset {value!r}: give an integer from 0 to {MAX_INDEX_INTEGER}"
        )
    return int(value)


def _is_decimal(value: str) -> bool:
    """Return whether ``value`` is ASCII digits only, since ``str.isdigit`` accepts ``²``."""
    return value.isascii() and value.isdigit()


def _has_object(object_type: str, object_id: str) -> Any:
    return AuditRecord.objects.any(
        (AuditObject.object_type == object_type) & (AuditObject.object_id == object_id)
    )


def search_statement(search: AuditSearch) -> Select[AuditRecord]:
    """Return the SELECT of the records that ``search`` matches, newest first."""
    statement = select(AuditRecord).options(selectinload(AuditRecord.objects))
    if search.user is not None:
        statement = statement.where(
            or_(
                AuditRecord.user_id == search.user,
                AuditRecord.user_name == search.user,
                AuditRecord.calling_ae_title == search.user,
            )
        )
    if search.patient_id is not None:
        statement = statement.where(_has_object("patient", search.patient_id))
    if search.study_instance_uid is not None:
        statement = statement.where(_has_object("study", search.study_instance_uid))
    if search.since is not None:
        statement = statement.where(AuditRecord.event_time >= search.since)
    if search.until is not None:
        statement = statement.where(AuditRecord.event_time < search.until)
    if search.outcomes:
        statement = statement.where(AuditRecord.outcome.in_(search.outcomes))
    if search.event_type is not None:
        statement = statement.where(AuditRecord.event_type == search.event_type)
    return (
        statement.order_by(AuditRecord.event_time.desc(), AuditRecord.id.desc())
        .offset(search.offset)
        .limit(search.limit)
    )


def search_audit_records(database: Database, search: AuditSearch) -> list[AuditRecord]:
    with database.read_session() as session:
        return list(session.scalars(search_statement(search)))


def record_document(record: AuditRecord) -> dict[str, Any]:
    """Return a record as the JSON object that the search returns."""
    event_time = record.event_time
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=UTC)
    return {
        "id": record.id,
        "record_uid": record.record_uid,
        "event_time": event_time.isoformat(),
        "event_type": record.event_type,
        "event_action": record.event_action,
        "outcome": record.outcome,
        "outcome_description": record.outcome_description,
        "user_id": record.user_id,
        "user_name": record.user_name,
        "user_roles": record.user_roles.split(),
        "calling_ae_title": record.calling_ae_title,
        "network_access_point": record.network_access_point,
        "session_id": record.session_id,
        "service": record.service,
        "request": record.request,
        "query": record.query,
        "number_of_instances": record.number_of_instances,
        "audit_source_id": record.audit_source_id,
        "study_instance_uids": [
            item.object_id for item in record.objects if item.object_type == "study"
        ],
        "patients": [
            {"patient_id": item.object_id, "patient_name": item.object_name}
            for item in record.objects
            if item.object_type == "patient"
        ],
    }


def _search_of_request(
    *,
    user: str | None,
    patient_id: str | None,
    study_instance_uid: str | None,
    since: str | None,
    until: str | None,
    outcome: str | None,
    event_type: str | None,
    limit: str | None,
    offset: str | None,
    max_limit: int,
) -> AuditSearch:
    since_time = _parse_time(since, "since")
    until_time = _parse_time(until, "until")
    if since_time is not None and until_time is not None and since_time >= until_time:
        raise HTTPException(400, f"since ({since}) must be earlier than until ({until})")
    return AuditSearch(
        user=user,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        since=since_time,
        until=until_time,
        outcomes=_parse_outcome(outcome),
        event_type=_parse_event_type(event_type),
        limit=_parse_limit(limit, max_limit),
        offset=_parse_offset(offset),
    )


def _flushed_search(request: Request, context: Context, search: AuditSearch) -> list[AuditRecord]:
    note_audit_details(request.state, event_type=AuditEventType.AUDIT_READ)
    if context.audit is not None:
        context.audit.flush()
    return search_audit_records(context.database, search)


@router.get("/records", summary="Search the audit trail")
def search_audit_trail(
    *,
    request: Request,
    context: Context,
    user: Text = None,
    patient_id: Text = None,
    study_instance_uid: Text = None,
    since: Text = None,
    until: Text = None,
    outcome: Text = None,
    event_type: Text = None,
    limit: Text = None,
    offset: Text = None,
) -> dict[str, Any]:
    """Return the audit records that match the filters, newest first."""
    check_search_parameters(request)
    search = _search_of_request(
        user=user,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        since=since,
        until=until,
        outcome=outcome,
        event_type=event_type,
        limit=limit,
        offset=offset,
        max_limit=MAX_SEARCH_LIMIT,
    )
    records = _flushed_search(request, context, search)
    return {"records": [record_document(record) for record in records]}


@router.get("/records/{record_id}/message", summary="One record as a DICOM audit message")
def export_audit_record(request: Request, context: Context, record_id: int) -> Response:
    """Return one record as a DICOM audit message document (PS3.15 A.5.1)."""
    note_audit_details(request.state, event_type=AuditEventType.AUDIT_READ)
    if not 0 <= record_id <= MAX_INDEX_INTEGER:
        raise HTTPException(404, f"audit record {record_id} not found")
    if context.audit is not None:
        context.audit.flush()
    with context.database.read_session() as session:
        record = session.scalar(
            select(AuditRecord)
            .options(selectinload(AuditRecord.objects))
            .where(AuditRecord.id == record_id)
        )
    if record is None:
        raise HTTPException(404, f"audit record {record_id} not found")
    return Response(audit_message_document(record), media_type=XML_MEDIA_TYPE)


@router.get("/export", summary="Export the audit trail as DICOM audit messages")
def export_audit_trail(
    *,
    request: Request,
    context: Context,
    user: Text = None,
    patient_id: Text = None,
    study_instance_uid: Text = None,
    since: Text = None,
    until: Text = None,
    outcome: Text = None,
    event_type: Text = None,
    limit: Text = None,
    offset: Text = None,
) -> Response:
    """Return the matching records as an AuditMessages document (PS3.15 A.5)."""
    check_search_parameters(request)
    search = _search_of_request(
        user=user,
        patient_id=patient_id,
        study_instance_uid=study_instance_uid,
        since=since,
        until=until,
        outcome=outcome,
        event_type=event_type,
        limit=limit,
        offset=offset,
        max_limit=MAX_EXPORT_LIMIT,
    )
    records = _flushed_search(request, context, search)
    return Response(
        audit_messages_document(records),
        media_type=XML_MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="audit-messages.xml"'},
    )
