"""The object store interface and its errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol


class ObjectNotFoundError(LookupError):
    """No object is stored under the requested key."""


class StorageError(OSError):
    """The object store failed to write, read or delete an object."""


@dataclass(frozen=True)
class StoredObject:
    """One object found by :meth:`ObjectStore.list_objects`."""

    key: str
    size: int
    modified_at: datetime


class ObjectStore(Protocol):
    """Durable storage of immutable objects addressed by key."""

    def put_file(self, key: str, source: Path) -> None:
        """Store the file at ``source`` under ``key``; ``source`` is consumed.

        Returns only after the object is durable. On failure nothing is visible under
        ``key`` that was not there before.
        """

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading, or raise :class:`ObjectNotFoundError`."""

    def iter_range(self, key: str, start: int, length: int | None) -> Iterator[bytes]:
        """Yield the bytes of the object from ``start``; ``length=None`` reads to the end."""

    def size(self, key: str) -> int:
        """Return the object's size in bytes."""

    def exists(self, key: str) -> bool: ...

    def check(self) -> None:
        """Raise :class:`StorageError` unless the store can be read and written now."""

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""

    def list_objects(self) -> Iterator[StoredObject]:
        """Yield every complete object, in no particular order.

        Objects still being written are left out. Raises :class:`StorageError` when the
        store cannot be listed; the listing may have yielded some objects by then.
        """
