"""DIMSE handlers: C-ECHO (Verification, PS3.4 Annex A) and C-STORE (Storage, PS3.4 Annex B).

No exception leaves a handler. Each failure returns a named status from
:mod:`noctis_ingest_scp.statuses` with an Error Comment that names what failed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import cast

from opentelemetry import trace
from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from noctis_common.archive import Archive, FailureReason, StoreFailedError
from noctis_common.audit import AuditEventType, AuditTrail
from noctis_common.metrics import (
    DIMSE_STORE_DURATION,
    DIMSE_STORE_REQUESTS,
    DIMSE_STORED_BYTES,
    status_label,
)
from noctis_common.tracing import mark_failed, tracer
from noctis_ingest_scp.associations import AssociationRegistry
from noctis_ingest_scp.audit_events import record_dimse_event
from noctis_ingest_scp.peers import Permission
from noctis_ingest_scp.security import AccessControl, not_authorized_comment
from noctis_ingest_scp.statuses import NOT_AUTHORIZED, PROCESSING_FAILURE, SUCCESS, failure_status

logger = logging.getLogger(__name__)

# Failures caused by this archive rather than by the sent object: logged at ERROR.
_ARCHIVE_SIDE_FAILURES = {FailureReason.OUT_OF_RESOURCES, FailureReason.PROCESSING_FAILURE}


def handle_c_echo(
    event: Event, registry: AssociationRegistry, access: AccessControl | None = None
) -> int:
    """Count a C-ECHO request and return its status (PS3.4 A.4).

    Returns
    -------
    int
        * ``0x0000`` Success.
        * ``0x0124`` Refused: Not Authorized: the peer list does not grant the calling
          AE title the ``echo`` permission.
    """
    if access is not None and not access.is_allowed(event, Permission.ECHO):
        return NOT_AUTHORIZED
    registry.record(event.assoc).echoes += 1
    return SUCCESS


def handle_c_store(
    event: Event,
    archive: Archive,
    registry: AssociationRegistry,
    access: AccessControl | None = None,
    audit: AuditTrail | None = None,
) -> int | Dataset:
    """Store the dataset of one C-STORE request and return its status (PS3.4 B.2.2, B.2.3).

    pynetdicom has written the dataset, exactly as received and preceded by File Meta
    Information naming the accepted transfer syntax, to a temporary file in the
    archive's spool (``event.dataset_path``); :meth:`Archive.store_part10` consumes it.

    Returns
    -------
    int or pydicom.dataset.Dataset
        * ``0x0000`` Success: the instance is durable and indexed, or an instance with
          this SOP Instance UID and the same content was stored before.
        * ``0x0111`` Duplicate SOP Instance: another object with this SOP Instance UID
          is already stored; the first copy is kept.
        * ``0xA700`` Refused, Out of Resources: the object store or the index failed.
        * ``0xA900`` Data Set Does Not Match SOP Class: the dataset's SOP Class UID
          differs from the request's Affected SOP Class UID.
        * ``0xC000`` Cannot Understand: the dataset cannot be parsed, lacks a valid
          SOP Class, SOP Instance, Study or Series Instance UID, or its SOP Instance UID
          differs from the request's Affected SOP Instance UID.
        * ``0x0110`` Processing Failure: an unexpected error, logged with its traceback.
        * ``0x0124`` Refused: Not Authorized: the peer list does not grant the calling
          AE title the ``store`` permission; nothing is stored.

        Failures carry an Error Comment of at most 64 characters; the log has the full
        message.

    The request is traced in a ``C-STORE`` span, a child of its association's span,
    and recorded in the audit trail when ``audit`` is given.
    """
    started = time.perf_counter()
    request = cast(C_STORE, event.request)
    parent = trace.set_span_in_context(registry.span(event.assoc))
    with tracer.start_as_current_span(
        "C-STORE",
        context=parent,
        attributes={
            "dicom.affected_sop_class_uid": str(request.AffectedSOPClassUID or ""),
            "dicom.affected_sop_instance_uid": str(request.AffectedSOPInstanceUID or ""),
        },
    ) as span:
        status, study_instance_uid = _store_dataset(event, archive, registry, access)
        status_code = int(status.Status) if isinstance(status, Dataset) else status
        span.set_attribute("dicom.status", status_label(status_code))
        if status_code != SUCCESS:
            mark_failed(span, f"C-STORE failed with status {status_label(status_code)}")
    DIMSE_STORE_DURATION.observe(time.perf_counter() - started)
    record_dimse_event(
        audit,
        event.assoc,
        event_type=AuditEventType.STORE,
        command="C-STORE",
        status=status_code,
        study_instance_uids=[study_instance_uid],
        number_of_instances=1,
    )
    return status


def _store_dataset(
    event: Event,
    archive: Archive,
    registry: AssociationRegistry,
    access: AccessControl | None,
) -> tuple[int | Dataset, str]:
    """Return the status and, once stored, the Study Instance UID of the instance."""
    record = registry.record(event.assoc)
    request = cast(C_STORE, event.request)
    sop_class_uid = str(request.AffectedSOPClassUID or "")
    sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
    calling_ae_title = event.assoc.requestor.ae_title
    if access is not None and not access.is_allowed(event, Permission.STORE):
        record.failed += 1
        _count_store_request("failed", NOT_AUTHORIZED)
        comment = not_authorized_comment(calling_ae_title, Permission.STORE)
        return failure_status(NOT_AUTHORIZED, comment), ""
    dataset_path = Path(event.dataset_path)
    try:
        # Read before storing: store_part10 consumes the spool file.
        file_size = dataset_path.stat().st_size
        stored = archive.store_part10(
            dataset_path,
            source_ae_title=calling_ae_title,
            expected_sop_class_uid=sop_class_uid,
            expected_sop_instance_uid=sop_instance_uid,
        )
    except StoreFailedError as error:
        record.failed += 1
        _count_store_request("failed", int(error.reason))
        level = logging.ERROR if error.reason in _ARCHIVE_SIDE_FAILURES else logging.WARNING
        logger.log(
            level,
            "C-STORE of SOP Instance UID %r from %s failed with status 0x%04X: %s",
            sop_instance_uid,
            calling_ae_title,
            int(error.reason),
            error.message,
        )
        return failure_status(int(error.reason), error.message), ""
    except Exception:
        record.failed += 1
        _count_store_request("failed", PROCESSING_FAILURE)
        logger.exception(
            "C-STORE of SOP Instance UID %r from %s failed with an unexpected error",
            sop_instance_uid,
            calling_ae_title,
        )
        message = "internal error in the archive; its log has the details"
        return failure_status(PROCESSING_FAILURE, message), ""
    if stored.duplicate:
        record.duplicates += 1
        _count_store_request("duplicate", SUCCESS)
    else:
        record.stored += 1
        _count_store_request("stored", SUCCESS)
        DIMSE_STORED_BYTES.inc(file_size)
    return SUCCESS, stored.study_instance_uid


def _count_store_request(outcome: str, status: int) -> None:
    DIMSE_STORE_REQUESTS.labels(outcome=outcome, status=status_label(status)).inc()
