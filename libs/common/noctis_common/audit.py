"""The audit trail: who accessed which patient data, from where, when, with what outcome.

Every access is described by an :class:`AuditEvent` and handed to
:meth:`AuditTrail.record`, which appends it to a journal file and returns, for stores
and deletes once the file is synced to disk. A background thread moves journaled
events into the ``audit_record`` and ``audit_object`` tables every
``NOCTIS_AUDIT_FLUSH_INTERVAL_S`` seconds, so recording costs a request one small file
write, for stores and deletes a share of one sync, and no database transaction. The
journal is the durable queue: events that a crashed process left in it are inserted by
the next process that flushes the same journal folder (:mod:`noctis_common.audit_journal`),
and each event's ``record_uid`` keeps a replayed event from being inserted twice.

Who records what:

- HTTP routes: :class:`noctis_common.audit_http.AuditMiddleware`, one event per request
  to a route that needs a scope, refused requests included;
- DIMSE: the C-STORE, C-FIND, C-MOVE and C-GET handlers of the gateway;
- logins: the token service, through :meth:`AuditTrail.record_login`.

Patient IDs and names are kept in the records only, never in log lines. An event that
names studies but no patient gets the patient of each study from the index when it is
flushed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from noctis_common.audit_journal import AuditJournal, JournalSegment
from noctis_common.db import Database
from noctis_common.db.models import AuditObject, AuditRecord, Study
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

INSERT_BATCH_SIZE = 500
# File in the journal folder with the events that the index database rejected.
REJECTED_FILE = "rejected-audit-events.txt"
# Maximum characters of the query and of the outcome description that a record keeps,
# so that one request with a huge query string cannot add its size to the append-only
# trail.
MAX_QUERY_LENGTH = 4096
MAX_DESCRIPTION_LENGTH = 1024
# Minimum seconds between two log lines about the same kind of audit failure.
FAILURE_LOG_INTERVAL_S = 60.0


class AuditEventType(StrEnum):
    """The kind of access an audit record describes."""

    QUERY = "query"  # QIDO-RS, C-FIND
    RETRIEVE = "retrieve"  # WADO-RS, WADO-URI, C-MOVE, C-GET
    STORE = "store"  # STOW-RS, C-STORE
    DELETE = "delete"  # DELETE of a study, series or instance
    LOGIN = "login"
    LOGOUT = "logout"
    AUDIT_READ = "audit-read"  # search or export of the audit trail
    ADMIN = "admin"  # user, client and key administration
    REPORT_READ = "report-read"
    REPORT_WRITE = "report-write"
    REPORT_SIGN = "report-sign"


# Events that are on disk before the change they describe is acknowledged.
DURABLE_EVENT_TYPES = frozenset({AuditEventType.STORE, AuditEventType.DELETE})

# EventActionCode of each event type (PS3.15 A.5.1): Create, Read, Update, Delete, Execute.
EVENT_ACTIONS: dict[AuditEventType, str] = {
    AuditEventType.QUERY: "E",
    AuditEventType.RETRIEVE: "R",
    AuditEventType.STORE: "C",
    AuditEventType.DELETE: "D",
    AuditEventType.LOGIN: "E",
    AuditEventType.LOGOUT: "E",
    AuditEventType.AUDIT_READ: "R",
    AuditEventType.ADMIN: "E",
    AuditEventType.REPORT_READ: "R",
    AuditEventType.REPORT_WRITE: "U",
    AuditEventType.REPORT_SIGN: "U",
}


class Outcome(IntEnum):
    """EventOutcomeIndicator values (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # refused, not found, invalid request, partly failed
    SERIOUS_FAILURE = 8  # the archive failed
    MAJOR_FAILURE = 12


def outcome_of_http_status(status_code: int) -> Outcome:
    """Return the outcome of an HTTP response: 202 (partly stored) counts as a failure."""
    if status_code >= 500:
        return Outcome.SERIOUS_FAILURE
    if status_code >= 400 or status_code == 202:
        return Outcome.MINOR_FAILURE
    return Outcome.SUCCESS


@dataclass(frozen=True)
class AuditPatient:
    """A patient an event concerns: Patient ID and, when known, Patient's Name."""

    patient_id: str
    patient_name: str = ""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_record_uid() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AuditEvent:
    """One access or security event, as recorded.

    ``user_id`` is the token subject, or the calling AE title for DIMSE. ``session_id``
    is the token id or the association. ``request`` is the HTTP method and path or the
    DIMSE command. ``query`` contains the query parameters or matching keys, which may
    include PHI.
    """

    event_type: AuditEventType
    outcome: Outcome
    user_id: str
    client_address: str = ""
    user_name: str = ""
    user_roles: tuple[str, ...] = ()
    calling_ae_title: str = ""
    session_id: str = ""
    service: str = ""
    request: str = ""
    query: str = ""
    outcome_description: str = ""
    study_instance_uids: tuple[str, ...] = ()
    patients: tuple[AuditPatient, ...] = ()
    number_of_instances: int | None = None
    event_time: datetime = field(default_factory=_utc_now)
    record_uid: str = field(default_factory=_new_record_uid)

    def to_json(self) -> str:
        # Field by field rather than dataclasses.asdict, whose deep copy cost more than
        # the rest of the journal write; every C-STORE records one event.
        document = {item.name: getattr(self, item.name) for item in fields(self)}
        document["patients"] = [asdict(patient) for patient in self.patients]
        document["event_time"] = self.event_time.isoformat()
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AuditEvent:
        document: dict[str, Any] = json.loads(text)
        return cls(
            event_type=AuditEventType(document["event_type"]),
            outcome=Outcome(document["outcome"]),
            user_id=document["user_id"],
            client_address=document.get("client_address", ""),
            user_name=document.get("user_name", ""),
            user_roles=tuple(document.get("user_roles", ())),
            calling_ae_title=document.get("calling_ae_title", ""),
            session_id=document.get("session_id", ""),
            service=document.get("service", ""),
            request=document.get("request", ""),
            query=document.get("query", ""),
            outcome_description=document.get("outcome_description", ""),
            study_instance_uids=tuple(document.get("study_instance_uids", ())),
            patients=tuple(AuditPatient(**item) for item in document.get("patients", ())),
            number_of_instances=document.get("number_of_instances"),
            event_time=datetime.fromisoformat(document["event_time"]),
            record_uid=document["record_uid"],
        )


def merge_store_events(events: Sequence[AuditEvent]) -> list[AuditEvent]:
    """Merge the C-STORE events of one association, study and outcome into one event.

    A modality sends a study as one C-STORE per instance, so one record per study and
    association, with the instance count, keeps the trail small. Events keep their
    order, and a merged event takes the time of its first instance.
    """
    merged: list[AuditEvent] = []
    positions: dict[tuple[object, ...], int] = {}
    for event in events:
        if event.event_type is not AuditEventType.STORE or event.service != "dimse":
            merged.append(event)
            continue
        key = (event.session_id, event.outcome, event.study_instance_uids, event.user_id)
        position = positions.get(key)
        if position is None:
            positions[key] = len(merged)
            merged.append(event)
            continue
        first = merged[position]
        merged[position] = replace(
            first,
            number_of_instances=(first.number_of_instances or 0) + (event.number_of_instances or 0),
        )
    return merged


def _patients_of_studies(
    session: Session, study_instance_uids: Iterable[str]
) -> dict[str, AuditPatient]:
    # A UID as a client sent it may contain NUL, which PostgreSQL rejects in parameters.
    wanted = sorted({uid for uid in study_instance_uids if "\x00" not in uid})
    found: dict[str, AuditPatient] = {}
    for start in range(0, len(wanted), INSERT_BATCH_SIZE):
        rows = session.execute(
            select(Study.study_instance_uid, Study.patient_id, Study.patient_name).where(
                Study.study_instance_uid.in_(wanted[start : start + INSERT_BATCH_SIZE])
            )
        )
        for study_instance_uid, patient_id, patient_name in rows:
            found[study_instance_uid] = AuditPatient(patient_id, patient_name)
    return found


def patients_of_studies(
    database: Database, study_instance_uids: Iterable[str]
) -> list[AuditPatient]:
    """Return the patients of the indexed studies among ``study_instance_uids``.

    For events about studies that will be gone when the event is flushed (DELETE).
    """
    with database.read_session() as session:
        found = _patients_of_studies(session, study_instance_uids)
    return list(dict.fromkeys(found.values()))


def _existing_record_uids(session: Session, events: Sequence[AuditEvent]) -> set[str]:
    uids = [event.record_uid for event in events]
    existing: set[str] = set()
    for start in range(0, len(uids), INSERT_BATCH_SIZE):
        existing.update(
            session.scalars(
                select(AuditRecord.record_uid).where(
                    AuditRecord.record_uid.in_(uids[start : start + INSERT_BATCH_SIZE])
                )
            )
        )
    return existing


def _text(value: str, max_length: int) -> str:
    """Return ``value`` fit for a text column: NUL replaced, which PostgreSQL rejects."""
    return value.replace("\x00", "\ufffd")[:max_length]


def _cut_text(value: str, max_length: int) -> str:
    """Return ``value`` cut to ``max_length`` characters, saying how long it was."""
    if len(value) <= max_length:
        return _text(value, max_length)
    note = f" [cut from {len(value)} characters]"
    return _text(value, max_length - len(note)) + note


def _record_row(
    event: AuditEvent, audit_source_id: str, patients_by_study: dict[str, AuditPatient]
) -> AuditRecord:
    patients = list(event.patients)
    if not patients:
        for study_instance_uid in event.study_instance_uids:
            patient = patients_by_study.get(study_instance_uid)
            if patient is not None and patient not in patients:
                patients.append(patient)
    objects = [
        AuditObject(object_type="study", object_id=_text(uid, 64), object_name="")
        for uid in dict.fromkeys(event.study_instance_uids)
    ]
    objects.extend(
        AuditObject(
            object_type="patient",
            object_id=_text(patient.patient_id, 64),
            object_name=_text(patient.patient_name, 324),
        )
        for patient in patients
    )
    return AuditRecord(
        record_uid=event.record_uid,
        event_time=event.event_time,
        event_type=event.event_type.value,
        event_action=EVENT_ACTIONS[event.event_type],
        outcome=int(event.outcome),
        outcome_description=_cut_text(event.outcome_description, MAX_DESCRIPTION_LENGTH),
        user_id=_text(event.user_id, 255),
        user_name=_text(event.user_name, 255),
        user_roles=_text(" ".join(event.user_roles), 255),
        calling_ae_title=_text(event.calling_ae_title, 16),
        network_access_point=_text(event.client_address, 64),
        session_id=_text(event.session_id, 64),
        service=_text(event.service, 32),
        request=_text(event.request, 255),
        query=_cut_text(event.query, MAX_QUERY_LENGTH),
        number_of_instances=event.number_of_instances,
        audit_source_id=_text(audit_source_id, 64),
        objects=objects,
    )


def insert_audit_events(
    database: Database, events: Sequence[AuditEvent], audit_source_id: str
) -> int:
    """Insert the events not yet in the trail in one transaction; return how many."""
    if not events:
        return 0
    with database.write_session() as session:
        existing = _existing_record_uids(session, events)
        new_events = [event for event in events if event.record_uid not in existing]
        unresolved = [
            uid for event in new_events if not event.patients for uid in event.study_instance_uids
        ]
        patients_by_study = _patients_of_studies(session, unresolved) if unresolved else {}
        session.add_all(
            _record_row(event, audit_source_id, patients_by_study) for event in new_events
        )
        session.commit()
    return len(new_events)


class AuditTrail:
    """Records audit events through the journal and moves them into the index."""

    def __init__(
        self,
        database: Database,
        journal_dir: Path,
        audit_source_id: str,
        flush_interval_s: float = 1.0,
        fsync: bool = True,
    ) -> None:
        self.database = database
        self.journal = AuditJournal(journal_dir, fsync=fsync)
        self.audit_source_id = audit_source_id
        self.flush_interval_s = flush_interval_s
        self._flush_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        # Events whose journal write failed; inserted by the next flush.
        self._unjournaled: list[AuditEvent] = []
        # Segments whose insert failed; retried by the next flush.
        self._retry_segments: list[JournalSegment] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_failure_log: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Settings, database: Database) -> AuditTrail:
        return cls(
            database,
            settings.audit_journal_dir,
            settings.audit_source_id or settings.ae_title,
            settings.audit_flush_interval_s,
            settings.audit_journal_fsync,
        )

    def record(self, event: AuditEvent, *, durable: bool | None = None) -> None:
        """Journal ``event``; a durable one is on disk when this returns.

        ``durable`` defaults to whether the event changes the archive (DURABLE_EVENT_TYPES):
        callers record those before they acknowledge the change, so that the record of
        an acknowledged store or delete survives a power loss. A failed journal write is
        logged and the event kept in memory for the next flush, so recording does not
        fail the request, but such an event is not durable until that flush.
        """
        if durable is None:
            durable = event.event_type in DURABLE_EVENT_TYPES
        try:
            self.journal.append(event.to_json(), durable=durable)
        except OSError as error:
            self._log_failure("journal", "writing the audit journal failed: %s", error)
            with self._pending_lock:
                self._unjournaled.append(event)
            self._wake.set()

    def record_login(
        self,
        *,
        username: str,
        client_address: str,
        succeeded: bool,
        description: str = "",
        user_id: str = "",
        service: str = "auth",
    ) -> None:
        """Record a login attempt of a user or a service client (DCM 110114, 110122)."""
        self.record(
            AuditEvent(
                event_type=AuditEventType.LOGIN,
                outcome=Outcome.SUCCESS if succeeded else Outcome.MINOR_FAILURE,
                user_id=user_id or username,
                user_name=username,
                client_address=client_address,
                service=service,
                request="login",
                outcome_description=description,
            )
        )

    def flush(self) -> int:
        """Move every journaled event into the index now; return how many were inserted.

        Events whose insert fails stay journaled and are retried by the next flush. When
        the database rejects the batch for its content rather than being unreachable,
        the events are inserted one by one, and those it still rejects are set aside
        (:meth:`_set_aside`), so that one bad event cannot hold back the trail.
        """
        with self._flush_lock:
            segments = [*self._retry_segments]
            self._retry_segments = []
            current = self.journal.rotate()
            if current is not None:
                segments.append(current)
            segments.extend(self.journal.claim_orphans())
            with self._pending_lock:
                unjournaled, self._unjournaled = self._unjournaled, []
            events = [event for segment in segments for event in self._read(segment)]
            events.extend(unjournaled)
            merged = merge_store_events(events)
            try:
                try:
                    inserted = insert_audit_events(self.database, merged, self.audit_source_id)
                except OperationalError:
                    raise
                except SQLAlchemyError:
                    inserted = self._insert_one_by_one(merged)
            except SQLAlchemyError as error:
                self._log_failure(
                    "insert",
                    "inserting %d audit events failed, retrying in %.1f s: %s",
                    len(events),
                    self.flush_interval_s,
                    type(error).__name__,
                )
                self._retry_segments = segments
                with self._pending_lock:
                    self._unjournaled[:0] = unjournaled
                return 0
            for segment in segments:
                segment.discard()
            return inserted

    def _insert_one_by_one(self, events: Sequence[AuditEvent]) -> int:
        """Insert ``events`` each in its own transaction; set aside those rejected.

        Raises OperationalError when the database becomes unreachable meanwhile.
        """
        inserted = 0
        rejected: list[tuple[AuditEvent, SQLAlchemyError]] = []
        for event in events:
            try:
                inserted += insert_audit_events(self.database, [event], self.audit_source_id)
            except OperationalError:
                raise
            except SQLAlchemyError as error:
                rejected.append((event, error))
        if rejected:
            self._set_aside(rejected)
        return inserted

    def _set_aside(self, rejected: Sequence[tuple[AuditEvent, SQLAlchemyError]]) -> None:
        """Append events the database rejects to a file for an administrator to inspect.

        The file is ``REJECTED_FILE`` in the journal folder, which no flush reads.
        """
        path = self.journal.folder / REJECTED_FILE
        lines = "".join(event.to_json() + "\n" for event, _ in rejected)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(descriptor, lines.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        for event, error in rejected:
            logger.error(
                "the index database rejected audit record %s (%s, %s): %s; it is kept in %s",
                event.record_uid,
                event.event_type.value,
                event.request,
                type(error).__name__,
                path,
            )

    def _read(self, segment: JournalSegment) -> list[AuditEvent]:
        events = []
        for line_number, line in enumerate(segment.read_lines(), start=1):
            try:
                events.append(AuditEvent.from_json(line))
            except (ValueError, KeyError, TypeError) as error:
                # A process killed during a write leaves a partial last line.
                logger.warning(
                    "skipped line %d of audit journal %s: %s", line_number, segment.path, error
                )
        return events

    def _log_failure(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_failure_log.get(kind, -FAILURE_LOG_INTERVAL_S) >= (
            FAILURE_LOG_INTERVAL_S
        ):
            self._last_failure_log[kind] = now
            logger.error(message, *args)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the flush thread after a last flush."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.flush()
        except Exception:
            logger.exception("the last audit flush failed; the journal keeps the events")
        self.journal.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception:
                logger.exception("audit flush failed; retrying in %.1f s", self.flush_interval_s)
