"""Backups of the index and the object store, their restore, and the consistency check.

Run as ``python -m noctis_common.backup create|restore|check`` with the services'
``NOCTIS_*`` settings (see :mod:`noctis_common.backup.__main__`).

A backup is a folder:

- ``index.sqlite`` (SQLite's online backup API) or ``index.pgdump`` (``pg_dump``
  custom format): a consistent snapshot of the index.
- ``objects/<key>``: a copy of every object that the snapshot's instance rows
  reference, when the objects mode is ``copy`` (the default).
- ``objects.tsv``: each referenced key and its size, tab-separated.
- ``manifest.json``, written last: a folder without it is an unfinished backup.

Order of operations while ingest runs: the index snapshot is taken first and the
objects are copied after it. Stored objects never change, and an object is durable
before the row that references it is committed, so every object the snapshot refers to
exists when the copy starts. Objects stored after the snapshot are not copied, and
their rows are not in it. The one exception is a deletion that commits after the
snapshot and removes an object before it is copied. Such keys are listed as
``missing`` in the manifest, and after a restore the check reports them as rows without
objects, so delete those instances again.

Objects mode ``manifest`` copies nothing and records only ``objects.tsv``. It is meant
for S3 buckets that are protected by versioning or replication on the storage side.
The restore then checks that each listed object is in the bucket. The operator brings
missing ones back from a version or the replica.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from noctis_common.backup.check import (
    ConsistencyReport,
    check_consistency,
    move_orphans_aside,
)
from noctis_common.backup.database import restore_index, snapshot_index
from noctis_common.backup.objects import (
    BackupError,
    copy_object_to_file,
    link_or_copy,
    list_objects,
)
from noctis_common.db import Database
from noctis_common.settings import Settings
from noctis_common.storage import ObjectNotFoundError, ObjectStore, create_object_store

__all__ = [
    "BackupError",
    "BackupManifest",
    "ConsistencyReport",
    "check_consistency",
    "create_backup",
    "move_orphans_aside",
    "restore_backup",
]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
OBJECT_LIST_FILE = "objects.tsv"
OBJECTS_FOLDER = "objects"
MANIFEST_FORMAT = 1
ObjectsMode = Literal["copy", "manifest"]


@dataclass
class BackupManifest:
    """Contents of a backup folder, stored as ``manifest.json``."""

    created_at: str
    index_kind: str
    index_file: str
    schema_revision: str | None
    objects_mode: str
    object_count: int
    object_bytes: int
    # Keys the index snapshot references but the store no longer had at copy time.
    missing_objects: list[str] = field(default_factory=list)
    format: int = MANIFEST_FORMAT

    def write(self, folder: Path) -> None:
        partial = folder / f".{MANIFEST_FILE}.partial"
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, folder / MANIFEST_FILE)

    @classmethod
    def read(cls, folder: Path) -> BackupManifest:
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise BackupError(
                f"{folder} has no {MANIFEST_FILE}: it is not a Noctis backup, or the backup "
                "did not finish; use another backup"
            )
        values = json.loads(path.read_text(encoding="utf-8"))
        if values.get("format") != MANIFEST_FORMAT:
            raise BackupError(
                f"{path} has format {values.get('format')!r}; this version of Noctis "
                f"reads format {MANIFEST_FORMAT}"
            )
        return cls(**values)


def _prepare_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BackupError(f"{output} exists and is not an empty folder; give a new folder")
    output.mkdir(parents=True, exist_ok=True)


def create_backup(
    settings: Settings,
    output: Path,
    *,
    objects_mode: ObjectsMode = "copy",
    previous: Path | None = None,
) -> BackupManifest:
    """Back up the index and the objects it references into the new folder ``output``.

    Services may keep running (see the module docstring for why the result is
    consistent). With ``previous``, an earlier backup folder on the same filesystem,
    objects it contains already are hard-linked instead of copied. Objects never change,
    so the result is a full backup that costs only the new objects.
    """
    _prepare_output(output)
    snapshot = snapshot_index(settings.resolved_database_url, output)
    logger.info(
        "index snapshot %s written: %d instance rows", snapshot.file_name, len(snapshot.objects)
    )
    store = create_object_store(settings)
    if objects_mode == "copy":
        missing = _copy_objects(store, snapshot.objects, output / OBJECTS_FOLDER, previous)
    else:
        listed = {item.key: item.size for item in list_objects(store)}
        missing = [key for key, size in snapshot.objects if listed.get(key) != size]
    with open(output / OBJECT_LIST_FILE, "w", encoding="utf-8") as listing:
        for key, size in snapshot.objects:
            listing.write(f"{key}\t{size}\n")
    manifest = BackupManifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        index_kind=snapshot.kind,
        index_file=snapshot.file_name,
        schema_revision=snapshot.schema_revision,
        objects_mode=objects_mode,
        object_count=len(snapshot.objects),
        object_bytes=sum(size for _, size in snapshot.objects),
        missing_objects=missing,
    )
    manifest.write(output)
    if missing:
        logger.warning(
            "%d objects referenced by the index snapshot were missing from the store "
            "(deleted during the backup, or lost before it); the manifest lists them",
            len(missing),
        )
    logger.info(
        "backup %s finished: %d objects, %d bytes, objects mode %s",
        output,
        manifest.object_count,
        manifest.object_bytes,
        objects_mode,
    )
    return manifest


def _copy_objects(
    store: ObjectStore,
    objects: list[tuple[str, int]],
    target_root: Path,
    previous: Path | None,
) -> list[str]:
    """Copy each object into ``target_root``; return the keys the store did not have."""
    missing = []
    for key, size in objects:
        target = target_root / key
        earlier = previous / OBJECTS_FOLDER / key if previous is not None else None
        if earlier is not None and earlier.is_file() and earlier.stat().st_size == size:
            link_or_copy(earlier, target)
            continue
        try:
            copied = copy_object_to_file(store, key, target)
        except ObjectNotFoundError:
            missing.append(key)
            continue
        if copied != size:
            raise BackupError(
                f"object {key} has {copied} bytes but its index row records {size}; run "
                "`python -m noctis_common.backup check` and repair the archive first"
            )
    return missing


def restore_backup(settings: Settings, source: Path, *, replace: bool = False) -> ConsistencyReport:
    """Restore the backup in ``source`` into the index and object store of ``settings``.

    Stop every service of the archive first. The index is restored into an empty
    database (or over the existing one with ``replace``), then each object that the
    store lacks is copied in. Returns the consistency check of the result.
    """
    manifest = BackupManifest.read(source)
    restore_index(
        settings.resolved_database_url,
        source / manifest.index_file,
        manifest.index_kind,
        replace=replace,
    )
    logger.info("index restored from %s", source / manifest.index_file)
    store = create_object_store(settings)
    if manifest.objects_mode == "copy":
        restored = _restore_objects(store, source, settings.data_dir)
        logger.info("%d objects copied into the object store", restored)
    database = Database(settings.resolved_database_url)
    try:
        return check_consistency(database, store, grace_s=0.0)
    finally:
        database.dispose()


def _restore_objects(store: ObjectStore, source: Path, scratch_root: Path) -> int:
    present = {item.key: item.size for item in list_objects(store)}
    restored = 0
    scratch_root.mkdir(parents=True, exist_ok=True)
    with (
        open(source / OBJECT_LIST_FILE, encoding="utf-8") as listing,
        tempfile.TemporaryDirectory(prefix="restore-", dir=scratch_root) as scratch,
    ):
        for line in listing:
            key, _, size_text = line.rstrip("\n").partition("\t")
            if present.get(key) == int(size_text):
                continue
            backed_up = source / OBJECTS_FOLDER / key
            if not backed_up.is_file():
                logger.warning("object %s is not in the backup; it stays missing", key)
                continue
            # put_file consumes its source, so it gets a copy of the backed-up file. A
            # hard link would make the archive and the backup share the same bytes.
            staged = Path(scratch, "object")
            shutil.copyfile(backed_up, staged)
            store.put_file(key, staged)
            staged.unlink(missing_ok=True)
            restored += 1
    return restored
