"""Storage Commitment Push Model SCP (PS3.4 Annex J, SOP Class 1.2.840.10008.1.20.1).

A requestor sends N-ACTION (Action Type ID 1, Request Storage Commitment) with a
Transaction UID and a Referenced SOP Sequence. :meth:`StorageCommitmentSCP.handle_n_action`
checks the request and responds at once. The commitment itself is reported later by
N-EVENT-REPORT:

* Event Type ID 1 (Storage Commitment Request Successful) when every referenced
  instance is stored and indexed with the referenced SOP Class UID, listed in the
  Referenced SOP Sequence;
* Event Type ID 2 (Storage Commitment Request Complete - Failures Exist) otherwise. The
  other instances are then listed in the Failed SOP Sequence with a Failure Reason:
  0112H No such object instance, or 0119H Class/Instance conflict when the index has
  the instance under another SOP Class UID.

An instance is committed only when its index row exists, and the archive commits that
row only after the object is durable (see :mod:`noctis_common.archive`).

The report goes out on the requestor's association when that is still open and idle
:data:`SAME_ASSOCIATION_GRACE_S` after the N-ACTION response was sent. Otherwise, or
when that fails, Noctis opens a new association to the requestor's host and port from
the peer list, proposing the SCP role for Storage Commitment by SCP/SCU Role Selection
Negotiation (PS3.4 J.3.3, PS3.7 Annex D), and tries :data:`REPORT_ATTEMPTS` times.

NOTE: pynetdicom 3.0 pauses the association while it waits for the N-EVENT-REPORT
response. A requestor that releases the association or sends another request in that
moment gets no answer until the wait ends (at most :data:`SAME_ASSOCIATION_TIMEOUT_S`),
and pynetdicom then aborts the association. Pending reports are held in memory only,
so a report not yet delivered when the process stops is lost and the requestor has to
ask again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.presentation import build_context, build_role
from sqlalchemy import select

from noctis_common.db import Database
from noctis_common.db.models import Instance
from noctis_common.settings import Settings
from noctis_common.uids import InvalidUIDError, validate_uid
from noctis_ingest_scp.outbound import PeerUnavailableError, associate_with_peer, peer_description
from noctis_ingest_scp.peers import Permission
from noctis_ingest_scp.presentation import STORAGE_COMMITMENT_PUSH_MODEL_SOP_CLASS_UID
from noctis_ingest_scp.security import AccessControl
from noctis_ingest_scp.statuses import NOT_AUTHORIZED, SUCCESS

logger = logging.getLogger(__name__)

STORAGE_COMMITMENT_PUSH_MODEL = STORAGE_COMMITMENT_PUSH_MODEL_SOP_CLASS_UID
# The well-known SOP Instance UID of the Push Model (PS3.4 Annex J).
STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE = UID("1.2.840.10008.1.20.1.1")
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
EVENT_REQUEST_SUCCESSFUL = 1  # Event Type ID
EVENT_FAILURES_EXIST = 2

# N-ACTION response statuses (PS3.7 Annex C) that this SCP returns.
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION = 0x0123
PROCESSING_FAILURE = 0x0110

# How long the report waits for the N-ACTION response to leave before it gives up on
# the requestor's association.
RESPONSE_SENT_TIMEOUT_S = 10.0
# A requestor that releases its association right after the N-ACTION response does so
# within milliseconds (an estimate), so after this wait an open association is one whose
# requestor waits for the report on it.
SAME_ASSOCIATION_GRACE_S = 1.0
# Maximum wait for the N-EVENT-REPORT response on the requestor's association.
SAME_ASSOCIATION_TIMEOUT_S = 10.0
# Attempts to deliver the report on a new association, and the delay between them.
REPORT_ATTEMPTS = 3
REPORT_RETRY_DELAY_S = 5.0
# Referenced SOP Instance UIDs looked up in the index per query.
LOOKUP_CHUNK_SIZE = 500

# Message control header bits of a PDV (PS3.8 E.2): command fragment, last fragment.
_COMMAND_LAST_FRAGMENT = 0x03
_N_ACTION_RSP = 0x8130


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values of the Failed SOP Sequence (PS3.4 Annex J)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    CLASS_INSTANCE_CONFLICT = 0x0119


class InvalidActionInformationError(ValueError):
    """The N-ACTION Action Information lacks a required attribute or has a bad value."""


@dataclass(frozen=True)
class ReferencedInstance:
    """One item of the Referenced SOP Sequence."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class CommitmentResult:
    """The outcome of one transaction: committed instances and failures with reasons."""

    committed: list[ReferencedInstance] = field(default_factory=list)
    failed: list[tuple[ReferencedInstance, FailureReason]] = field(default_factory=list)


@dataclass(eq=False)
class CommitmentRequest:
    """An accepted N-ACTION whose N-EVENT-REPORT is still to be sent."""

    transaction_uid: str
    references: list[ReferencedInstance]
    calling_ae_title: str
    association: Association
    message_id: int
    response_sent: threading.Event = field(default_factory=threading.Event)


def parse_action_information(dataset: Dataset) -> tuple[str, list[ReferencedInstance]]:
    """Return the Transaction UID and the referenced instances of an N-ACTION.

    Raises :class:`InvalidActionInformationError` when the Transaction UID is missing or
    invalid, the Referenced SOP Sequence is missing or empty, or an item lacks a valid
    Referenced SOP Class UID or Referenced SOP Instance UID.
    """
    try:
        transaction_uid = validate_uid(dataset.get("TransactionUID"), "TransactionUID")
    except InvalidUIDError as error:
        raise InvalidActionInformationError(str(error)) from error
    items = dataset.get("ReferencedSOPSequence")
    if not items:
        raise InvalidActionInformationError("the Referenced SOP Sequence is missing or empty")
    references = []
    for number, item in enumerate(items, start=1):
        try:
            references.append(
                ReferencedInstance(
                    sop_class_uid=validate_uid(
                        item.get("ReferencedSOPClassUID"), "ReferencedSOPClassUID"
                    ),
                    sop_instance_uid=validate_uid(
                        item.get("ReferencedSOPInstanceUID"), "ReferencedSOPInstanceUID"
                    ),
                )
            )
        except InvalidUIDError as error:
            raise InvalidActionInformationError(
                f"item {number} of the Referenced SOP Sequence: {error}"
            ) from error
    return transaction_uid, references


def check_commitment(
    database: Database, references: Sequence[ReferencedInstance]
) -> CommitmentResult:
    """Look up each referenced instance in the index and sort it into the result."""
    stored_classes: dict[str, str] = {}
    sop_instance_uids = sorted({reference.sop_instance_uid for reference in references})
    with database.read_session() as session:
        for start in range(0, len(sop_instance_uids), LOOKUP_CHUNK_SIZE):
            chunk = sop_instance_uids[start : start + LOOKUP_CHUNK_SIZE]
            rows = session.execute(
                select(Instance.sop_instance_uid, Instance.sop_class_uid).where(
                    Instance.sop_instance_uid.in_(chunk)
                )
            )
            stored_classes.update({row[0]: row[1] for row in rows})
    result = CommitmentResult()
    for reference in references:
        stored_class = stored_classes.get(reference.sop_instance_uid)
        if stored_class is None:
            result.failed.append((reference, FailureReason.NO_SUCH_OBJECT_INSTANCE))
        elif stored_class != reference.sop_class_uid:
            result.failed.append((reference, FailureReason.CLASS_INSTANCE_CONFLICT))
        else:
            result.committed.append(reference)
    return result


def build_event_information(
    transaction_uid: str, result: CommitmentResult, retrieve_ae_title: str
) -> tuple[int, Dataset]:
    """Return the Event Type ID and Event Information of the N-EVENT-REPORT (PS3.4 J.3.3)."""
    information = Dataset()
    information.TransactionUID = transaction_uid
    information.RetrieveAETitle = retrieve_ae_title
    if result.committed:
        information.ReferencedSOPSequence = [
            _reference_item(reference) for reference in result.committed
        ]
    if not result.failed:
        return EVENT_REQUEST_SUCCESSFUL, information
    failed_items = []
    for reference, reason in result.failed:
        item = _reference_item(reference)
        item.FailureReason = int(reason)
        failed_items.append(item)
    information.FailedSOPSequence = failed_items
    return EVENT_FAILURES_EXIST, information


def _reference_item(reference: ReferencedInstance) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uid
    return item


def _sent_n_action_response_ids(pdu: P_DATA_TF) -> Iterable[int]:
    """Yield Message ID Being Responded To of each N-ACTION-RSP command in ``pdu``."""
    for item in pdu.presentation_data_value_items:
        value = item.presentation_data_value or b""
        if not value or value[0] & _COMMAND_LAST_FRAGMENT != _COMMAND_LAST_FRAGMENT:
            continue
        try:
            command = read_dataset(BytesIO(value[1:]), is_implicit_VR=True, is_little_endian=True)
            command_field = command.get("CommandField")
            message_id = command.get("MessageIDBeingRespondedTo")
        except Exception as error:  # pydicom raises many types on undecodable data
            logger.debug("skipping a command fragment that does not decode: %s", error)
            continue
        if command_field == _N_ACTION_RSP and message_id is not None:
            yield int(message_id)


class StorageCommitmentSCP:
    """Responds to Storage Commitment N-ACTION requests and delivers their reports."""

    def __init__(self, settings: Settings, database: Database, access: AccessControl) -> None:
        self.settings = settings
        self.database = database
        self.access = access
        self._lock = threading.Lock()
        self._awaiting_response: weakref.WeakKeyDictionary[Association, list[CommitmentRequest]] = (
            weakref.WeakKeyDictionary()
        )
        self._message_ids = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()

    # -- pynetdicom event handlers ------------------------------------------------------

    def handle_n_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        """Accept a Storage Commitment request and start its report (PS3.4 J.3.2).

        Returns
        -------
        tuple
            The status and no Action Reply:

            * ``0x0000`` Success: the request is accepted; the result follows by
              N-EVENT-REPORT.
            * ``0x0112`` No Such SOP Instance: the Requested SOP Instance UID is not
              the well-known instance 1.2.840.10008.1.20.1.1.
            * ``0x0115`` Invalid Argument Value: the Action Information cannot be
              decoded, or lacks a valid Transaction UID, Referenced SOP Sequence,
              Referenced SOP Class UID or Referenced SOP Instance UID. PS3.7 gives
              this status no Error Comment, so the reason is only logged.
            * ``0x0123`` No Such Action: the Action Type ID is not 1.
            * ``0x0124`` Refused: Not Authorized: the peer list does not grant the
              calling AE title the ``commit`` permission (logged; no Error Comment).
            * ``0x0110`` Processing Failure: an unexpected error, logged with its
              traceback.
        """
        association = event.assoc
        calling_ae_title = association.requestor.ae_title
        try:
            request = cast(N_ACTION, event.request)
            if not self.access.is_allowed(event, Permission.COMMIT):
                return NOT_AUTHORIZED, None
            if str(request.RequestedSOPInstanceUID or "") != STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE:
                logger.warning(
                    "Storage Commitment N-ACTION from %s names SOP Instance %r instead of %s",
                    calling_ae_title,
                    str(request.RequestedSOPInstanceUID or ""),
                    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
                )
                return NO_SUCH_SOP_INSTANCE, None
            if event.action_type != REQUEST_STORAGE_COMMITMENT:
                logger.warning(
                    "Storage Commitment N-ACTION from %s has Action Type ID %r; only %d exists",
                    calling_ae_title,
                    event.action_type,
                    REQUEST_STORAGE_COMMITMENT,
                )
                return NO_SUCH_ACTION, None
            try:
                transaction_uid, references = parse_action_information(event.action_information)
            except InvalidActionInformationError as error:
                logger.warning(
                    "invalid Storage Commitment N-ACTION from %s: %s", calling_ae_title, error
                )
                return INVALID_ARGUMENT_VALUE, None
            except Exception as error:  # pydicom raises many types on undecodable data
                logger.warning(
                    "cannot decode the Storage Commitment N-ACTION from %s: %s",
                    calling_ae_title,
                    error,
                )
                return INVALID_ARGUMENT_VALUE, None
            commitment = CommitmentRequest(
                transaction_uid=transaction_uid,
                references=references,
                calling_ae_title=calling_ae_title,
                association=association,
                message_id=int(request.MessageID or 0),
            )
            with self._lock:
                self._awaiting_response.setdefault(association, []).append(commitment)
            self._start_report(commitment)
        except Exception:
            logger.exception("Storage Commitment N-ACTION from %s failed", calling_ae_title)
            return PROCESSING_FAILURE, None
        logger.info(
            "accepted Storage Commitment transaction %s from %s for %d instance(s)",
            commitment.transaction_uid,
            calling_ae_title,
            len(commitment.references),
        )
        return SUCCESS, None

    def handle_pdu_sent(self, event: Event) -> None:
        """Release the reports whose N-ACTION response has just been sent.

        Bound to ``EVT_PDU_SENT``, which pynetdicom triggers after writing a PDU to the
        socket, so a report released here can never overtake its N-ACTION response.
        """
        association = event.assoc
        with self._lock:
            waiting = self._awaiting_response.get(association)
        pdu = getattr(event, "pdu", None)
        if not waiting or not isinstance(pdu, P_DATA_TF):
            return
        for message_id in _sent_n_action_response_ids(pdu):
            with self._lock:
                for commitment in list(waiting):
                    if commitment.message_id == message_id:
                        waiting.remove(commitment)
                        commitment.response_sent.set()

    # -- reports --------------------------------------------------------------------------

    def stop(self, timeout_s: float = 10.0) -> None:
        """Abandon undelivered reports, interrupt retries and wait for report threads."""
        self._stopping.set()
        with self._lock:
            threads = list(self._threads)
            waiting = [item for items in self._awaiting_response.values() for item in items]
        for commitment in waiting:
            commitment.response_sent.set()
        for thread in threads:
            thread.join(timeout_s)

    def _forget(self, commitment: CommitmentRequest) -> None:
        """Drop ``commitment`` from the requests whose N-ACTION response is awaited."""
        with self._lock:
            waiting = self._awaiting_response.get(commitment.association, [])
            if commitment in waiting:
                waiting.remove(commitment)
            if not waiting:
                self._awaiting_response.pop(commitment.association, None)

    def _start_report(self, commitment: CommitmentRequest) -> None:
        thread = threading.Thread(
            target=self._report,
            args=(commitment,),
            name=f"commitment-{commitment.transaction_uid[-12:]}",
            daemon=True,
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _report(self, commitment: CommitmentRequest) -> None:
        try:
            result = check_commitment(self.database, commitment.references)
        except Exception:
            logger.exception(
                "checking Storage Commitment transaction %s failed; reporting every "
                "instance as a processing failure",
                commitment.transaction_uid,
            )
            result = CommitmentResult(
                failed=[
                    (reference, FailureReason.PROCESSING_FAILURE)
                    for reference in commitment.references
                ]
            )
        try:
            event_type, information = build_event_information(
                commitment.transaction_uid, result, self.settings.ae_title
            )
            route = self._deliver(commitment, event_type, information)
            if route is None:
                return
            logger.info(
                "Storage Commitment transaction %s from %s: %d committed, %d failed; "
                "N-EVENT-REPORT sent on %s",
                commitment.transaction_uid,
                commitment.calling_ae_title,
                len(result.committed),
                len(result.failed),
                route,
            )
        except Exception:
            logger.exception(
                "delivering Storage Commitment transaction %s failed", commitment.transaction_uid
            )
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _deliver(
        self, commitment: CommitmentRequest, event_type: int, information: Dataset
    ) -> str | None:
        """Send the report; return where it went, or ``None`` when it was not delivered."""
        response_sent = commitment.response_sent.wait(RESPONSE_SENT_TIMEOUT_S)
        self._forget(commitment)
        if response_sent and not self._stopping.wait(SAME_ASSOCIATION_GRACE_S):
            association = commitment.association
            idle = association.dimse.peek_msg() == (None, None)
            if idle and self._send_on_association(
                association, commitment, event_type, information, SAME_ASSOCIATION_TIMEOUT_S
            ):
                return "the requestor's association"
        if self._stopping.is_set():
            logger.warning(
                "Storage Commitment transaction %s from %s was not reported: the gateway "
                "stopped first",
                commitment.transaction_uid,
                commitment.calling_ae_title,
            )
            return None
        peer = self.access.peers.get(commitment.calling_ae_title)
        if peer is None or peer.address is None:
            logger.error(
                "cannot deliver Storage Commitment transaction %s: its association has "
                "ended and AE %s has no host and port in the peer list; add them to its "
                "entry in NOCTIS_DIMSE_PEERS_FILE",
                commitment.transaction_uid,
                commitment.calling_ae_title,
            )
            return None
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                association = associate_with_peer(
                    self.settings,
                    peer,
                    [
                        build_context(
                            STORAGE_COMMITMENT_PUSH_MODEL,
                            [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                        )
                    ],
                    roles=[build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True)],
                )
            except PeerUnavailableError as error:
                logger.warning(
                    "Storage Commitment transaction %s: attempt %d of %d failed: %s",
                    commitment.transaction_uid,
                    attempt,
                    REPORT_ATTEMPTS,
                    error,
                )
            else:
                try:
                    if self._send_on_association(association, commitment, event_type, information):
                        return f"a new association to {peer_description(peer)}"
                finally:
                    if association.is_established:
                        association.release()
            if attempt < REPORT_ATTEMPTS and self._stopping.wait(REPORT_RETRY_DELAY_S):
                break
        logger.error(
            "giving up delivering Storage Commitment transaction %s to %s",
            commitment.transaction_uid,
            peer_description(peer),
        )
        return None

    def _send_on_association(
        self,
        association: Association,
        commitment: CommitmentRequest,
        event_type: int,
        information: Dataset,
        timeout_s: float | None = None,
    ) -> bool:
        """Send the report on ``association``; return whether the peer responded."""
        if not association.is_established:
            return False
        message_id = next(self._message_ids) % 0x10000 or 1
        previous_timeout = association.dimse_timeout
        if timeout_s is not None:
            association.dimse_timeout = min(timeout_s, self.settings.dimse_timeout_s)
        try:
            status, _ = association.send_n_event_report(
                information,
                event_type,
                STORAGE_COMMITMENT_PUSH_MODEL,
                STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
                msg_id=message_id,
            )
        except (RuntimeError, ValueError) as error:
            # The association ended meanwhile, or has no Storage Commitment context.
            logger.info(
                "could not send Storage Commitment transaction %s to %s: %s",
                commitment.transaction_uid,
                commitment.calling_ae_title,
                error,
            )
            return False
        finally:
            association.dimse_timeout = previous_timeout
        code: Any = status.get("Status")
        if code is None:
            return False
        if int(code) != SUCCESS:
            logger.warning(
                "AE %s returned status 0x%04X to the N-EVENT-REPORT of Storage Commitment "
                "transaction %s",
                commitment.calling_ae_title,
                int(code),
                commitment.transaction_uid,
            )
        # Any response means the report arrived, and a failure status would not change
        # on retry.
        return True
