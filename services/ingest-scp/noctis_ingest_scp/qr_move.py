"""C-MOVE SCP of the Patient Root and Study Root models (PS3.4 C.4.2).

The Move Destination must be a peer of the peer list with a host and port. The SCP
opens one association to it per C-MOVE, as this AE title, with DICOM TLS when the peer
list marks the peer ``"tls": true`` (:mod:`noctis_ingest_scp.outbound`). It proposes
one presentation context per SOP class and stored transfer syntax of the instances to
send. For an instance stored uncompressed in Implicit VR Little Endian or Deflated
Explicit VR Little Endian it also proposes Explicit VR Little Endian, to fall back to
when the destination rejects the stored syntax (see :mod:`noctis_ingest_scp.qr_send`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.presentation import PresentationContext, build_context

from noctis_common.audit import AuditEventType
from noctis_common.context import ArchiveContext
from noctis_ingest_scp.audit_events import record_dimse_event
from noctis_ingest_scp.outbound import PeerUnavailableError, associate_with_peer
from noctis_ingest_scp.qr_retrieve import (
    PreparedRetrieve,
    RetrieveResponder,
    SubOperationCounts,
    count_retrieve_request,
    perform_sub_operations,
    prepare_retrieve,
)
from noctis_ingest_scp.qr_send import CONVERTIBLE_TRANSFER_SYNTAXES, MoveOriginator, StoredInstance
from noctis_ingest_scp.qr_statuses import MOVE_DESTINATION_UNKNOWN
from noctis_ingest_scp.security import AccessControl

logger = logging.getLogger(__name__)

# PS3.8 9.3.2.2: an A-ASSOCIATE-RQ proposes at most 128 presentation contexts.
MAX_PRESENTATION_CONTEXTS = 128


def storage_contexts(instances: Sequence[StoredInstance]) -> list[PresentationContext]:
    """Return the presentation contexts to propose for sending ``instances``.

    One context per SOP class and stored transfer syntax, plus one with Explicit VR
    Little Endian per SOP class that has instances in a convertible syntax. Beyond
    128 contexts the rest are left out, and their instances fail.
    """
    pairs: list[tuple[str, UID]] = []
    for instance in instances:
        stored = UID(instance.transfer_syntax_uid)
        needed = [(instance.sop_class_uid, stored)]
        if stored in CONVERTIBLE_TRANSFER_SYNTAXES:
            needed.append((instance.sop_class_uid, ExplicitVRLittleEndian))
        pairs.extend(pair for pair in needed if pair not in pairs)
    if len(pairs) > MAX_PRESENTATION_CONTEXTS:
        logger.warning(
            "a C-MOVE needs %d presentation contexts; the %d beyond %d are not proposed",
            len(pairs),
            len(pairs) - MAX_PRESENTATION_CONTEXTS,
            MAX_PRESENTATION_CONTEXTS,
        )
    return [
        build_context(sop_class_uid, [transfer_syntax])
        for sop_class_uid, transfer_syntax in pairs[:MAX_PRESENTATION_CONTEXTS]
    ]


def perform_c_move(
    association: Association,
    request: C_MOVE,
    context: PresentationContext,
    *,
    archive: ArchiveContext,
    access: AccessControl,
) -> None:
    """Respond to a C-MOVE request of the Patient Root or Study Root model (PS3.4 C.4.2).

    Sends the responses of :mod:`noctis_ingest_scp.qr_retrieve`, the refusals of
    :func:`~noctis_ingest_scp.qr_retrieve.prepare_retrieve`, and:

    * ``0xA801`` Refused: Move Destination Unknown: the Move Destination is not in the
      peer list, or its entry has no host and port.
    * ``0xA702`` Refused: Unable to Perform Sub-operations, with every instance
      counted as failed: the association to the destination was rejected or could
      not be opened.
    """
    started = time.monotonic()
    responder = RetrieveResponder(association, request, context)
    calling_ae_title = association.requestor.ae_title
    destination_title = str(request.MoveDestination or "").strip()

    prepared: PreparedRetrieve | None = None
    counts: SubOperationCounts | None = None

    def log_outcome(detail: str) -> None:
        status = responder.final_status
        count_retrieve_request("C-MOVE", status)
        record_dimse_event(
            archive.audit,
            association,
            event_type=AuditEventType.RETRIEVE,
            command="C-MOVE",
            status=status,
            study_instance_uids=prepared.request.study_instance_uids if prepared else (),
            patient_ids=[prepared.request.patient_id or ""] if prepared else (),
            number_of_instances=counts.completed + counts.warning if counts else None,
            description=detail,
        )
        logger.info(
            "C-MOVE from %s to %s: %s, %s, %.0f ms",
            calling_ae_title,
            destination_title or "(no AE title)",
            "no final response" if status is None else f"status 0x{status:04X}",
            detail,
            (time.monotonic() - started) * 1000,
        )

    prepared = prepare_retrieve(association, responder, database=archive.database, access=access)
    if prepared is None:
        log_outcome(f"rejected: {responder.refusal_reason}")
        return
    destination = access.peers.get(destination_title) if destination_title else None
    if destination is None or destination.address is None:
        responder.send_refusal(
            MOVE_DESTINATION_UNKNOWN,
            f"Move Destination {destination_title!r} is not a peer with a host and port",
        )
        log_outcome("unknown destination")
        return

    instances = prepared.instances
    counts = SubOperationCounts(remaining=len(instances))
    summary = f"{prepared.model.title} {prepared.request.level.term} level"
    if not instances:
        responder.send_final(counts)
        log_outcome(f"{summary}, no instances")
        return
    try:
        store_association = associate_with_peer(
            archive.settings, destination, storage_contexts(instances)
        )
    except PeerUnavailableError as error:
        counts.fail_remaining(instances)
        responder.send_final(counts, message=str(error))
        log_outcome(f"{summary}, {error}: {counts.describe()}")
        return
    try:
        perform_sub_operations(
            association,
            store_association,
            responder,
            instances,
            counts,
            store=archive.store,
            spool_dir=archive.archive.spool_dir,
            move_originator=MoveOriginator(calling_ae_title, int(request.MessageID or 0)),
        )
    finally:
        if store_association.is_established:
            store_association.release()
    log_outcome(f"{summary}: {counts.describe()}")
