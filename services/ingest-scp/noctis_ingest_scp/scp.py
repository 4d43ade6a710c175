"""The DIMSE gateway: a Verification and Storage SCP built on pynetdicom.

The SCP listens on ``NOCTIS_DIMSE_HOST:NOCTIS_DIMSE_PORT`` as ``NOCTIS_AE_TITLE``,
accepts any calling and called AE title, and stores every C-STORE dataset through
:meth:`Archive.store_part10`, byte for byte as received. pynetdicom streams each
dataset into a file in the archive's spool while it arrives, so a large object is
never held in memory.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Sequence

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from noctis_common.context import ArchiveContext
from noctis_common.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from noctis_ingest_scp.associations import AssociationRegistry
from noctis_ingest_scp.handlers import handle_c_echo, handle_c_store
from noctis_ingest_scp.presentation import supported_presentation_contexts

logger = logging.getLogger(__name__)

# On stop, open associations get this long to finish before they are aborted, and
# handlers still storing after the abort get as long again to return.
STOP_GRACE_PERIOD_S = 5.0


class StorageSCP:
    """The DIMSE gateway: C-ECHO and C-STORE on ``NOCTIS_DIMSE_PORT``."""

    def __init__(self, context: ArchiveContext) -> None:
        self.context = context
        self.registry = AssociationRegistry()
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._previous_tempdir: str | None = None
        self._spool_tempdir: str | None = None

    @property
    def port(self) -> int:
        """Return the TCP port the SCP listens on, once started."""
        if self._server is None:
            raise RuntimeError("the SCP is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def active_associations(self) -> list[Association]:
        """Return the associations being served now; empty when the SCP is stopped."""
        server = self._server
        return server.active_associations if server is not None else []

    def start(self) -> None:
        """Start listening in background threads and return.

        Raises :class:`OSError` when the port cannot be bound. Calling ``start`` on a
        started SCP does nothing.
        """
        with self._lock:
            if self._server is not None:
                return
            settings = self.context.settings
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
                (evt.EVT_RELEASED, registry.handle_released),
                (evt.EVT_ABORTED, registry.handle_aborted),
                (evt.EVT_REJECTED, registry.handle_rejected),
                (evt.EVT_C_ECHO, handle_c_echo, [registry]),
                (evt.EVT_C_STORE, handle_c_store, [self.context.archive, registry]),
            ]
            try:
                self._server = ae.start_server(
                    (settings.dimse_host, settings.dimse_port),
                    block=False,
                    evt_handlers=handlers,
                    contexts=supported_presentation_contexts(),
                )
            except BaseException:
                self._restore_tempdir()
                raise
            logger.info(
                "DIMSE gateway %s listening on %s:%d (at most %d associations)",
                settings.ae_title,
                settings.dimse_host,
                self.port,
                settings.dimse_max_associations,
            )

    def stop(self) -> None:
        """Stop listening and end every association.

        Open associations get :data:`STOP_GRACE_PERIOD_S` to be released by their
        peers; the rest are aborted. An instance whose C-STORE is aborted this way may
        be stored without its sender having seen the response. Calling ``stop`` on a
        stopped SCP does nothing.
        """
        with self._lock:
            server = self._server
            if server is None:
                return
            self._server = None
            server.shutdown()
            # Only established associations can have a handler running. A connection
            # still waiting for its A-ASSOCIATE-RQ (a port probe, say) keeps its thread
            # until the ACSE timeout but stores nothing, so stop() does not wait for it.
            established = [item for item in server.active_associations if item.is_established]
            _join_all(established, STOP_GRACE_PERIOD_S)
            remaining = [item for item in server.active_associations if item.is_established]
            for association in remaining:
                association.abort()
            _join_all(remaining, STOP_GRACE_PERIOD_S)
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
        self._previous_tempdir = tempfile.tempdir
        self._spool_tempdir = str(self.context.archive.spool_dir)
        tempfile.tempdir = self._spool_tempdir

    def _restore_tempdir(self) -> None:
        if self._spool_tempdir is not None and tempfile.tempdir == self._spool_tempdir:
            tempfile.tempdir = self._previous_tempdir
        self._spool_tempdir = None


def _join_all(threads: Sequence[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
