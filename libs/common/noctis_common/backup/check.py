"""The consistency check of index and object store, and the repair that moves orphans aside.

The archive's rule is that every instance row has its object and every object its row.
The check lists the object store once and compares it with the ``object_key`` and
``object_size`` of every instance row:

- rows without objects: the instance is in the index but its object is missing, so
  retrieving it fails. Only a backup can bring the bytes back.
- objects of the wrong size: the object exists but is not the one the row describes.
- objects without rows: nothing refers to the object. An object written less than
  ``grace_s`` ago is skipped, because a store in progress writes its object before it
  commits its row. Objects listed in ``orphan_object`` await deletion by the sweeper
  and are counted apart.

The repair moves objects without rows aside (see
:func:`~noctis_common.backup.objects.move_aside`) and never deletes anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from noctis_common.backup.objects import list_objects, move_aside
from noctis_common.db import Database
from noctis_common.db.models import Instance, OrphanObject
from noctis_common.storage import ObjectNotFoundError, ObjectStore, StoredObject

logger = logging.getLogger(__name__)

DEFAULT_GRACE_S = 600.0
# Keys listed one by one in the text report; the JSON report lists all of them.
MAX_LISTED_KEYS = 100


@dataclass(frozen=True)
class MissingObject:
    """An instance row whose object is not in the store."""

    sop_instance_uid: str
    object_key: str


@dataclass(frozen=True)
class SizeMismatch:
    """An object whose size differs from its instance row's ``object_size``."""

    sop_instance_uid: str
    object_key: str
    indexed_size: int
    stored_size: int


@dataclass
class ConsistencyReport:
    """Findings of one check, and where its repair moved each object."""

    indexed_instances: int = 0
    stored_objects: int = 0
    rows_without_objects: list[MissingObject] = field(default_factory=list)
    size_mismatches: list[SizeMismatch] = field(default_factory=list)
    objects_without_rows: list[str] = field(default_factory=list)
    recent_objects_skipped: int = 0
    awaiting_deletion: int = 0
    moved_aside: dict[str, str] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        """Return whether nothing is wrong, once the orphans moved aside are left out."""
        orphans_left = [key for key in self.objects_without_rows if key not in self.moved_aside]
        return not (self.rows_without_objects or self.size_mismatches or orphans_left)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "consistent": self.consistent}, indent=2)

    def to_text(self) -> str:
        lines = [
            f"{self.indexed_instances} instance rows, {self.stored_objects} objects in the store",
            f"rows without objects: {len(self.rows_without_objects)}",
            *_listed(
                f"  {item.sop_instance_uid} {item.object_key}" for item in self.rows_without_objects
            ),
            f"objects of the wrong size: {len(self.size_mismatches)}",
            *_listed(
                f"  {item.sop_instance_uid} {item.object_key}: indexed {item.indexed_size} "
                f"bytes, stored {item.stored_size}"
                for item in self.size_mismatches
            ),
            f"objects without rows: {len(self.objects_without_rows)}",
            *_listed(
                f"  {key} -> {self.moved_aside[key]}" if key in self.moved_aside else f"  {key}"
                for key in self.objects_without_rows
            ),
            f"objects without rows skipped as too recent: {self.recent_objects_skipped}",
            f"objects awaiting deletion by the orphan sweeper: {self.awaiting_deletion}",
            "consistent" if self.consistent else "INCONSISTENT",
        ]
        return "\n".join(lines)


def _listed(lines: Any) -> list[str]:
    items = list(lines)
    if len(items) > MAX_LISTED_KEYS:
        return [*items[:MAX_LISTED_KEYS], f"  ... and {len(items) - MAX_LISTED_KEYS} more"]
    return items


def check_consistency(
    database: Database,
    store: ObjectStore,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    now: datetime | None = None,
) -> ConsistencyReport:
    """Compare the instance rows with the objects in ``store`` and report the differences.

    NOTE: the keys of all rows and objects are held in memory, about 200 bytes per
    instance.
    """
    # Rows first, then the store: an instance stored in between has an object without a
    # row, which the grace period skips. An instance deleted in between looks like a row
    # without object, so each of those is confirmed again at the end.
    with database.read_session() as session:
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.object_key, Instance.object_size)
        ).all()
        awaiting = set(session.scalars(select(OrphanObject.object_key)))
    stored: dict[str, StoredObject] = {item.key: item for item in list_objects(store)}
    report = ConsistencyReport(indexed_instances=len(rows), stored_objects=len(stored))
    indexed_keys = set()
    for sop_instance_uid, object_key, object_size in rows:
        indexed_keys.add(object_key)
        found = stored.get(object_key)
        if found is None:
            report.rows_without_objects.append(MissingObject(sop_instance_uid, object_key))
        elif found.size != object_size:
            report.size_mismatches.append(
                SizeMismatch(sop_instance_uid, object_key, object_size, found.size)
            )
    report.rows_without_objects = _confirm_missing(database, store, report.rows_without_objects)
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace_s)
    for key in sorted(stored.keys() - indexed_keys):
        if key in awaiting:
            report.awaiting_deletion += 1
        elif stored[key].modified_at > cutoff:
            report.recent_objects_skipped += 1
        else:
            report.objects_without_rows.append(key)
    return report


def _confirm_missing(
    database: Database, store: ObjectStore, candidates: list[MissingObject]
) -> list[MissingObject]:
    """Return the candidates whose row still exists and whose object is still absent."""
    confirmed = []
    with database.read_session() as session:
        for candidate in candidates:
            row = session.scalar(
                select(Instance.id).where(Instance.object_key == candidate.object_key).limit(1)
            )
            if row is not None and not store.exists(candidate.object_key):
                confirmed.append(candidate)
    return sorted(confirmed, key=lambda item: item.object_key)


def move_orphans_aside(report: ConsistencyReport, store: ObjectStore, quarantine: str) -> None:
    """Move the report's objects without rows into ``quarantine``, recording where each went."""
    for key in report.objects_without_rows:
        try:
            report.moved_aside[key] = move_aside(store, key, quarantine)
        except ObjectNotFoundError:
            logger.info("object %s is gone already; nothing to move aside", key)
            report.moved_aside[key] = "(gone)"
        logger.info("moved object %s without index row to %s", key, report.moved_aside[key])
