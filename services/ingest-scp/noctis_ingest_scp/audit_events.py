"""Audit records of DIMSE requests: C-STORE, C-FIND, C-MOVE and C-GET.

DIMSE carries no user identity, so the record names the calling AE title as the user
and the peer's IP address as the network access point. Each C-STORE is journaled on
its own; the trail merges those of one association, study and outcome into one record
with the instance count (:func:`noctis_common.audit.merge_store_events`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pynetdicom.association import Association

from noctis_common.audit import AuditEvent, AuditEventType, AuditPatient, AuditTrail, Outcome
from noctis_ingest_scp.qr_statuses import CANCEL, SUCCESS, UNABLE_TO_PROCESS
from noctis_ingest_scp.statuses import PROCESSING_FAILURE

# Statuses after which the request did what was asked, or what the peer let it do.
_SUCCESS_STATUSES = frozenset({SUCCESS, CANCEL})
# Failures of the archive rather than of the request; 0xA7xx are Out of Resources.
_ARCHIVE_FAILURES = frozenset({PROCESSING_FAILURE, UNABLE_TO_PROCESS})
OUT_OF_RESOURCES_MASK = 0xFF00
OUT_OF_RESOURCES = 0xA700


def dimse_outcome(status: int | None) -> Outcome:
    """Return the audit outcome of a final DIMSE status.

    Warnings and refusals of the request count as minor failures, failures of the
    archive as serious ones, and a request that got no final status as a minor one.
    """
    if status in _SUCCESS_STATUSES:
        return Outcome.SUCCESS
    if status is not None and (
        status in _ARCHIVE_FAILURES or status & OUT_OF_RESOURCES_MASK == OUT_OF_RESOURCES
    ):
        return Outcome.SERIOUS_FAILURE
    return Outcome.MINOR_FAILURE


def association_session_id(association: Association) -> str:
    """Return an id that groups the records of one association."""
    return f"association-{id(association):x}"


def record_dimse_event(
    audit: AuditTrail | None,
    association: Association,
    *,
    event_type: AuditEventType,
    command: str,
    status: int | None,
    study_instance_uids: Iterable[str] = (),
    patient_ids: Iterable[str] = (),
    number_of_instances: int | None = None,
    query: str = "",
    description: str = "",
) -> None:
    """Journal the audit event of one DIMSE request; does nothing without a trail."""
    if audit is None:
        return
    calling_ae_title = str(association.requestor.ae_title or "").strip()
    audit.record(
        AuditEvent(
            event_type=event_type,
            outcome=dimse_outcome(status),
            user_id=calling_ae_title or "unknown AE",
            calling_ae_title=calling_ae_title,
            client_address=str(association.requestor.address or ""),
            session_id=association_session_id(association),
            service="dimse",
            request=command,
            query=query,
            outcome_description=description
            or ("no final status" if status is None else f"status 0x{status:04X}"),
            study_instance_uids=tuple(uid for uid in study_instance_uids if uid),
            patients=tuple(AuditPatient(patient_id) for patient_id in patient_ids if patient_id),
            number_of_instances=number_of_instances,
        )
    )
