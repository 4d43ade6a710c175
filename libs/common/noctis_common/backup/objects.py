"""Listing, copying and moving aside the objects of the object store, for backups.

The :class:`~noctis_common.storage.ObjectStore` protocol has no listing or moving, so
these functions know the two backends: the filesystem store (a walk of its root folder)
and the S3 store (``ListObjectsV2`` and a server-side copy through its minio client).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from minio.commonconfig import CopySource
from minio.error import MinioException

from noctis_common.storage import (
    FileSystemObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    StorageError,
)
from noctis_common.storage.filesystem import fsync_directory

# Objects moved aside in an S3 bucket go under this prefix. Object keys start with a
# Study Instance UID, which begins with a digit, so no key of an instance can start so.
S3_QUARANTINE_PREFIX = "quarantine/"
COPY_CHUNK_BYTES = 1024 * 1024


class BackupError(Exception):
    """A backup, restore or check cannot go on; the message gives the reason and the fix."""


@dataclass(frozen=True)
class StoredObject:
    """One object found in the object store."""

    key: str
    size: int
    modified_at: datetime


def list_objects(store: ObjectStore) -> Iterator[StoredObject]:
    """Yield every object of ``store``, in no particular order.

    Files that the filesystem store is still writing (hidden ``.*.partial`` files) and
    objects already moved aside are left out.
    """
    if isinstance(store, FileSystemObjectStore):
        yield from _list_folder(store.root)
    elif isinstance(store, S3ObjectStore):
        yield from _list_bucket(store)
    else:
        raise BackupError(
            f"listing the objects of a {type(store).__name__} is not supported; "
            "backups support the filesystem and S3 object stores"
        )


def _list_folder(root: Path) -> Iterator[StoredObject]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            try:
                status = path.stat()
            except FileNotFoundError:
                continue  # deleted since the folder was read
            yield StoredObject(
                key=path.relative_to(root).as_posix(),
                size=status.st_size,
                modified_at=datetime.fromtimestamp(status.st_mtime, UTC),
            )


def _list_bucket(store: S3ObjectStore) -> Iterator[StoredObject]:
    try:
        for item in store.client.list_objects(store.bucket, recursive=True):
            key = str(item.object_name)
            if key.startswith(S3_QUARANTINE_PREFIX):
                continue
            modified_at = item.last_modified or datetime.now(UTC)
            yield StoredObject(key=key, size=int(item.size or 0), modified_at=modified_at)
    except MinioException as error:
        raise StorageError(
            f"listing S3 bucket {store.bucket!r} failed: {error}; check the NOCTIS_S3_* "
            "settings and that the access key may list the bucket"
        ) from error


def copy_object_to_file(store: ObjectStore, key: str, target: Path) -> int:
    """Copy object ``key`` into the file ``target``, durably; return its size in bytes.

    The bytes go to a hidden temporary file that is renamed to ``target`` once flushed,
    so an interrupted copy never leaves a partial file under the final name. Raises
    :class:`ObjectNotFoundError` when the object does not exist.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    size = 0
    try:
        with open(partial, "wb") as handle:
            for chunk in store.iter_range(key, 0, None):
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return size


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` a hard link to ``source``, or a copy across filesystems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def move_aside(store: ObjectStore, key: str, quarantine: str) -> str:
    """Move object ``key`` out of the store's key space, keeping its bytes; return where.

    For the filesystem store ``quarantine`` is a folder, for S3 a key prefix below
    :data:`S3_QUARANTINE_PREFIX`. Nothing is deleted before its copy is complete.
    """
    if isinstance(store, FileSystemObjectStore):
        return str(_move_file_aside(store.root, key, Path(quarantine)))
    if isinstance(store, S3ObjectStore):
        return _move_s3_object_aside(store, key, quarantine)
    raise BackupError(
        f"moving objects of a {type(store).__name__} aside is not supported; "
        "backups support the filesystem and S3 object stores"
    )


def _move_file_aside(root: Path, key: str, quarantine_dir: Path) -> Path:
    source = (root / key).resolve()
    if not source.is_relative_to(root):
        raise BackupError(f"object key {key!r} resolves outside the object store")
    target = quarantine_dir / key
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise BackupError(
            f"cannot move object {key!r} aside: {target} exists already; "
            "give another --quarantine folder"
        )
    try:
        os.replace(source, target)
    except FileNotFoundError as error:
        raise ObjectNotFoundError(key) from error
    except OSError:  # another filesystem: copy, flush, then remove the original
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, COPY_CHUNK_BYTES)
            dst.flush()
            os.fsync(dst.fileno())
        source.unlink()
    fsync_directory(target.parent)
    return target


def _move_s3_object_aside(store: S3ObjectStore, key: str, quarantine: str) -> str:
    prefix = quarantine.strip("/") + "/"
    if not prefix.startswith(S3_QUARANTINE_PREFIX):
        prefix = S3_QUARANTINE_PREFIX + prefix
    target = prefix + key
    try:
        # NOTE: a single server-side copy is limited to 5 GiB by S3.
        store.client.copy_object(store.bucket, target, CopySource(store.bucket, key))
        store.client.remove_object(store.bucket, key)
    except MinioException as error:
        raise StorageError(
            f"moving object {key!r} to {target!r} in S3 bucket {store.bucket!r} failed: {error}"
        ) from error
    return f"s3://{store.bucket}/{target}"
