"""The DIMSE gateway: a Verification and Storage SCP built on pynetdicom.

The SCP listens on ``NOCTIS_DIMSE_HOST:NOCTIS_DIMSE_PORT`` as ``NOCTIS_AE_TITLE``, and
with DICOM TLS on ``NOCTIS_DIMSE_TLS_PORT`` when that is not 0. The peer list decides
which associations are accepted and what each calling AE may do
(:mod:`noctis_ingest_scp.security`). Every C-STORE dataset is stored through
:meth:`Archive.store_part10`, byte for byte as received. The same process handles
Storage Commitment requests (:mod:`noctis_ingest_scp.commitment`), C-FIND, C-MOVE and
C-GET (:mod:`noctis_ingest_scp.qr_service`) and, when routing rules are set, forwards
stored instances (:mod:`noctis_ingest_scp.forwarding`).
pynetdicom streams each dataset into a file in the archive's spool while it arrives, so
a large object is never held in memory.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Sequence

from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from noctis_common.context import ArchiveContext
from noctis_common.dicom.part10 import received_file_meta, write_received_file_meta
from noctis_common.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctis_ingest_scp.associations import AssociationRegistry
from noctis_ingest_scp.commitment import StorageCommitmentSCP
from noctis_ingest_scp.forwarding import Forwarder
from noctis_ingest_scp.handlers import handle_c_echo, handle_c_store
from noctis_ingest_scp.presentation import supported_presentation_contexts
from noctis_ingest_scp.qr_service import QueryRetrieveSCP
from noctis_ingest_scp.reactors import EventDrivenReactors, install_clock
from noctis_ingest_scp.security import AccessControl
from noctis_ingest_scp.tls import server_ssl_context

logger = logging.getLogger(__name__)

# On stop, open associations get this long to finish before they are aborted, unless
# the caller passes its own grace period (NOCTIS_DIMSE_SHUTDOWN_TIMEOUT_S on SIGTERM).
# Handlers still storing after the abort get this long again to return.
STOP_GRACE_PERIOD_S = 5.0
# Seconds between two checks of the open associations while stop() waits for them.
STOP_POLL_INTERVAL_S = 0.05


class StorageSCP:
    """The DIMSE gateway: C-ECHO and C-STORE on ``NOCTIS_DIMSE_PORT``."""

    def __init__(self, context: ArchiveContext) -> None:
        self.context = context
        self.registry = AssociationRegistry()
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._tls_server: ThreadedAssociationServer | None = None
        self.commitment: StorageCommitmentSCP | None = None
        self.forwarder: Forwarder | None = None
        self._previous_tempdir: str | None = None
        self._spool_tempdir: str | None = None

    @property
    def port(self) -> int:
        """Return the TCP port the SCP listens on, once started."""
        if self._server is None:
            raise RuntimeError("the SCP is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """Return the TCP port of the TLS listener, or ``None`` when TLS is off."""
        server = self._tls_server
        return int(server.server_address[1]) if server is not None else None

    @property
    def active_associations(self) -> list[Association]:
        """Return the associations being served now; empty when the SCP is stopped."""
        servers = [server for server in (self._server, self._tls_server) if server is not None]
        return [association for server in servers for association in server.active_associations]

    def start(self) -> None:
        """Start listening in background threads and return.

        Raises :class:`OSError` when a port cannot be bound, and
        :class:`~noctis_ingest_scp.peers.PeerConfigError`,
        :class:`~noctis_ingest_scp.tls.TLSConfigError` or
        :class:`~noctis_ingest_scp.forwarding_rules.ForwardRulesError` when the peer
        list, the TLS files or the routing rules are invalid. Calling ``start`` on a
        started SCP does nothing.
        """
        with self._lock:
            if self._server is not None:
                return
            settings = self.context.settings
            access = AccessControl.from_settings(settings)
            query_retrieve = QueryRetrieveSCP(self.context, access)
            ssl_context = server_ssl_context(settings)
            # A restarted SCP keeps its forwarder: the event subscription cannot be undone.
            forwarder = self.forwarder or Forwarder.from_settings(self.context, access.peers)
            commitment = StorageCommitmentSCP(settings, self.context.database, access)
            self._use_archive_spool_for_received_datasets()

            ae = AE(ae_title=settings.ae_title)
            ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
            ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
            ae.maximum_associations = settings.dimse_max_associations
            ae.maximum_pdu_size = settings.dimse_max_pdu_bytes
            ae.acse_timeout = settings.dimse_acse_timeout_s
            ae.dimse_timeout = settings.dimse_timeout_s
            ae.network_timeout = settings.dimse_network_timeout_s

            registry = self.registry
            handlers: list[EventHandlerType] = [
                (evt.EVT_CONN_OPEN, registry.handle_connection_open),
                (evt.EVT_CONN_CLOSE, registry.handle_connection_close),
                (evt.EVT_ACSE_SENT, registry.handle_acse_sent),
                (evt.EVT_RELEASED, registry.handle_released),
                (evt.EVT_ABORTED, registry.handle_aborted),
                (evt.EVT_REJECTED, registry.handle_rejected),
                (evt.EVT_REQUESTED, access.handle_association_request),
                (evt.EVT_C_ECHO, handle_c_echo, [registry, access]),
                (
                    evt.EVT_C_STORE,
                    handle_c_store,
                    [self.context.archive, registry, access, self.context.audit],
                ),
                (evt.EVT_N_ACTION, commitment.handle_n_action),
                (evt.EVT_PDU_SENT, commitment.handle_pdu_sent),
                (evt.EVT_C_FIND, query_retrieve.handle_c_find),
                (evt.EVT_CONN_OPEN, query_retrieve.handle_connection_open),
            ]
            if settings.dimse_event_driven_reactors and install_clock():
                # Bound after the Query/Retrieve dispatcher, so that the reactors see
                # every request it serves, C-MOVE and C-GET included, as served.
                reactors = EventDrivenReactors()
                handlers += [
                    (evt.EVT_CONN_OPEN, reactors.handle_connection_open),
                    (evt.EVT_CONN_CLOSE, reactors.handle_connection_close),
                ]
            try:
                self._server = ae.start_server(
                    (settings.dimse_host, settings.dimse_port),
                    block=False,
                    evt_handlers=handlers,
                    contexts=supported_presentation_contexts(),
                )
                if ssl_context is not None:
                    self._tls_server = ae.start_server(
                        (settings.dimse_host, settings.dimse_tls_port),
                        block=False,
                        evt_handlers=handlers,
                        contexts=supported_presentation_contexts(),
                        ssl_context=ssl_context,
                    )
            except BaseException:
                if self._server is not None:
                    self._server.shutdown()
                    self._server = None
                self._restore_tempdir()
                raise
            self.commitment = commitment
            self.forwarder = forwarder
            if forwarder is not None:
                forwarder.start()
            logger.info(
                "DIMSE gateway %s listening on %s:%d (at most %d associations)",
                settings.ae_title,
                settings.dimse_host,
                self.port,
                settings.dimse_max_associations,
            )
            if self.tls_port is not None:
                logger.info(
                    "DICOM TLS listening on %s:%d (%s)",
                    settings.dimse_host,
                    self.tls_port,
                    "client certificates required"
                    if settings.dimse_tls_ca_file
                    else "no client certificates",
                )

    def stop(self, grace_period_s: float | None = None) -> None:
        """Stop listening and end every association.

        New connections are refused at once. Open associations get ``grace_period_s``
        seconds (default :data:`STOP_GRACE_PERIOD_S`) to be released by their peers,
        and each C-STORE they send meanwhile is stored and answered as usual. The rest
        are aborted then. An instance whose C-STORE is aborted this way may be stored
        without its sender having seen the response. Calling ``stop`` on a stopped SCP
        does nothing.
        """
        if grace_period_s is None:
            grace_period_s = STOP_GRACE_PERIOD_S
        with self._lock:
            server = self._server
            if server is None:
                return
            servers = [server] if self._tls_server is None else [server, self._tls_server]
            self._server = self._tls_server = None
            for listener in servers:
                listener.shutdown()
            open_count = len(_established_associations(servers))
            if open_count:
                logger.info(
                    "DIMSE gateway stopped listening; waiting up to %g s for %d open "
                    "association(s) to be released",
                    grace_period_s,
                    open_count,
                )
            remaining = _wait_for_release(servers, grace_period_s)
            for association in remaining:
                association.abort()
            _join_all(remaining, STOP_GRACE_PERIOD_S)
            if self.commitment is not None:
                self.commitment.stop()
            if self.forwarder is not None:
                self.forwarder.stop()
            self._restore_tempdir()
            logger.info(
                "DIMSE gateway stopped; %d association(s) aborted at shutdown", len(remaining)
            )

    def _use_archive_spool_for_received_datasets(self) -> None:
        """Make pynetdicom write received datasets into the archive's spool folder.

        pynetdicom creates the files with ``tempfile.NamedTemporaryFile`` in the default
        temporary folder. Pointing that folder at the spool keeps the files on the
        object store's filesystem and lets :meth:`Archive.recover` delete what a killed
        process left behind.

        NOTE: ``tempfile.tempdir`` and pynetdicom's ``_config`` are process-wide, so other
        temporary files of this process also land in the spool, and two SCPs in one
        process share the spool of whichever started last.
        """
        _config.STORE_RECV_CHUNKED_DATASET = True
        # pynetdicom writes File Meta Information ahead of each dataset it spools, with
        # the functions it imported as create_file_meta and write_file_meta_info.
        # Writing Noctis's, with room for the sender's AE title, lets the archive store
        # the spool file in place instead of copying it behind new File Meta
        # Information. Should a pynetdicom release stop using these names, the archive
        # finds File Meta of another length and stores a copy, as it does for STOW-RS.
        dimse_messages.create_file_meta = received_file_meta  # type: ignore[attr-defined,assignment]
        dimse_messages.write_file_meta_info = write_received_file_meta  # type: ignore[attr-defined,assignment]
        self._previous_tempdir = tempfile.tempdir
        self._spool_tempdir = str(self.context.archive.spool_dir)
        tempfile.tempdir = self._spool_tempdir

    def _restore_tempdir(self) -> None:
        if self._spool_tempdir is not None and tempfile.tempdir == self._spool_tempdir:
            tempfile.tempdir = self._previous_tempdir
        self._spool_tempdir = None


def _established_associations(servers: Sequence[ThreadedAssociationServer]) -> list[Association]:
    """Return the established associations of ``servers``.

    Only established associations can have a handler running. A connection still
    waiting for its A-ASSOCIATE-RQ (a port probe, say) keeps its thread until the ACSE
    timeout but stores nothing, so stop() does not wait for it.
    """
    associations = [item for server in servers for item in server.active_associations]
    return [item for item in associations if item.is_established]


def _wait_for_release(
    servers: Sequence[ThreadedAssociationServer], timeout_s: float
) -> list[Association]:
    """Wait until no association is established or ``timeout_s`` passed; return the rest.

    The list is read again on each pass, so an association whose negotiation completed
    after the listener closed is waited for too.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        established = _established_associations(servers)
        if not established or time.monotonic() >= deadline:
            return established
        time.sleep(STOP_POLL_INTERVAL_S)


def _join_all(threads: Sequence[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
