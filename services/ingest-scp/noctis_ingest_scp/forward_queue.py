"""The persistent forwarding queue: one ``forward_job`` row per instance and destination.

Rows are added when an ``instance.stored`` event matches a routing rule, claimed by a
worker for one attempt, deleted once the destination acknowledged the instance, and
rescheduled with exponential backoff otherwise. Claims expire after
:data:`CLAIM_LEASE_S`, so the jobs of a worker that died are sent again later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from noctis_common.db import Database
from noctis_common.db.models import ForwardJob, Instance
from noctis_common.metrics import (
    FORWARD_FAILED_ATTEMPTS,
    FORWARD_JOBS_GIVEN_UP,
    FORWARDED_INSTANCES,
)
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

PENDING = "pending"
FAILED = "failed"
# Jobs claimed per round, and how long a claim lasts before another worker may retry it.
CLAIM_BATCH_SIZE = 100
CLAIM_LEASE_S = 900.0


@dataclass(frozen=True)
class QueuedInstance:
    """An ``instance.stored`` event with the destinations its rules selected."""

    event_id: int
    payload: Mapping[str, Any]
    # Destination AE title -> name of the first rule that selected it.
    destinations: Mapping[str, str]


@dataclass(frozen=True)
class ClaimedJob:
    """A forward job taken from the queue for one attempt, with where its object is."""

    id: int
    destination_ae_title: str
    sop_instance_uid: str
    sop_class_uid: str
    attempts: int
    object_key: str | None
    transfer_syntax_uid: str | None


class ForwardQueue:
    """Reads and writes ``forward_job`` rows; the retry policy comes from settings."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.max_attempts = settings.forward_max_attempts
        self.retry_initial_s = settings.forward_retry_initial_s
        self.retry_max_s = settings.forward_retry_max_s

    def add(self, instances: Iterable[QueuedInstance]) -> int:
        """Add a job per instance and destination unless one exists; return how many."""
        requested = {
            (instance.event_id, destination): (instance, rule_name)
            for instance in instances
            for destination, rule_name in instance.destinations.items()
        }
        if not requested:
            return 0
        with self.database.write_session() as session:
            existing = {
                (row.event_id, row.destination_ae_title)
                for row in session.execute(
                    select(ForwardJob.event_id, ForwardJob.destination_ae_title).where(
                        tuple_(ForwardJob.event_id, ForwardJob.destination_ae_title).in_(
                            list(requested)
                        )
                    )
                )
            }
            rows = [
                _new_job(instance, destination, rule_name)
                for (_, destination), (instance, rule_name) in requested.items()
                if (instance.event_id, destination) not in existing
            ]
            session.add_all(rows)
            try:
                session.commit()
            except IntegrityError:
                # Another process queued some of the same events in the meantime.
                session.rollback()
                return self._add_one_by_one(rows)
        return len(rows)

    def _add_one_by_one(self, rows: list[ForwardJob]) -> int:
        added = 0
        for row in rows:
            with self.database.write_session() as session:
                session.add(row)
                try:
                    session.commit()
                    added += 1
                except IntegrityError:
                    session.rollback()
        return added

    def claim_due(self, limit: int = CLAIM_BATCH_SIZE) -> list[ClaimedJob]:
        """Take up to ``limit`` due jobs, holding them for :data:`CLAIM_LEASE_S`."""
        now = datetime.now(UTC)
        with self.database.write_session() as session:
            jobs = session.scalars(
                select(ForwardJob)
                .where(ForwardJob.status == PENDING, ForwardJob.next_attempt_at <= now)
                .order_by(ForwardJob.next_attempt_at, ForwardJob.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not jobs:
                session.rollback()
                return []
            session.execute(
                update(ForwardJob)
                .where(ForwardJob.id.in_([job.id for job in jobs]))
                .values(next_attempt_at=now + timedelta(seconds=CLAIM_LEASE_S))
            )
            session.commit()
        with self.database.read_session() as session:
            stored = {
                row.sop_instance_uid: row
                for row in session.execute(
                    select(
                        Instance.sop_instance_uid, Instance.object_key, Instance.transfer_syntax_uid
                    ).where(Instance.sop_instance_uid.in_({job.sop_instance_uid for job in jobs}))
                )
            }
        claimed = []
        for job in jobs:
            instance = stored.get(job.sop_instance_uid)
            claimed.append(
                ClaimedJob(
                    id=job.id,
                    destination_ae_title=job.destination_ae_title,
                    sop_instance_uid=job.sop_instance_uid,
                    sop_class_uid=job.sop_class_uid,
                    attempts=job.attempts,
                    object_key=instance.object_key if instance else None,
                    transfer_syntax_uid=instance.transfer_syntax_uid if instance else None,
                )
            )
        return claimed

    def finish(self, job: ClaimedJob) -> None:
        """Delete a job whose instance the destination acknowledged."""
        with self.database.write_session() as session:
            session.execute(delete(ForwardJob).where(ForwardJob.id == job.id))
            session.commit()
        FORWARDED_INSTANCES.labels(destination=job.destination_ae_title).inc()

    def reschedule(self, job: ClaimedJob, error: str, *, permanent: bool) -> bool:
        """Record a failed attempt; return ``True`` when the job has now failed for good.

        The next attempt waits ``forward_retry_initial_s`` doubled per earlier failure,
        at most ``forward_retry_max_s``.
        """
        attempts = job.attempts + 1
        failed = permanent or attempts >= self.max_attempts
        delay_s = min(self.retry_initial_s * 2 ** (attempts - 1), self.retry_max_s)
        with self.database.write_session() as session:
            session.execute(
                update(ForwardJob)
                .where(ForwardJob.id == job.id)
                .values(
                    attempts=attempts,
                    status=FAILED if failed else PENDING,
                    last_error=error,
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay_s),
                )
            )
            session.commit()
        FORWARD_FAILED_ATTEMPTS.labels(destination=job.destination_ae_title).inc()
        if failed:
            FORWARD_JOBS_GIVEN_UP.labels(destination=job.destination_ae_title).inc()
            logger.error(
                "giving up forwarding instance %s to %s after %d attempt(s): %s",
                job.sop_instance_uid,
                job.destination_ae_title,
                attempts,
                error,
            )
        else:
            # The forwarder logs one WARNING per failed batch; this line is per instance.
            logger.debug(
                "forwarding instance %s to %s failed (attempt %d of %d), retrying in %.0f s: %s",
                job.sop_instance_uid,
                job.destination_ae_title,
                attempts,
                self.max_attempts,
                delay_s,
                error,
            )
        return failed


def _new_job(instance: QueuedInstance, destination: str, rule_name: str) -> ForwardJob:
    payload = instance.payload
    return ForwardJob(
        event_id=instance.event_id,
        destination_ae_title=destination,
        rule_name=rule_name,
        study_instance_uid=payload["StudyInstanceUID"],
        series_instance_uid=payload["SeriesInstanceUID"],
        sop_instance_uid=payload["SOPInstanceUID"],
        sop_class_uid=payload["SOPClassUID"],
        status=PENDING,
        attempts=0,
        last_error="",
        next_attempt_at=datetime.now(UTC),
    )
