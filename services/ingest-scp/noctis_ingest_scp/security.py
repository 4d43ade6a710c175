"""Access control: which associations are accepted and what each calling AE may do.

Two checks run at different times:

* When an A-ASSOCIATE-RQ arrives, :meth:`AccessControl.handle_association_request`
  may reject it with A-ASSOCIATE-RJ (PS3.8 9.3.4), result "rejected-permanent" and
  source "DICOM UL service-user". The reason is "called-AE-title-not-recognized" when
  ``NOCTIS_DIMSE_CHECK_CALLED_AE_TITLE`` is on and the called AE title is not ours. It
  is "calling-AE-title-not-recognized" when the calling AE title is not in the peer
  list and unknown peers have no permissions at all.
* Each DIMSE handler calls :meth:`AccessControl.is_allowed` before doing the work and
  returns 0124H Refused: Not Authorized when the peer list does not grant the
  operation to the calling AE title.

NOTE: AE titles are not authenticated; anyone who can reach the port can claim any
title. DICOM TLS with client certificates (``NOCTIS_DIMSE_TLS_CA_FILE``) is the way to
know who connects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from enum import IntEnum

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE

from noctis_common.settings import Settings
from noctis_ingest_scp.peers import PeerDirectory, Permission

logger = logging.getLogger(__name__)

# A-ASSOCIATE-RJ Result and Source values (PS3.8 9.3.4).
REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ Reason/Diag. values for source "DICOM UL service-user" (PS3.8 9.3.4)."""

    NO_REASON_GIVEN = 0x01
    CALLING_AE_TITLE_NOT_RECOGNIZED = 0x03
    CALLED_AE_TITLE_NOT_RECOGNIZED = 0x07


# The DIMSE operation named in log lines for each permission.
OPERATION_NAMES = {
    Permission.ECHO: "C-ECHO",
    Permission.STORE: "C-STORE",
    Permission.QUERY: "C-FIND",
    Permission.RETRIEVE: "C-MOVE/C-GET",
    Permission.COMMIT: "Storage Commitment N-ACTION",
}


class AccessControl:
    """Applies the called AE title check and the peer list's permissions."""

    def __init__(self, settings: Settings, peers: PeerDirectory) -> None:
        self.ae_title = settings.ae_title.strip(" ")
        self.check_called_ae_title = settings.dimse_check_called_ae_title
        self.peers = peers
        # Refusals already logged, so an association refused a thousand C-STOREs logs once.
        self._logged_refusals: weakref.WeakKeyDictionary[Association, set[Permission]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessControl:
        """Load the peer list; raises :class:`~noctis_ingest_scp.peers.PeerConfigError`."""
        return cls(settings, PeerDirectory.from_settings(settings))

    def rejection_reason(self, called_ae_title: str, calling_ae_title: str) -> RejectReason | None:
        """Return why an association between these AE titles is rejected, or ``None``."""
        if self.check_called_ae_title and called_ae_title.strip(" ") != self.ae_title:
            return RejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED
        if not self.peers.is_known(calling_ae_title) and not self.peers.unknown_peer_permissions:
            return RejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED
        return None

    def handle_association_request(self, event: Event) -> None:
        """Reject an A-ASSOCIATE-RQ that :meth:`rejection_reason` does not accept.

        Bound to ``EVT_REQUESTED``, which pynetdicom 3.0 triggers before it negotiates
        the presentation contexts; an association rejected here is never negotiated.
        pynetdicom only logs exceptions of this handler, so an unexpected error rejects
        the association instead of letting it through.
        """
        association = event.assoc
        request = association.requestor.primitive
        if not isinstance(request, A_ASSOCIATE):
            return
        called_ae_title = str(request.called_ae_title or "")
        calling_ae_title = str(request.calling_ae_title or "")
        try:
            reason = self.rejection_reason(called_ae_title, calling_ae_title)
        except Exception:
            logger.exception("checking the association request from %r failed", calling_ae_title)
            reason = RejectReason.NO_REASON_GIVEN
        if reason is None:
            return
        logger.warning(
            "rejecting association from %r to %r at %s: %s",
            calling_ae_title,
            called_ae_title,
            _peer_address(association),
            _reason_text(reason, self.ae_title),
        )
        _reject(association, calling_ae_title, reason)

    def is_allowed(self, event: Event, permission: Permission) -> bool:
        """Return whether the calling AE title of ``event`` has ``permission``.

        Logs the first refusal of each permission per association at WARNING.
        """
        association = event.assoc
        calling_ae_title = association.requestor.ae_title
        if self.peers.is_allowed(calling_ae_title, permission):
            return True
        with self._lock:
            logged = self._logged_refusals.setdefault(association, set())
            first = permission not in logged
            logged.add(permission)
        if first:
            logger.warning(
                "refusing %s from %r at %s: the peer list does not grant it %r; "
                "add the permission to its entry in NOCTIS_DIMSE_PEERS_FILE",
                OPERATION_NAMES[permission],
                calling_ae_title,
                _peer_address(association),
                permission.value,
            )
        return False


def not_authorized_comment(calling_ae_title: str, permission: Permission) -> str:
    """Return the Error Comment of a 0124H response (at most 64 characters once fitted)."""
    return f"AE {calling_ae_title.strip()} lacks the {permission.value} permission"


def _reject(association: Association, calling_ae_title: str, reason: RejectReason) -> None:
    """Send A-ASSOCIATE-RJ the way pynetdicom 3.0 does for its own rejections."""
    # The association summary line names the requestor by this title.
    with contextlib.suppress(ValueError):
        association.requestor.ae_title = calling_ae_title
    association.acse.send_reject(REJECTED_PERMANENT, SOURCE_SERVICE_USER, int(reason))
    evt.trigger(association, evt.EVT_REJECTED, {})
    association.kill()


def _reason_text(reason: RejectReason, ae_title: str) -> str:
    if reason is RejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED:
        return f"the called AE title is not {ae_title!r}"
    if reason is RejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED:
        return (
            "the calling AE title is not in the peer list and "
            "NOCTIS_DIMSE_UNKNOWN_PEER_PERMISSIONS grants nothing"
        )
    return "the request could not be checked; the log above has the error"


def _peer_address(association: Association) -> str:
    requestor = association.requestor
    if requestor.address_info is None:
        return "(unknown address)"
    return f"{requestor.address}:{requestor.port}"
