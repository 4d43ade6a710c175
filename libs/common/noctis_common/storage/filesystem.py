"""Object store on a local filesystem."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from noctis_common.storage.base import ObjectNotFoundError, StorageError, StoredObject

CHUNK_BYTES = 1024 * 1024


def fsync_directory(path: Path) -> None:
    """Flush a directory entry so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSystemObjectStore:
    """Objects as files under one root folder, written by fsync and atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # normpath removes ".." without a system call per path component, as resolve()
        # would make; keys never contain symbolic links.
        path = Path(os.path.normpath(self.root / key))
        # Keys are built from validated UIDs; this check guards against a caller bug.
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"object key {key!r} resolves outside the object store")
        return path

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(source, "rb+") as handle:
                os.fsync(handle.fileno())
            if os.stat(source).st_dev == os.stat(target.parent).st_dev:
                os.replace(source, target)
            else:
                # The spool is on another filesystem: copy into a temporary name next to
                # the target, flush it, then rename it into place.
                partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
                with open(source, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    dst.flush()
                    os.fsync(dst.fileno())
                os.replace(partial, target)
                source.unlink()
            fsync_directory(target.parent)
        except OSError as error:
            raise StorageError(f"failed to store object {key!r}: {error}") from error

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as error:
            raise ObjectNotFoundError(key) from error

    def iter_range(self, key: str, start: int, length: int | None) -> Iterator[bytes]:
        with self.open(key) as handle:
            handle.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                size = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
                chunk = handle.read(size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as error:
            raise ObjectNotFoundError(key) from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check(self) -> None:
        """Raise :class:`StorageError` unless the root folder exists and is writable."""
        if not self.root.is_dir():
            raise StorageError(
                f"object store folder {self.root} is missing; restore it or fix NOCTIS_DATA_DIR"
            )
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(
                f"object store folder {self.root} is not writable (read-only filesystem or "
                "permissions); make it writable for this process"
            )

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as error:
            raise StorageError(f"failed to delete object {key!r}: {error}") from error

    def list_objects(self) -> Iterator[StoredObject]:
        """Yield every file under the root folder, leaving out hidden ``.*`` files and folders.

        The hidden files are copies still being written (``.<name>.<pid>.partial``).
        """

        def walk_failed(error: OSError) -> None:
            raise StorageError(
                f"listing object store folder {self.root} failed: {error}; check that the "
                "folder exists and that this process may read it"
            ) from error

        for folder, subfolders, files in os.walk(self.root, onerror=walk_failed):
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
                    key=path.relative_to(self.root).as_posix(),
                    size=status.st_size,
                    modified_at=datetime.fromtimestamp(status.st_mtime, UTC),
                )
