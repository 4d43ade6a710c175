"""Associations that Noctis opens to peers of the peer list, as association requestor.

Storage Commitment opens one to deliver an N-EVENT-REPORT when the requestor's own
association has ended, and forwarding opens one per batch of C-STOREs. Both use the
gateway's AE title, its timeouts, and DICOM TLS for peers marked ``"tls": true``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from noctis_common.settings import Settings
from noctis_common.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctis_ingest_scp.peers import PeerAE
from noctis_ingest_scp.tls import client_ssl_context


class PeerUnavailableError(Exception):
    """No association with a peer could be established."""


def peer_description(peer: PeerAE) -> str:
    """Return ``AE at host:port`` for log lines."""
    address = peer.address
    where = f"{address[0]}:{address[1]}" if address else "(no address)"
    return f"{peer.ae_title} at {where}{' (TLS)' if peer.tls else ''}"


def associate_with_peer(
    settings: Settings,
    peer: PeerAE,
    contexts: Sequence[PresentationContext],
    roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
) -> Association:
    """Open an association to ``peer`` proposing ``contexts``; return it established.

    Raises :class:`PeerUnavailableError` when the peer has no address in the peer
    list, refuses the connection, rejects or aborts the association, or does not
    respond within ``NOCTIS_DIMSE_ACSE_TIMEOUT_S``.
    """
    address = peer.address
    if address is None:
        raise PeerUnavailableError(
            f"AE {peer.ae_title} has no host and port in the peer list; add them to its "
            "entry in NOCTIS_DIMSE_PEERS_FILE"
        )
    ae = AE(ae_title=settings.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.acse_timeout = settings.dimse_acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.dimse_network_timeout_s
    ae.connection_timeout = settings.dimse_acse_timeout_s
    ae.maximum_pdu_size = settings.dimse_max_pdu_bytes
    ae.requested_contexts = list(contexts)
    host, port = address
    tls_args = (client_ssl_context(settings), host) if peer.tls else None
    association = ae.associate(
        host, port, ae_title=peer.ae_title, ext_neg=list(roles) or None, tls_args=tls_args
    )
    if association.is_established:
        return association
    if association.is_rejected:
        outcome = "rejected the association"
    elif association.is_aborted:
        outcome = "aborted the association or could not be reached"
    else:
        outcome = "did not respond to the association request"
    raise PeerUnavailableError(f"{peer_description(peer)} {outcome}")
