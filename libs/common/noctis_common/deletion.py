"""Deletion of a study, series or instance from the index and the object store.

Deletion is outside the DICOM standard; PS3.18 defines no DELETE transaction. It keeps
the archive's rule that every index row has its object and every object its row:

1. One transaction removes the instance rows and updates the counts and
   ModalitiesInStudy of what remains. It removes series, study and patient rows left
   empty and adds the ``study.deleted``, ``series.deleted`` or ``instance.deleted``
   outbox event. It also lists every object key of the removed instances in the
   ``orphan_object`` table.
2. After the commit, each listed object is deleted and its row removed from the list.
   A key whose deletion fails stays listed, with the error, and
   :class:`OrphanObjectSweeper` retries it at start-up and periodically. A crash
   between the steps leaves the keys listed too, so no object is left behind.

Every deletion transaction locks the study row first, so deletions and stores of one
study take turns on PostgreSQL as they do on SQLite, where write transactions are
serialized.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, delete, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from noctis_common.archive import RETRYABLE_SQLSTATES
from noctis_common.db import Database
from noctis_common.db.models import (
    Instance,
    OrphanObject,
    Patient,
    Series,
    SeriesMetadata,
    Study,
)
from noctis_common.events import add_event
from noctis_common.metrics import STORAGE_ERRORS
from noctis_common.storage import ObjectStore, StorageError

logger = logging.getLogger(__name__)

STUDY_DELETED = "study.deleted"
SERIES_DELETED = "series.deleted"
INSTANCE_DELETED = "instance.deleted"

DELETE_ATTEMPTS = 3
# Failed object deletions logged one by one per call; the rest are counted.
MAX_LOGGED_FAILURES = 10
SWEEP_BATCH_SIZE = 500
# SQL bind parameters per IN list, well under SQLite's limit of 32,766.
IN_LIST_SIZE = 500


class DeletionTargetNotFoundError(LookupError):
    """The study, series or instance to delete is not in the index."""


@dataclass(frozen=True)
class DeletionResult:
    """The outcome of one deletion."""

    study_instance_uid: str
    number_of_deleted_instances: int
    # Objects whose deletion failed, which stay listed for the sweep.
    number_of_orphaned_objects: int


@dataclass(frozen=True)
class _Target:
    """The rows that a deletion request names."""

    event_type: str
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None


def delete_study(database: Database, store: ObjectStore, study_instance_uid: str) -> DeletionResult:
    """Delete a study with all its series and instances.

    Raises :class:`DeletionTargetNotFoundError` when the study is not indexed.
    """
    return _delete(database, store, _Target(STUDY_DELETED, study_instance_uid, None, None))


def delete_series(
    database: Database, store: ObjectStore, study_instance_uid: str, series_instance_uid: str
) -> DeletionResult:
    """Delete a series of a study with all its instances.

    Raises :class:`DeletionTargetNotFoundError` when the series is not indexed in that
    study.
    """
    target = _Target(SERIES_DELETED, study_instance_uid, series_instance_uid, None)
    return _delete(database, store, target)


def delete_instance(
    database: Database,
    store: ObjectStore,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
) -> DeletionResult:
    """Delete one instance of a series of a study.

    Raises :class:`DeletionTargetNotFoundError` when the instance is not indexed in that
    series and study.
    """
    target = _Target(INSTANCE_DELETED, study_instance_uid, series_instance_uid, sop_instance_uid)
    return _delete(database, store, target)


def _delete(database: Database, store: ObjectStore, target: _Target) -> DeletionResult:
    object_keys = _delete_rows_with_retry(database, target)
    try:
        orphaned = delete_objects(database, store, object_keys)
    except SQLAlchemyError as error:
        # The rows are gone and the keys stay listed, so the sweep finishes the work.
        logger.error(
            "could not unlist the deleted objects of study %s (the sweep retries): %s",
            target.study_instance_uid,
            type(error).__name__,
        )
        orphaned = len(object_keys)
    logger.debug(
        "deleted %s %s: %d instances, %d objects left for the sweep",
        target.event_type.split(".")[0],
        target.sop_instance_uid or target.series_instance_uid or target.study_instance_uid,
        len(object_keys),
        orphaned,
    )
    return DeletionResult(target.study_instance_uid, len(object_keys), orphaned)


def _delete_rows_with_retry(database: Database, target: _Target) -> list[str]:
    """Run the deletion transaction, retrying when a concurrent store wins a race.

    On PostgreSQL, a store that inserts into the study while it is being deleted can
    end this transaction with a foreign key violation or a deadlock. A retry finds the
    store's committed rows and deletes them too.
    """
    for attempt in range(1, DELETE_ATTEMPTS + 1):
        try:
            with database.write_session() as session:
                object_keys = _delete_rows(session, target)
                session.commit()
            return object_keys
        except (IntegrityError, OperationalError) as error:
            retryable = isinstance(error, IntegrityError) or (
                getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
            )
            if not retryable or attempt == DELETE_ATTEMPTS:
                raise
            logger.info(
                "retrying the deletion of study %s after a concurrent change",
                target.study_instance_uid,
            )
    raise AssertionError("unreachable: the last attempt returns or raises")


def _delete_rows(session: Session, target: _Target) -> list[str]:
    """Delete the target's rows within ``session``; return the removed object keys."""
    study = session.scalar(
        select(Study).where(Study.study_instance_uid == target.study_instance_uid).with_for_update()
    )
    if study is None:
        raise DeletionTargetNotFoundError(f"study {target.study_instance_uid} not found")

    instances = select(Instance.id, Instance.object_key, Instance.series_fk).where(
        Instance.study_fk == study.id
    )
    target_series_id: int | None = None
    if target.series_instance_uid is not None:
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == target.series_instance_uid)
        )
        if series is None or series.study_fk != study.id:
            raise DeletionTargetNotFoundError(
                f"series {target.series_instance_uid} not found in study "
                f"{target.study_instance_uid}"
            )
        target_series_id = series.id
        instances = instances.where(Instance.series_fk == series.id)
    if target.sop_instance_uid is not None:
        instances = instances.where(Instance.sop_instance_uid == target.sop_instance_uid)
    rows = session.execute(instances).all()
    if target.sop_instance_uid is not None and not rows:
        raise DeletionTargetNotFoundError(
            f"instance {target.sop_instance_uid} not found in series "
            f"{target.series_instance_uid} of study {target.study_instance_uid}"
        )

    instance_ids = [row.id for row in rows]
    object_keys = [row.object_key for row in rows]
    touched_series_ids = sorted({row.series_fk for row in rows})
    if target_series_id is not None and not rows:
        # A series without instances: only its row goes.
        touched_series_ids = [target_series_id]
    for chunk in _chunks(instance_ids):
        session.execute(delete(Instance).where(Instance.id.in_(chunk)))
    _list_orphan_objects(session, object_keys)
    _update_series(session, touched_series_ids)
    study_deleted = _update_study(session, study)
    if study_deleted:
        _delete_patient_if_empty(session, study.patient_fk)

    payload: dict[str, Any] = {
        "StudyInstanceUID": target.study_instance_uid,
        "NumberOfDeletedInstances": len(instance_ids),
        "StudyDeleted": study_deleted,
    }
    if target.series_instance_uid is not None:
        payload["SeriesInstanceUID"] = target.series_instance_uid
    if target.sop_instance_uid is not None:
        payload["SOPInstanceUID"] = target.sop_instance_uid
    add_event(session, target.event_type, target.study_instance_uid, payload)
    return object_keys


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[start : start + IN_LIST_SIZE] for start in range(0, len(values), IN_LIST_SIZE)]


def _list_orphan_objects(session: Session, object_keys: Sequence[str]) -> None:
    """List the keys as objects to delete, in the transaction that removes their rows."""
    for chunk in _chunks(object_keys):
        listed = set(
            session.scalars(
                select(OrphanObject.object_key).where(OrphanObject.object_key.in_(chunk))
            )
        )
        session.add_all(OrphanObject(object_key=key) for key in chunk if key not in listed)
    session.flush()


def _update_series(session: Session, series_ids: Sequence[int]) -> None:
    """Recount the series that lost instances; delete those left empty."""
    for series_id in series_ids:
        remaining = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.series_fk == series_id)
        )
        session.execute(delete(SeriesMetadata).where(SeriesMetadata.series_fk == series_id))
        if not remaining:
            session.execute(delete(Series).where(Series.id == series_id))
            continue
        session.execute(
            update(Series)
            .where(Series.id == series_id)
            .values(number_of_series_related_instances=remaining, revision=Series.revision + 1)
        )


def _update_study(session: Session, study: Study) -> bool:
    """Recount the study's series, instances and modalities; delete it when empty.

    Returns whether the study row was deleted.
    """
    instances = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.study_fk == study.id)
    )
    if not instances:
        # Series without instances are not reachable through any retrieve URL.
        session.execute(delete(Series).where(Series.study_fk == study.id))
        session.execute(delete(Study).where(Study.id == study.id))
        return True
    modalities = session.scalars(
        select(Series.modality).where(Series.study_fk == study.id).distinct()
    ).all()
    series_count = session.scalar(
        select(func.count()).select_from(Series).where(Series.study_fk == study.id)
    )
    modalities_in_study = "\\".join(sorted(m for m in modalities if m))
    column_type = Study.__table__.c.modalities_in_study.type
    length = column_type.length if isinstance(column_type, String) else None
    session.execute(
        update(Study)
        .where(Study.id == study.id)
        .values(
            number_of_study_related_instances=instances,
            number_of_study_related_series=series_count or 0,
            modalities_in_study=modalities_in_study[:length],
        )
    )
    return False


def _delete_patient_if_empty(session: Session, patient_id: int) -> None:
    remaining = session.scalar(select(Study.id).where(Study.patient_fk == patient_id).limit(1))
    if remaining is None:
        session.execute(delete(Patient).where(Patient.id == patient_id))


def _key_is_indexed(database: Database, key: str) -> bool:
    with database.read_session() as session:
        return (
            session.scalar(select(Instance.id).where(Instance.object_key == key).limit(1))
            is not None
        )


def delete_objects(database: Database, store: ObjectStore, object_keys: Sequence[str]) -> int:
    """Delete listed orphan objects and unlist each one deleted; return how many failed.

    A key that an instance row references again is unlisted without deleting the
    object: the same instance was stored anew, with the same bytes, after the deletion.
    NOTE: a store of the identical instance that has written its object, but not yet
    committed its row, when this check runs loses its object. That needs the same bytes
    to be sent again while the deletion runs.
    """
    deleted: list[str] = []
    failures: dict[str, str] = {}
    for key in object_keys:
        try:
            if not _key_is_indexed(database, key):
                store.delete(key)
            deleted.append(key)
        except StorageError as error:
            STORAGE_ERRORS.labels(operation="delete").inc()
            failures[key] = str(error)
            if len(failures) <= MAX_LOGGED_FAILURES:
                logger.warning("could not delete object %s (the sweep retries it): %s", key, error)
    if len(failures) > MAX_LOGGED_FAILURES:
        logger.warning(
            "%d more object deletions failed; the sweep retries them",
            len(failures) - MAX_LOGGED_FAILURES,
        )
    with database.write_session() as session:
        for chunk in _chunks(deleted):
            session.execute(delete(OrphanObject).where(OrphanObject.object_key.in_(chunk)))
        for key, message in failures.items():
            session.execute(
                update(OrphanObject)
                .where(OrphanObject.object_key == key)
                .values(attempts=OrphanObject.attempts + 1, last_error=message)
            )
        session.commit()
    return len(failures)


def sweep_orphan_objects(database: Database, store: ObjectStore) -> int:
    """Retry the deletion of every listed orphan object; return how many remain listed."""
    remaining = 0
    last_id = 0
    while True:
        with database.read_session() as session:
            rows = session.execute(
                select(OrphanObject.id, OrphanObject.object_key)
                .where(OrphanObject.id > last_id)
                .order_by(OrphanObject.id)
                .limit(SWEEP_BATCH_SIZE)
            ).all()
        if not rows:
            return remaining
        last_id = rows[-1].id
        remaining += delete_objects(database, store, [row.object_key for row in rows])


class OrphanObjectSweeper:
    """A background thread that runs :func:`sweep_orphan_objects`.

    The first sweep runs as soon as the thread starts, then one every ``interval_s``
    seconds.
    """

    def __init__(self, database: Database, store: ObjectStore, interval_s: float) -> None:
        self.database = database
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="orphan-object-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        # The first sweep runs even when stop() comes at once, so a start is never skipped.
        self._sweep()
        while not self._stop.wait(self.interval_s):
            self._sweep()

    def _sweep(self) -> None:
        try:
            remaining = sweep_orphan_objects(self.database, self.store)
            if remaining:
                logger.warning("%d orphan objects could not be deleted yet", remaining)
        except Exception:
            logger.exception("the orphan object sweep failed; retrying in %.0f s", self.interval_s)
