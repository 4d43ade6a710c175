"""Study complete: one ``study.complete`` event per study revision after a quiet period.

DICOM has no message that marks a study as finished, so a study counts as complete once
``NOCTIS_STUDY_COMPLETE_QUIET_S`` seconds have passed without a new instance. Each study
row carries three columns for this:

- ``revision``: the revision that new instances join, 1 for a new study.
- ``completed_revision``: the latest revision announced, 0 before the first event.
- ``last_instance_at``: when the latest instance was indexed.

The store transaction (:func:`changes_for_new_instance`, called with the study row
locked) sets ``last_instance_at``, and when the current revision was already announced
it opens the next one. :func:`announce_complete_studies` claims the studies whose
revision is unannounced and quiet for long enough. It sets ``completed_revision`` and
writes the event to the outbox in one transaction. On PostgreSQL the claim is
``SELECT ... FOR UPDATE SKIP LOCKED``, so sweepers on several replicas take disjoint
studies and skip a study that a store transaction holds. The claiming ``UPDATE`` also
repeats the due condition, so a claim never announces a revision twice. SQLite
serializes write transactions. A crash before the commit leaves the revision
unannounced for the next sweep, and one after the commit leaves the event in the
outbox for the relay. So each revision gets exactly one outbox row, on every replica
and across restarts.

Deletions open no revision and do not restart the quiet period. A pending revision's
event reports the counts at the time it is written. A study whose last instance is
deleted loses its row, so it gets no ``study.complete`` event. Stored again later,
it is a new study whose revisions start at 1 again, so consumers deduplicate by the
event id, not by StudyInstanceUID and revision.

The quiet period is measured with the clocks of the processes that store and sweep,
so replicas need synchronized clocks (NTP). A skew of a few seconds only shifts the
event by as much.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from noctis_common.db import Database
from noctis_common.db.models import Study
from noctis_common.events import add_event
from noctis_common.failure_log import RepeatedFailureLog

logger = logging.getLogger(__name__)

STUDY_COMPLETE = "study.complete"
# Studies claimed per transaction. A sweep runs batches until none is due.
CLAIM_BATCH_SIZE = 100
# Path of the DICOMweb services in payload URLs when NOCTIS_PUBLIC_BASE_URL is unset.
RELATIVE_DICOMWEB_BASE = "/dicom-web"
# The log line of one sweep names this many StudyInstanceUIDs and counts the rest.
LOGGED_UIDS = 10


def changes_for_new_instance(
    revision: int, completed_revision: int, now: datetime
) -> dict[str, Any]:
    """Return the study row's completion values after an instance was added at ``now``.

    ``revision`` and ``completed_revision`` are the study row's values, read under the
    caller's lock on that row (``SELECT ... FOR UPDATE`` on PostgreSQL), so that they
    cannot change before the commit.
    """
    changes: dict[str, Any] = {"last_instance_at": now}
    if completed_revision >= revision:
        changes["revision"] = revision + 1
    return changes


def _due(cutoff: datetime) -> ColumnElement[bool]:
    """Return the condition of a study whose revision is unannounced and quiet since ``cutoff``."""
    return and_(Study.completed_revision < Study.revision, Study.last_instance_at <= cutoff)


def study_complete_payload(study: Study, public_base_url: str | None) -> dict[str, Any]:
    """Build the data of the ``study.complete`` event of the study's current revision.

    The URLs start with ``public_base_url``. When it is ``None``, they are relative
    references that start with ``/dicom-web``, for the consumer to resolve against the
    archive's address.
    """
    base_url = (public_base_url or RELATIVE_DICOMWEB_BASE).rstrip("/")
    study_url = f"{base_url}/studies/{study.study_instance_uid}"
    return {
        "StudyInstanceUID": study.study_instance_uid,
        "Revision": study.revision,
        "NumberOfStudyRelatedSeries": study.number_of_study_related_series,
        "NumberOfStudyRelatedInstances": study.number_of_study_related_instances,
        "ModalitiesInStudy": [m for m in study.modalities_in_study.split("\\") if m],
        "RetrieveURL": study_url,
        "MetadataURL": f"{study_url}/metadata",
    }


def announce_complete_studies(
    database: Database,
    quiet_s: float,
    public_base_url: str | None,
    *,
    now: datetime | None = None,
    batch_size: int = CLAIM_BATCH_SIZE,
) -> list[str]:
    """Write a ``study.complete`` event for every study quiet for ``quiet_s`` seconds.

    Returns the StudyInstanceUIDs announced by this call. Another sweeper running at
    the same time announces the rest, and no study is announced by both.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=quiet_s)
    announced: list[str] = []
    while True:
        # A read first, so that an idle sweep never takes SQLite's write lock.
        with database.read_session() as session:
            if session.scalar(select(Study.id).where(_due(cutoff)).limit(1)) is None:
                return announced
        with database.write_session() as session:
            claimed = _claim_batch(session, cutoff, public_base_url, batch_size)
            session.commit()
        announced.extend(claimed)
        if len(claimed) < batch_size:
            return announced


def _claim_batch(
    session: Session, cutoff: datetime, public_base_url: str | None, batch_size: int
) -> list[str]:
    """Claim up to ``batch_size`` due studies and add their events to ``session``."""
    studies = session.scalars(
        select(Study)
        .where(_due(cutoff))
        .order_by(Study.last_instance_at)
        .limit(batch_size)
        # SQLite ignores FOR UPDATE, but its write transactions do not overlap.
        .with_for_update(skip_locked=True)
    ).all()
    claimed: list[str] = []
    for study in studies:
        claimed_id = session.scalar(
            update(Study)
            .where(Study.id == study.id, Study.revision == study.revision, _due(cutoff))
            .values(completed_revision=study.revision)
            .returning(Study.id)
            .execution_options(synchronize_session=False)
        )
        if claimed_id is None:
            continue
        add_event(
            session,
            STUDY_COMPLETE,
            study.study_instance_uid,
            study_complete_payload(study, public_base_url),
        )
        claimed.append(study.study_instance_uid)
    return claimed


class StudyCompleteSweeper:
    """A background thread that runs :func:`announce_complete_studies` periodically.

    ``on_announced`` is called after a sweep that wrote events, to wake the outbox relay.
    """

    def __init__(
        self,
        database: Database,
        quiet_s: float,
        interval_s: float,
        public_base_url: str | None,
        on_announced: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.quiet_s = quiet_s
        self.interval_s = interval_s
        self.public_base_url = public_base_url
        self.on_announced = on_announced
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure_log = RepeatedFailureLog(logger, "the study-complete sweep")

    def start(self) -> None:
        if self._thread is not None:
            return
        if not self.public_base_url:
            logger.warning(
                "NOCTIS_PUBLIC_BASE_URL is not set, so study.complete events carry URLs "
                "relative to the archive (%s/studies/...); set it to the DICOMweb base URL "
                "that consumers reach",
                RELATIVE_DICOMWEB_BASE,
            )
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="study-complete-sweeper", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        logger.info(
            "study-complete sweeper started: quiet period %.1f s, sweep every %.1f s",
            self.quiet_s,
            self.interval_s,
        )
        while not self._stop.wait(self.interval_s):
            self.sweep()
        logger.info("study-complete sweeper stopped")

    def sweep(self) -> int:
        """Run one sweep and return how many studies it announced, logging any error."""
        try:
            announced = announce_complete_studies(self.database, self.quiet_s, self.public_base_url)
        except Exception as error:
            self.failure_log.failed(error, retry_in_s=self.interval_s)
            return 0
        self.failure_log.succeeded()
        if announced:
            logger.info(
                "announced %d complete studies: %s%s",
                len(announced),
                ", ".join(announced[:LOGGED_UIDS]),
                " and more" if len(announced) > LOGGED_UIDS else "",
            )
            if self.on_announced is not None:
                self.on_announced()
        return len(announced)
