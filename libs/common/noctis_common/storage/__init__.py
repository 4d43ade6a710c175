"""Object storage behind one interface: local filesystem (default) or S3.

Writers hand over a complete file from the spool; the backend makes it visible under
its key only once all bytes are durable, so a reader never sees a partial object.
"""

from __future__ import annotations

from noctis_common.settings import Settings
from noctis_common.storage.base import (
    ObjectNotFoundError,
    ObjectStore,
    StorageError,
    StoredObject,
)
from noctis_common.storage.filesystem import FileSystemObjectStore
from noctis_common.storage.s3 import S3ObjectStore

__all__ = [
    "FileSystemObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "S3ObjectStore",
    "StorageError",
    "StoredObject",
    "create_object_store",
]


def create_object_store(settings: Settings) -> ObjectStore:
    """Build the object store that ``settings.storage_backend`` selects."""
    if settings.storage_backend == "s3":
        return S3ObjectStore.from_settings(settings)
    return FileSystemObjectStore(settings.objects_dir)
