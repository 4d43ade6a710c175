"""Listing, copying and moving aside the objects of the object store, for backups.

Listing goes through :meth:`~noctis_common.storage.ObjectStore.list_objects`. Moving an
object aside is specific to each backend: a rename into a quarantine folder for the
filesystem store, and a server-side copy under a quarantine prefix for S3.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from noctis_common.storage import (
    FileSystemObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    StoredObject,
)
from noctis_common.storage.filesystem import fsync_directory

# Objects moved aside in an S3 bucket go under this prefix. Object keys start with a
# Study Instance UID, which begins with a digit, so no key of an instance can start so.
S3_QUARANTINE_PREFIX = "quarantine/"
COPY_CHUNK_BYTES = 1024 * 1024


class BackupError(Exception):
    """A backup, restore or check cannot go on; the message gives the reason and the fix."""


def list_objects(store: ObjectStore) -> Iterator[StoredObject]:
    """Yield every object of ``store``, in no particular order.

    Objects still being written and objects already moved aside are left out. Raises
    :class:`~noctis_common.storage.StorageError` when the store cannot be listed.
    """
    for item in store.list_objects():
        if not item.key.startswith(S3_QUARANTINE_PREFIX):
            yield item


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
    store.move(key, target)
    return f"s3://{store.bucket}/{target}"
