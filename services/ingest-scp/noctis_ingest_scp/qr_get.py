"""C-GET SCP of the Patient Root and Study Root models (PS3.4 C.4.3).

The C-STORE sub-operations go over the association of the C-GET itself. The requestor
proposes the storage presentation contexts, and with SCP/SCU Role Selection
Negotiation (PS3.7 D.3.3.4) proposes to act as their SCP. The gateway accepts that
role for every Storage SOP class (see :mod:`noctis_ingest_scp.presentation`).
"""

from __future__ import annotations

import logging
import time

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET
from pynetdicom.presentation import PresentationContext

from noctis_common.audit import AuditEventType
from noctis_common.context import ArchiveContext
from noctis_ingest_scp.audit_events import record_dimse_event
from noctis_ingest_scp.qr_retrieve import (
    PreparedRetrieve,
    RetrieveResponder,
    SubOperationCounts,
    count_retrieve_request,
    perform_sub_operations,
    prepare_retrieve,
)
from noctis_ingest_scp.security import AccessControl

logger = logging.getLogger(__name__)


def perform_c_get(
    association: Association,
    request: C_GET,
    context: PresentationContext,
    *,
    archive: ArchiveContext,
    access: AccessControl,
) -> None:
    """Respond to a C-GET request of the Patient Root or Study Root model (PS3.4 C.4.3).

    Sends the responses of :mod:`noctis_ingest_scp.qr_retrieve` and the refusals of
    :func:`~noctis_ingest_scp.qr_retrieve.prepare_retrieve`. An instance whose SOP
    class and transfer syntax the requestor did not accept as SCP counts as a failed
    sub-operation.
    """
    started = time.monotonic()
    responder = RetrieveResponder(association, request, context)
    calling_ae_title = association.requestor.ae_title

    prepared: PreparedRetrieve | None = None
    counts: SubOperationCounts | None = None

    def log_outcome(detail: str) -> None:
        status = responder.final_status
        count_retrieve_request("C-GET", status)
        record_dimse_event(
            archive.audit,
            association,
            event_type=AuditEventType.RETRIEVE,
            command="C-GET",
            status=status,
            study_instance_uids=prepared.request.study_instance_uids if prepared else (),
            patient_ids=[prepared.request.patient_id or ""] if prepared else (),
            number_of_instances=counts.completed + counts.warning if counts else None,
            description=detail,
        )
        logger.info(
            "C-GET from %s: %s, %s, %.0f ms",
            calling_ae_title,
            "no final response" if status is None else f"status 0x{status:04X}",
            detail,
            (time.monotonic() - started) * 1000,
        )

    prepared = prepare_retrieve(association, responder, database=archive.database, access=access)
    if prepared is None:
        log_outcome(f"rejected: {responder.refusal_reason}")
        return
    counts = SubOperationCounts(remaining=len(prepared.instances))
    perform_sub_operations(
        association,
        association,
        responder,
        prepared.instances,
        counts,
        store=archive.store,
        spool_dir=archive.archive.spool_dir,
    )
    log_outcome(f"{prepared.model.title} {prepared.request.level.term} level: {counts.describe()}")
