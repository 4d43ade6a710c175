"""Per-association bookkeeping: socket options, counters, the summary log line, clean-up.

Every accepted TCP connection gets an :class:`AssociationRecord`, in which the C-STORE
and C-ECHO handlers count their outcomes. When the association ends (released,
aborted, rejected, or the connection closed), the registry logs one INFO line with the
calling AE title, the peer address and the counts, then drops the record.

Each association is traced in a ``DIMSE association`` span from its connection to its
end, the parent of the spans of its C-STORE requests. A connection closed without any
association request (a TCP health probe, a port scan) gets no span, so probes do not
fill the trace store.

pynetdicom ends an association without any of these events when its reader thread
fails, as it does on a C-STORE request without Affected SOP Class or Instance UID.
Each new connection therefore first finishes the records of such associations
(:meth:`AssociationRegistry.finish_ended`) and deletes the datasets they left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span, SpanKind
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE

from noctis_common.metrics import DIMSE_ACTIVE_ASSOCIATIONS, DIMSE_ASSOCIATIONS
from noctis_common.tracing import mark_failed, tracer
from noctis_ingest_scp.reactors import close_waits

logger = logging.getLogger(__name__)


@dataclass
class AssociationRecord:
    """Outcome counts and trace span of one association."""

    peer_address: str
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    echoes: int = 0
    # Set when the SCP queues its A-RELEASE-RP to the peer's A-RELEASE-RQ, before it is sent.
    release_answered: bool = False
    # Set when the SCP queues an A-ABORT of its own, before it is sent.
    abort_sent: bool = False
    connected_at_ns: int = field(default_factory=time.time_ns)
    span: Span | None = None


class AssociationRegistry:
    """Records of the open associations of one SCP, keyed by pynetdicom's Association."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Strong references: an association that ends without an end event must stay
        # reachable until finish_ended() deletes what it left in the spool.
        self._records: dict[Association, AssociationRecord] = {}

    def record(self, association: Association) -> AssociationRecord:
        """Return the record of ``association``, creating it when it has none."""
        with self._lock:
            found = self._records.get(association)
            if found is None:
                found = AssociationRecord(peer_address=_peer_address(association))
                self._records[association] = found
                DIMSE_ACTIVE_ASSOCIATIONS.inc()
            return found

    def span(self, association: Association) -> Span:
        """Return the span of ``association``, starting it, dated to its connection, if needed."""
        record = self.record(association)
        with self._lock:
            if record.span is None:
                record.span = tracer.start_span(
                    "DIMSE association",
                    kind=SpanKind.SERVER,
                    attributes={"network.peer.address": record.peer_address},
                    start_time=record.connected_at_ns,
                )
            return record.span

    # -- pynetdicom event handlers ------------------------------------------------------

    def handle_connection_open(self, event: Event) -> None:
        """Set the new connection's socket options and start its record.

        DIMSE responses are small writes. TCP_NODELAY sends each one at once instead of
        letting Nagle's algorithm hold it while an earlier segment is unacknowledged.

        The socket also gets the network timeout. pynetdicom checks that timeout only
        between PDUs. Once the first bytes of a PDU have arrived, it reads the rest with
        blocking calls. Without a socket timeout, a peer that stops mid-PDU would keep
        its association and its spool file until it closes the connection.
        """
        self.finish_ended()
        raw_socket = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if raw_socket is not None:
            try:
                raw_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                raw_socket.settimeout(event.assoc.network_timeout)
            except OSError as error:
                logger.warning(
                    "could not set the socket options for %s: %s",
                    _peer_address(event.assoc),
                    error,
                )
        self.record(event.assoc)

    def finish_ended(self) -> None:
        """Finish the records of associations that ended without an end event.

        Their threads have ended, so the datasets they were receiving are deleted.
        """
        with self._lock:
            ended = [
                association
                for association in self._records
                if association.ident is not None
                and not association.is_alive()
                and not association.dul.is_alive()
            ]
        for association in ended:
            self._finish(association, "ended by a protocol error", "aborted")
            discard_unhandled_datasets(association)

    def handle_released(self, event: Event) -> None:
        self._finish(event.assoc, "released", "released")

    def handle_aborted(self, event: Event) -> None:
        self._finish(event.assoc, "aborted", "aborted")
        discard_unhandled_datasets(event.assoc)

    def handle_rejected(self, event: Event) -> None:
        self._finish(event.assoc, "rejected", "rejected")

    def handle_acse_sent(self, event: Event) -> None:
        """Note an A-RELEASE response or an A-ABORT, which pynetdicom reports before sending."""
        primitive = getattr(event, "primitive", None)
        answers_release = isinstance(primitive, A_RELEASE) and primitive.result is not None
        aborts = isinstance(primitive, A_ABORT | A_P_ABORT)
        if not (answers_release or aborts):
            return
        with self._lock:
            record = self._records.get(event.assoc)
            if record is not None:
                record.release_answered |= answers_release
                record.abort_sent |= aborts

    def handle_connection_close(self, event: Event) -> None:
        # A peer's A-ABORT closes the connection before pynetdicom reports the abort.
        # A peer that got the SCP's A-RELEASE-RP or A-ABORT may close it before
        # pynetdicom reports the release or marks the association aborted.
        association = event.assoc
        with self._lock:
            record = self._records.get(association)
            released = record is not None and record.release_answered
            abort_sent = record is not None and record.abort_sent
        aborted = abort_sent or association.is_aborted or association.acse.is_aborted()
        if released:
            self._finish(association, "released", "released")
        elif aborted:
            self._finish(association, "aborted", "aborted")
        else:
            self._finish(association, "closed without release", "closed")
        discard_unhandled_datasets(association)

    def _finish(self, association: Association, outcome: str, outcome_label: str) -> None:
        """Log and count an ended association; ``outcome_label`` is its metric label."""
        with self._lock:
            record = self._records.pop(association, None)
        close_waits(association)
        if record is None:
            return  # already logged: pynetdicom may report an end more than once
        DIMSE_ACTIVE_ASSOCIATIONS.dec()
        DIMSE_ASSOCIATIONS.labels(outcome=outcome_label).inc()
        self._end_span(association, record, outcome, outcome_label)
        logger.info(
            "association from %s at %s %s: %d stored, %d already stored, %d failed, %d C-ECHO",
            association.requestor.ae_title or "(no AE title)",
            record.peer_address,
            outcome,
            record.stored,
            record.duplicates,
            record.failed,
            record.echoes,
        )

    @staticmethod
    def _end_span(
        association: Association, record: AssociationRecord, outcome: str, outcome_label: str
    ) -> None:
        """End the association's span, or create and end it now when no handler needed it."""
        calling_ae_title = association.requestor.ae_title or ""
        span = record.span
        if span is None:
            if not calling_ae_title:
                return  # no A-ASSOCIATE-RQ arrived: a probe, not worth a trace
            span = tracer.start_span(
                "DIMSE association",
                kind=SpanKind.SERVER,
                attributes={"network.peer.address": record.peer_address},
                start_time=record.connected_at_ns,
            )
        span.set_attributes(
            {
                "dicom.calling_ae_title": calling_ae_title,
                "dicom.called_ae_title": association.acceptor.ae_title or "",
                "noctis.association_outcome": outcome_label,
                "noctis.stored": record.stored,
                "noctis.duplicates": record.duplicates,
                "noctis.failed": record.failed,
            }
        )
        if outcome_label != "released":
            mark_failed(span, f"association {outcome}")
        span.end()


def _peer_address(association: Association) -> str:
    requestor = association.requestor
    if requestor.address_info is None:
        return "(unknown address)"
    return f"{requestor.address}:{requestor.port}"


def discard_unhandled_datasets(association: Association) -> None:
    """Delete the spool files of C-STORE datasets that no handler will receive.

    pynetdicom writes each incoming dataset to a temporary file and deletes it after
    the C-STORE handler returns. When the association ends during a transfer, or with
    requests still queued, no handler runs and the files would stay in the spool until
    :meth:`Archive.recover` removes them at the next start.

    The partly received dataset is written by the association's DUL thread, so it is
    deleted only from that thread (where pynetdicom reports a closed connection) or
    after the thread has ended.

    NOTE: this reads pynetdicom 3.0 internals (``dimse.message``, ``dimse.msg_queue``
    and their ``_data_set_path``/``_dataset_path``); on other versions it finds
    nothing and the files wait for the next start.
    """
    dimse = getattr(association, "dimse", None)
    dul = getattr(association, "dul", None)
    if dimse is None or dul is None:
        return
    paths: list[Path] = []
    if threading.current_thread() is dul or not dul.is_alive():
        partial = getattr(dimse, "message", None)
        _collect_dataset_file(partial, "_data_set_file", "_data_set_path", paths)
    pending: Any = getattr(dimse, "msg_queue", None)
    while isinstance(pending, queue.Queue):
        try:
            _, primitive = pending.get_nowait()
        except queue.Empty:
            break
        _collect_dataset_file(primitive, "_dataset_file", "_dataset_path", paths)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            logger.info("deleted the partly received dataset %s", path.name)


def _collect_dataset_file(
    message: object, file_attribute: str, path_attribute: str, paths: list[Path]
) -> None:
    path = getattr(message, path_attribute, None)
    if not isinstance(path, Path):
        return
    handle = getattr(message, file_attribute, None)
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()
    paths.append(path)
