"""The Query/Retrieve SCP: C-FIND, C-MOVE and C-GET over one archive context (PS3.4 C).

C-FIND runs through pynetdicom's ``EVT_C_FIND`` handler. C-MOVE and C-GET do not use
pynetdicom's ``EVT_C_MOVE`` and ``EVT_C_GET`` handlers, for two reasons:

- those handlers yield decoded datasets, which pynetdicom re-encodes, so a retrieved
  instance would not be sent byte for byte in its stored transfer syntax;
- a C-MOVE handler cannot refuse a request (not authorized, invalid Identifier)
  without pynetdicom first opening the association to the Move Destination.

So each association gets a request dispatcher that sends C-MOVE and C-GET requests
of the supported models to :func:`perform_c_move` and :func:`perform_c_get`, and every
other request to pynetdicom as before.

NOTE: the dispatcher replaces ``Association._serve_request`` on each accepted
association and sets ``Association._is_paused`` as that method does. Both are
internals of pynetdicom 3.0, which the package pins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE, DimseServiceType
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from noctis_common.context import ArchiveContext
from noctis_ingest_scp.qr_find import FindResponse, handle_c_find
from noctis_ingest_scp.qr_get import perform_c_get
from noctis_ingest_scp.qr_models import GET_SOP_CLASS_UIDS, MOVE_SOP_CLASS_UIDS
from noctis_ingest_scp.qr_move import perform_c_move
from noctis_ingest_scp.qr_retrieve import RetrieveResponder, count_retrieve_request
from noctis_ingest_scp.qr_statuses import UNABLE_TO_PROCESS
from noctis_ingest_scp.security import AccessControl

logger = logging.getLogger(__name__)

ServeRequest = Callable[[DimseServiceType, int], None]


def _accepted_context(association: Association, context_id: int) -> PresentationContext | None:
    for context in association.accepted_contexts:
        if context.context_id == context_id:
            return context
    return None


def _is_retrieve_request(message: DimseServiceType) -> bool:
    if isinstance(message, C_MOVE):
        return str(message.AffectedSOPClassUID) in MOVE_SOP_CLASS_UIDS
    if isinstance(message, C_GET):
        return str(message.AffectedSOPClassUID) in GET_SOP_CLASS_UIDS
    return False


class QueryRetrieveSCP:
    """C-FIND, C-MOVE and C-GET of the Patient Root and Study Root models."""

    def __init__(self, archive: ArchiveContext, access: AccessControl) -> None:
        self.archive = archive
        self.access = access

    def handle_c_find(self, event: Event) -> Iterator[FindResponse]:
        """Respond to a C-FIND request; see :func:`noctis_ingest_scp.qr_find.handle_c_find`."""
        return handle_c_find(
            event,
            self.archive.database,
            self.access,
            self.archive.settings.ae_title,
            self.archive.audit,
        )

    def handle_connection_open(self, event: Event) -> None:
        """Install the C-MOVE and C-GET dispatcher on a newly accepted association.

        pynetdicom reports the connection before the association's thread starts, so
        no request can arrive before the dispatcher is in place.
        """
        association = event.assoc
        serve_other_requests: ServeRequest = association._serve_request

        def serve_request(message: DimseServiceType, context_id: int) -> None:
            if _is_retrieve_request(message):
                self.serve_retrieve_request(association, message, context_id, serve_other_requests)
            else:
                serve_other_requests(message, context_id)

        setattr(association, "_serve_request", serve_request)  # noqa: B010 (a method is replaced)

    def serve_retrieve_request(
        self,
        association: Association,
        message: DimseServiceType,
        context_id: int,
        serve_other_requests: ServeRequest,
    ) -> None:
        """Respond to one C-MOVE or C-GET request; no exception leaves this method."""
        context = _accepted_context(association, context_id)
        if context is None or not isinstance(message, C_MOVE | C_GET):
            serve_other_requests(message, context_id)  # pynetdicom aborts on a bad context
            return
        if not message.is_valid_request:
            serve_other_requests(message, context_id)  # pynetdicom logs and ignores it
            return
        # As pynetdicom does around a service: drop C-CANCELs that came before this
        # request, and mark the reactor paused so that send_c_store() may run on this
        # association from this thread.
        association.dimse.cancel_req = {}
        association._is_paused = True
        try:
            if isinstance(message, C_MOVE):
                perform_c_move(
                    association, message, context, archive=self.archive, access=self.access
                )
            else:
                perform_c_get(
                    association, message, context, archive=self.archive, access=self.access
                )
        except Exception:
            logger.exception(
                "%s from %s failed with an unexpected error",
                "C-MOVE" if isinstance(message, C_MOVE) else "C-GET",
                association.requestor.ae_title,
            )
            self._send_processing_failure(association, message, context)
            command = "C-MOVE" if isinstance(message, C_MOVE) else "C-GET"
            count_retrieve_request(command, UNABLE_TO_PROCESS)
        finally:
            association._is_paused = False
            association.dimse.cancel_req = {}

    @staticmethod
    def _send_processing_failure(
        association: Association, message: C_MOVE | C_GET, context: PresentationContext
    ) -> None:
        if not association.is_established:
            return
        try:
            RetrieveResponder(association, message, context).send_refusal(
                UNABLE_TO_PROCESS, "internal error in the archive; its log has the details"
            )
        except Exception:
            logger.exception("sending the failure response failed")
