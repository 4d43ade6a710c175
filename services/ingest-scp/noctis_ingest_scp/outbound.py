"""Associations that Noctis opens to peers of the peer list, as association requestor.

Storage Commitment opens one to deliver an N-EVENT-REPORT when the requestor's own
association has ended, and forwarding opens one per batch of C-STOREs. Both use the
gateway's AE title, its timeouts, and DICOM TLS for peers marked ``"tls": true``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import DimseServiceType
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from noctis_common.settings import Settings
from noctis_common.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctis_ingest_scp.peers import PeerAE
from noctis_ingest_scp.tls import client_ssl_context

logger = logging.getLogger(__name__)


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
        _send_without_delay(association)
        _return_responses_taken_by_reactor(association)
        return association
    if association.is_rejected:
        outcome = "rejected the association"
    elif association.is_aborted:
        outcome = "aborted the association or could not be reached"
    else:
        outcome = "did not respond to the association request"
    raise PeerUnavailableError(f"{peer_description(peer)} {outcome}")


def _send_without_delay(association: Association) -> None:
    """Turn off Nagle's algorithm on an outbound association's socket.

    Each C-STORE request is a command PDU followed by dataset PDUs. With Nagle's
    algorithm on, a small PDU waits for the peer's delayed ACK of the previous one,
    which adds tens of milliseconds to every instance sent.
    """
    transport = association.dul.socket
    raw_socket = transport.socket if transport is not None else None
    if raw_socket is None:
        return
    try:
        raw_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as error:
        logger.warning(
            "could not set TCP_NODELAY towards %s: %s", association.acceptor.ae_title, error
        )


def _return_responses_taken_by_reactor(association: Association) -> None:
    """Put DIMSE responses that the association's reactor thread took back in its queue.

    pynetdicom 3.0 pauses the reactor while ``send_c_store`` waits for its response,
    but the pause can take effect one loop too late. A response that arrives in that
    window reaches the reactor, which logs "Received unexpected C-STORE service
    message" and drops it. The sender then waits ``NOCTIS_DIMSE_TIMEOUT_S`` and aborts.
    With fast peers this happened within a few hundred C-STOREs on loopback. Returned
    to the queue, the response reaches ``send_c_store``, which is blocked reading it.

    NOTE: this replaces ``Association._serve_request`` and reads ``dimse.msg_queue``,
    internals of pynetdicom 3.0, which the package pins.
    """
    serve_request: Callable[[DimseServiceType, int], None] = association._serve_request

    def serve_or_return(message: DimseServiceType, context_id: int) -> None:
        if message.is_valid_response:
            association.dimse.msg_queue.put((context_id, message))
            return
        serve_request(message, context_id)

    setattr(association, "_serve_request", serve_or_return)  # noqa: B010 (a method is replaced)
