"""Code shared by C-MOVE and C-GET: instance selection, responses, the sub-operation loop.

Responses follow PS3.4 C.4.2.1.5 to C.4.2.1.9 (C-MOVE) and C.4.3.1.4 to C.4.3.1.8
(C-GET):

- a Pending response after each sub-operation, with the Remaining, Completed, Failed
  and Warning counts and no Identifier;
- a final Success when every sub-operation completed, Warning (0xB000) when some
  failed or had a warning, and Failure (0xA702) when all failed. The final response
  has no Remaining count;
- Cancel (0xFE00) after a C-CANCEL, with the count of sub-operations not started as
  Remaining.

Canceled, Warning and Failure responses carry the Failed SOP Instance UID List in their
Identifier when some sub-operation failed; without failures no Identifier is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext
from sqlalchemy import select

from noctis_common.db import Database
from noctis_common.db.models import Instance, Series, Study
from noctis_common.metrics import DIMSE_QUERY_RETRIEVE_REQUESTS, status_label
from noctis_common.storage import ObjectStore
from noctis_ingest_scp.peers import Permission
from noctis_ingest_scp.qr_identifiers import (
    IdentifierError,
    RetrieveRequest,
    parse_retrieve_identifier,
)
from noctis_ingest_scp.qr_models import InformationModel, model_of_sop_class
from noctis_ingest_scp.qr_send import (
    MoveOriginator,
    StoredInstance,
    SubOperationOutcome,
    send_stored_instance,
)
from noctis_ingest_scp.qr_statuses import (
    CANCEL,
    IDENTIFIER_NOT_DECODED,
    NOT_AUTHORIZED,
    PENDING,
    SUB_OPERATIONS_WARNING,
    SUCCESS,
    UNABLE_TO_PERFORM_SUB_OPERATIONS,
    UNABLE_TO_PROCESS,
)
from noctis_ingest_scp.security import AccessControl, not_authorized_comment
from noctis_ingest_scp.statuses import error_comment

logger = logging.getLogger(__name__)

# Number of ... Sub-operations (0000,1020-1023) are US values.
MAX_SUB_OPERATIONS = 0xFFFF
MAX_MESSAGE_ID = 0xFFFF


def count_retrieve_request(command: str, final_status: int | None) -> None:
    """Count a C-MOVE or C-GET request by the status of its final response."""
    status = "none" if final_status is None else status_label(final_status)
    DIMSE_QUERY_RETRIEVE_REQUESTS.labels(command=command, status=status).inc()


def find_stored_instances(database: Database, request: RetrieveRequest) -> list[StoredInstance]:
    """Return the stored instances that ``request`` selects, series by series.

    Instances are in the order of their studies (oldest indexed first), series (by
    Series Number) and Instance Number.
    """
    statement = (
        select(
            Instance.sop_class_uid,
            Instance.sop_instance_uid,
            Instance.transfer_syntax_uid,
            Instance.object_key,
        )
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Instance.study_fk == Study.id)
        .order_by(
            Study.id,
            Series.series_number.asc().nulls_last(),
            Series.id,
            Instance.instance_number.asc().nulls_last(),
            Instance.id,
        )
    )
    if request.patient_id is not None:
        statement = statement.where(Study.patient_id == request.patient_id)
    if request.study_instance_uids:
        statement = statement.where(Study.study_instance_uid.in_(request.study_instance_uids))
    if request.series_instance_uids:
        statement = statement.where(Series.series_instance_uid.in_(request.series_instance_uids))
    if request.sop_instance_uids:
        statement = statement.where(Instance.sop_instance_uid.in_(request.sop_instance_uids))
    with database.read_session() as session:
        return [StoredInstance(*row) for row in session.execute(statement)]


@dataclass
class SubOperationCounts:
    """The sub-operation counts that C-MOVE and C-GET responses report."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_sop_instance_uids: list[str] = field(default_factory=list)

    def record(self, sop_instance_uid: str, outcome: SubOperationOutcome) -> None:
        self.remaining -= 1
        if outcome is SubOperationOutcome.COMPLETED:
            self.completed += 1
        elif outcome is SubOperationOutcome.WARNING:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_sop_instance_uids.append(sop_instance_uid)

    def fail_remaining(self, instances: Sequence[StoredInstance]) -> None:
        """Count every instance not yet sent as failed."""
        for instance in instances[len(instances) - self.remaining :]:
            self.record(instance.sop_instance_uid, SubOperationOutcome.FAILED)

    def describe(self) -> str:
        return (
            f"{self.completed} completed, {self.failed} failed, {self.warning} with "
            f"warnings, {self.remaining} not started"
        )

    @property
    def final_status(self) -> int:
        """Return the final status: Success, Warning (0xB000) or Failure (0xA702)."""
        attempted = self.completed + self.failed + self.warning
        if self.failed == 0 and self.warning == 0:
            return SUCCESS
        if attempted > 0 and self.failed == attempted:
            return UNABLE_TO_PERFORM_SUB_OPERATIONS
        return SUB_OPERATIONS_WARNING


class RetrieveResponder:
    """Sends the C-MOVE or C-GET responses to one request."""

    def __init__(
        self,
        association: Association,
        request: C_MOVE | C_GET,
        context: PresentationContext,
    ) -> None:
        self.association = association
        self.request = request
        self.context = context
        self.context_id = int(context.context_id or 0)
        # The status of the final response, once it is sent.
        self.final_status: int | None = None
        # Why the request was refused before any sub-operation, for the log.
        self.refusal_reason = ""

    def _response(self, status: int) -> C_MOVE | C_GET:
        response = C_MOVE() if isinstance(self.request, C_MOVE) else C_GET()
        response.MessageIDBeingRespondedTo = self.request.MessageID
        response.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        response.Status = status
        return response

    def _send(self, response: C_MOVE | C_GET) -> None:
        self.association.dimse.send_msg(response, self.context_id)

    def _failed_list_identifier(self, failed_sop_instance_uids: list[str]) -> BytesIO | None:
        if not failed_sop_instance_uids:
            return None
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = failed_sop_instance_uids
        transfer_syntax = self.context.transfer_syntax[0]
        encoded = encode(
            identifier,
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            transfer_syntax.is_deflated,
        )
        return BytesIO(encoded) if encoded is not None else None

    def send_pending(self, counts: SubOperationCounts) -> None:
        response = self._response(PENDING)
        response.NumberOfRemainingSuboperations = counts.remaining
        response.NumberOfCompletedSuboperations = counts.completed
        response.NumberOfFailedSuboperations = counts.failed
        response.NumberOfWarningSuboperations = counts.warning
        self._send(response)

    def send_final(
        self, counts: SubOperationCounts, *, canceled: bool = False, message: str = ""
    ) -> int:
        """Send the final response with the counts, and ``message`` as Error Comment."""
        status = CANCEL if canceled else counts.final_status
        response = self._response(status)
        if message:
            # pynetdicom 3.0 annotates ErrorComment as None although it takes a string.
            response.ErrorComment = error_comment(message)  # type: ignore[assignment]
        if canceled:
            response.NumberOfRemainingSuboperations = counts.remaining
        response.NumberOfCompletedSuboperations = counts.completed
        response.NumberOfFailedSuboperations = counts.failed
        response.NumberOfWarningSuboperations = counts.warning
        if status != SUCCESS:
            response.Identifier = self._failed_list_identifier(counts.failed_sop_instance_uids)
        self._send(response)
        self.final_status = status
        return status

    def send_refusal(self, status: int, message: str) -> int:
        """Send a final failure before any sub-operation, with an Error Comment."""
        self.refusal_reason = message
        response = self._response(status)
        # pynetdicom 3.0 annotates ErrorComment as None although it takes a string.
        response.ErrorComment = error_comment(message)  # type: ignore[assignment]
        self._send(response)
        self.final_status = status
        return status


@dataclass(frozen=True)
class PreparedRetrieve:
    """A C-MOVE or C-GET request that passed its checks, and the instances it selects."""

    model: InformationModel
    request: RetrieveRequest
    instances: list[StoredInstance]


def prepare_retrieve(
    association: Association,
    responder: RetrieveResponder,
    *,
    database: Database,
    access: AccessControl,
) -> PreparedRetrieve | None:
    """Check permission and Identifier and find the instances; None once refused.

    When this returns None, a refusal has been sent:

    * ``0x0124`` when the calling AE title lacks the ``retrieve`` permission;
    * ``0xA900`` for an invalid Identifier, ``0xC002`` for one that cannot be decoded;
    * ``0xC001`` when the index query fails;
    * ``0xA702`` when more instances match than the US counts can report.
    """
    calling_ae_title = association.requestor.ae_title
    if not access.peers.is_allowed(calling_ae_title, Permission.RETRIEVE):
        responder.send_refusal(
            NOT_AUTHORIZED, not_authorized_comment(calling_ae_title, Permission.RETRIEVE)
        )
        return None
    request = responder.request
    # The dispatcher sends only MOVE and GET requests of these two models here.
    model = model_of_sop_class(str(request.AffectedSOPClassUID)) or InformationModel.STUDY_ROOT
    transfer_syntax = responder.context.transfer_syntax[0]
    try:
        if request.Identifier is None:
            raise IdentifierError("the request has no Identifier")
        identifier = decode(
            request.Identifier,
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            transfer_syntax.is_deflated,
        )
        retrieve_request = parse_retrieve_identifier(identifier, model)
    except IdentifierError as error:
        responder.send_refusal(error.status, error.message)
        return None
    except Exception as error:  # pydicom raises many types on an undecodable Identifier
        responder.send_refusal(
            IDENTIFIER_NOT_DECODED, f"the Identifier cannot be decoded: {type(error).__name__}"
        )
        return None
    try:
        instances = find_stored_instances(database, retrieve_request)
    except Exception:
        logger.exception("finding the instances of a retrieval from %s failed", calling_ae_title)
        responder.send_refusal(
            UNABLE_TO_PROCESS, "the index query failed; the archive log has the details"
        )
        return None
    if len(instances) > MAX_SUB_OPERATIONS:
        responder.send_refusal(
            UNABLE_TO_PERFORM_SUB_OPERATIONS,
            f"{len(instances)} instances match, over the {MAX_SUB_OPERATIONS} that one "
            "request can report; retrieve fewer at a time",
        )
        return None
    return PreparedRetrieve(model, retrieve_request, instances)


def is_cancelled(association: Association, message_id: int) -> bool:
    """Return whether a C-CANCEL for ``message_id`` arrived, and consume it."""
    return association.dimse.cancel_req.pop(message_id, None) is not None


def perform_sub_operations(
    requestor: Association,
    store_association: Association,
    responder: RetrieveResponder,
    instances: Sequence[StoredInstance],
    counts: SubOperationCounts,
    *,
    store: ObjectStore,
    spool_dir: Path,
    move_originator: MoveOriginator | None = None,
) -> None:
    """Send each instance on ``store_association`` and the responses to ``requestor``.

    ``requestor`` is the association of the C-MOVE or C-GET request; for C-GET it is
    also ``store_association``. ``counts`` starts with every instance remaining and
    ends with the outcome of each. Checks for a C-CANCEL before each sub-operation.
    When the storage association ends early, the instances not yet sent count as
    failed. No final response is sent when the requestor's association has ended.
    """
    request_message_id = int(responder.request.MessageID or 0)
    message_id = request_message_id
    for instance in instances:
        if is_cancelled(requestor, request_message_id):
            responder.send_final(counts, canceled=True)
            return
        if not store_association.is_established:
            logger.warning(
                "the storage association ended; %d sub-operations not started", counts.remaining
            )
            counts.fail_remaining(instances)
            break
        # Each sub-operation gets the next Message ID, wrapping within the US range.
        message_id = message_id % MAX_MESSAGE_ID + 1
        result = send_stored_instance(
            store_association,
            instance,
            store,
            spool_dir,
            message_id=message_id,
            move_originator=move_originator,
        )
        if result.outcome is not SubOperationOutcome.COMPLETED:
            logger.warning(
                "C-STORE sub-operation for SOP Instance UID %s %s: %s",
                instance.sop_instance_uid,
                result.outcome.value,
                result.reason,
            )
        counts.record(instance.sop_instance_uid, result.outcome)
        if not requestor.is_established:
            return
        if counts.remaining > 0:
            responder.send_pending(counts)
    responder.send_final(counts)
