"""Object store on an S3-compatible server through the ``minio`` client.

An S3 PUT is atomic: the object becomes visible under its key only when the upload
completed, so readers never see a partial object.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from minio import Minio
from minio.error import S3Error

from noctis_common.settings import Settings
from noctis_common.storage.base import ObjectNotFoundError, StorageError

CHUNK_BYTES = 1024 * 1024
MULTIPART_PART_BYTES = 16 * 1024 * 1024
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NotFound"}


class S3ObjectStore:
    """Objects in one bucket of an S3-compatible server."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        except S3Error as error:
            raise StorageError(f"failed to open S3 bucket {bucket!r}: {error}") from error

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key or None,
            secret_key=settings.s3_secret_key or None,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        return cls(client, settings.s3_bucket)

    def put_file(self, key: str, source: Path) -> None:
        try:
            self.client.fput_object(
                self.bucket,
                key,
                str(source),
                content_type="application/dicom",
                part_size=MULTIPART_PART_BYTES,
            )
        except (S3Error, OSError) as error:
            raise StorageError(f"failed to store object {key!r} in S3: {error}") from error
        source.unlink(missing_ok=True)

    def _get(self, key: str, offset: int = 0, length: int = 0) -> Any:
        try:
            return self.client.get_object(self.bucket, key, offset=offset, length=length)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise ObjectNotFoundError(key) from error
            raise StorageError(f"failed to read object {key!r} from S3: {error}") from error

    def open(self, key: str) -> BinaryIO:
        # NOTE: this reads the whole object into memory; WADO streams through
        # iter_range instead, which keeps at most one chunk in memory.
        response = self._get(key)
        try:
            return io.BytesIO(cast(bytes, response.read()))
        finally:
            response.close()
            response.release_conn()

    def iter_range(self, key: str, start: int, length: int | None) -> Iterator[bytes]:
        response = self._get(key, offset=start, length=length or 0)
        try:
            yield from response.stream(CHUNK_BYTES)
        finally:
            response.close()
            response.release_conn()

    def size(self, key: str) -> int:
        try:
            return int(self.client.stat_object(self.bucket, key).size or 0)
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise ObjectNotFoundError(key) from error
            raise StorageError(f"failed to stat object {key!r} in S3: {error}") from error

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except S3Error as error:
            raise StorageError(f"failed to delete object {key!r} from S3: {error}") from error
