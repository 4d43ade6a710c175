"""Forwarding: C-STORE of newly stored instances to other DIMSE peers, with retries.

:class:`Forwarder` subscribes to the archive's ``instance.stored`` events. The routing
rules (:mod:`noctis_ingest_scp.forwarding_rules`) pick destinations for each event,
and a worker thread writes one job per instance and destination into the persistent
queue (:mod:`noctis_ingest_scp.forward_queue`). The same thread claims due jobs, sends
them to each destination over one association per batch, deletes the jobs the
destination acknowledged and reschedules the others with exponential backoff. After
``NOCTIS_FORWARD_MAX_ATTEMPTS`` failures, or a failure that no retry can change, a job
stays in the queue with status ``failed`` and its last error.

The subscriber does not write the queue itself: the event relay calls it while it
publishes a batch (on PostgreSQL inside the transaction that holds the relay's lock),
so it must return quickly.

NOTE: an event is marked published before its jobs are written, so a crash in between
(milliseconds) loses those forwards, and so does an event that arrives after the gateway
stopped and before the relay did. The in-process publisher also hands each event
only to the subscribers of the process whose relay reads it first, so forwarding gets
the instances whose events the gateway's own process publishes; in the one-process
archive that is all of them. Forwarding exports no metrics yet; the log has progress
and failures.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from noctis_common.context import ArchiveContext
from noctis_common.events import INSTANCE_STORED, Event
from noctis_common.storage.filesystem import FileSystemObjectStore
from noctis_ingest_scp.forward_queue import (
    CLAIM_BATCH_SIZE,
    ClaimedJob,
    ForwardQueue,
    QueuedInstance,
)
from noctis_ingest_scp.forwarding_rules import ForwardRule, destinations_for, load_forward_rules
from noctis_ingest_scp.outbound import PeerUnavailableError, associate_with_peer, peer_description
from noctis_ingest_scp.peers import PeerAE, PeerDirectory

logger = logging.getLogger(__name__)

# PS3.8 limits an association request to 128 presentation contexts.
MAX_CONTEXTS_PER_ASSOCIATION = 128


class SendOutcome(StrEnum):
    """Outcome of one C-STORE attempt."""

    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


def classify_store_status(status: Dataset) -> tuple[SendOutcome, str]:
    """Return the outcome and a description of a C-STORE response status.

    Success and warnings (0xB000-0xBFFF) count as delivered. Out of resources
    (0xA7xx), resource limitation (0x0213), processing failure (0x0110) and no
    response at all are retried. Any other failure is final, because the same object
    would fail the same way again.
    """
    code = status.get("Status")
    if code is None:
        return SendOutcome.RETRY, "no C-STORE response (timeout or aborted association)"
    code = int(code)
    comment = str(status.get("ErrorComment") or "").strip()
    description = f"status 0x{code:04X}" + (f" ({comment})" if comment else "")
    if code == 0x0000 or 0xB000 <= code <= 0xBFFF:
        return SendOutcome.DONE, description
    if 0xA700 <= code <= 0xA7FF or code in (0x0213, 0x0110):
        return SendOutcome.RETRY, description
    return SendOutcome.FAILED, description


class Forwarder:
    """Queues newly stored instances by rule and forwards them from a worker thread."""

    def __init__(
        self, context: ArchiveContext, rules: list[ForwardRule], peers: PeerDirectory
    ) -> None:
        self.context = context
        self.settings = context.settings
        self.rules = rules
        self.peers = peers
        self.queue = ForwardQueue(context.database, context.settings)
        self._received: list[QueuedInstance] = []
        self._received_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, context: ArchiveContext, peers: PeerDirectory) -> Forwarder | None:
        """Load ``NOCTIS_FORWARD_RULES_FILE``; return ``None`` when it is not set.

        Raises :class:`~noctis_ingest_scp.forwarding_rules.ForwardRulesError`.
        """
        path = context.settings.forward_rules_file
        if path is None:
            return None
        return cls(context, load_forward_rules(path, peers), peers)

    # -- events ----------------------------------------------------------------------------

    def handle_event(self, event: Event) -> None:
        """Hold a newly stored instance that some rule selects, for the worker to queue."""
        if event.type != INSTANCE_STORED:
            return
        destinations = destinations_for(self.rules, event.payload)
        if not destinations:
            return
        with self._received_lock:
            self._received.append(QueuedInstance(event.id, event.payload, destinations))
        self._wake.set()

    def queue_received(self) -> int:
        """Write the jobs of the events received so far; return how many were added."""
        with self._received_lock:
            received, self._received = self._received, []
        if not received:
            return 0
        try:
            return self.queue.add(received)
        except Exception:
            with self._received_lock:
                self._received[:0] = received  # keep them for the next round
            raise

    # -- sending ---------------------------------------------------------------------------

    def forward_due_jobs(self) -> int:
        """Send one claimed batch, destination by destination; return how many were claimed."""
        jobs = self.queue.claim_due()
        by_destination: dict[str, list[ClaimedJob]] = defaultdict(list)
        for job in jobs:
            by_destination[job.destination_ae_title].append(job)
        for destination, destination_jobs in by_destination.items():
            for batch in _batches_by_context(destination_jobs):
                self._forward_batch(destination, batch)
        return len(jobs)

    def _forward_batch(self, destination: str, jobs: list[ClaimedJob]) -> None:
        peer = self.peers.get(destination)
        if peer is None or peer.address is None:
            for job in jobs:
                self.queue.reschedule(
                    job,
                    f"AE {destination} has no host and port in the peer list any more",
                    permanent=True,
                )
            return
        sendable = []
        for job in jobs:
            if job.object_key is None:
                self.queue.reschedule(job, "the instance is no longer stored", permanent=True)
            else:
                sendable.append(job)
        if not sendable:
            return
        contexts = [
            build_context(sop_class_uid, [transfer_syntax_uid])
            for sop_class_uid, transfer_syntax_uid in sorted(
                {(job.sop_class_uid, str(job.transfer_syntax_uid)) for job in sendable}
            )
        ]
        try:
            association = associate_with_peer(self.settings, peer, contexts)
        except PeerUnavailableError as error:
            logger.warning(
                "forwarding %d instance(s) to %s failed; retrying later: %s",
                len(sendable),
                destination,
                error,
            )
            for job in sendable:
                self.queue.reschedule(job, str(error), permanent=False)
            return
        try:
            counts = self._send_all(association, peer, sendable)
        finally:
            if association.is_established:
                association.release()
        logger.info(
            "forwarded %d of %d instance(s) to %s: %d to retry, %d failed",
            counts[SendOutcome.DONE],
            len(sendable),
            peer_description(peer),
            counts[SendOutcome.RETRY],
            counts[SendOutcome.FAILED],
        )

    def _send_all(
        self, association: Association, peer: PeerAE, jobs: list[ClaimedJob]
    ) -> dict[SendOutcome, int]:
        counts = dict.fromkeys(SendOutcome, 0)
        for index, job in enumerate(jobs):
            if not association.is_established:
                for rest in jobs[index:]:
                    self.queue.reschedule(
                        rest, f"the association with {peer.ae_title} ended", permanent=False
                    )
                    counts[SendOutcome.RETRY] += 1
                break
            counts[self._forward_one(association, job)] += 1
        return counts

    def _forward_one(self, association: Association, job: ClaimedJob) -> SendOutcome:
        """Send one instance; record the outcome in the queue and return it."""
        try:
            with self._local_copy(str(job.object_key)) as path:
                # Send the stored dataset bytes unchanged, read from the file in chunks.
                _config.STORE_SEND_CHUNKED_DATASET = True
                status = association.send_c_store(path)
        except ValueError as error:
            # pynetdicom raises ValueError when no accepted context fits the object.
            self.queue.reschedule(
                job,
                f"{job.destination_ae_title} accepted no presentation context for SOP Class "
                f"{job.sop_class_uid} in transfer syntax {job.transfer_syntax_uid}: {error}",
                permanent=True,
            )
            return SendOutcome.FAILED
        except (OSError, RuntimeError) as error:
            self.queue.reschedule(job, f"sending failed: {error}", permanent=False)
            return SendOutcome.RETRY
        outcome, description = classify_store_status(status)
        if outcome is SendOutcome.DONE:
            self.queue.finish(job)
            return outcome
        failed = self.queue.reschedule(
            job,
            f"{job.destination_ae_title} answered {description}",
            permanent=outcome is SendOutcome.FAILED,
        )
        return SendOutcome.FAILED if failed else SendOutcome.RETRY

    @contextlib.contextmanager
    def _local_copy(self, object_key: str) -> Iterator[Path]:
        """Yield a local file of the stored object, copying it when the store is remote."""
        store = self.context.store
        if isinstance(store, FileSystemObjectStore):
            yield store.root / object_key
            return
        path = self.context.archive.new_spool_path()
        try:
            with store.open(object_key) as source, open(path, "wb") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- worker ----------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the archive's events and start the worker thread."""
        if self.handle_event not in self.context.publisher.subscribers:
            self.context.publisher.subscribe(self.handle_event)
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()
        logger.info(
            "forwarding started with %d rule(s) to %s",
            len(self.rules),
            ", ".join(sorted({rule.destination_ae_title for rule in self.rules})) or "nobody",
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker after its current batch and queue the instances received so far.

        The subscription stays, because the publisher has no way to undo it. Instances
        received after ``stop`` wait in memory for the next :meth:`start`.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.queue_received()
        except Exception:
            logger.exception("could not queue the last received instances for forwarding")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.queue_received()
                while self.forward_due_jobs() == CLAIM_BATCH_SIZE and not self._stop.is_set():
                    self.queue_received()
            except Exception:
                logger.exception(
                    "forwarding failed; retrying in %.1f s", self.settings.forward_poll_interval_s
                )
            self._wake.wait(self.settings.forward_poll_interval_s)


def _batches_by_context(jobs: Sequence[ClaimedJob]) -> Iterator[list[ClaimedJob]]:
    """Split ``jobs`` so that no batch needs more than 128 presentation contexts."""
    batch: list[ClaimedJob] = []
    contexts: set[tuple[str, str | None]] = set()
    for job in jobs:
        key = (job.sop_class_uid, job.transfer_syntax_uid)
        if key not in contexts and len(contexts) == MAX_CONTEXTS_PER_ASSOCIATION:
            yield batch
            batch, contexts = [], set()
        contexts.add(key)
        batch.append(job)
    if batch:
        yield batch
