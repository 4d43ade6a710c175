"""Object store on an S3-compatible server through the ``minio`` client.

Durability: :meth:`S3ObjectStore.put_file` returns only after the server acknowledged
the complete object, by its success response to the single PUT or, for objects larger
than the part size, to CompleteMultipartUpload. S3 makes an object visible under its
key only then, so readers never see a partial object and a failed upload leaves
nothing under the key.

Uploads stream from the spool file in parts of a bounded size, reads fetch byte ranges,
and requests that fail for a transient reason are retried with backoff for a bounded
time (:mod:`noctis_common.storage.s3_retry`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from noctis_common.settings import Settings
from noctis_common.storage.base import ObjectNotFoundError, StorageError, StoredObject
from noctis_common.storage.s3_reader import S3ObjectReader
from noctis_common.storage.s3_retry import RetryPolicy, is_transient_error

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_BYTES = 1024 * 1024
DEFAULT_PART_SIZE_BYTES = 16 * 1024 * 1024
CONTENT_TYPE = "application/dicom"
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
# Errors that a request through minio can raise: S3 and HTTP errors, urllib3's
# connection errors, OSError from the socket or the local file, ValueError on invalid
# arguments.
REQUEST_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError)


def parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Return the ``host:port`` and TLS use that ``endpoint`` (host:port or URL) names."""
    if "://" not in endpoint:
        return endpoint, secure
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StorageError(
            f"invalid S3 endpoint {endpoint!r}: give host:port or an http:// or https:// URL "
            "without a path in NOCTIS_S3_ENDPOINT"
        )
    return parts.netloc, parts.scheme == "https"


def create_http_client(settings: Settings) -> urllib3.PoolManager:
    """Return the connection pool of the S3 client, with timeouts and no own retries."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(
            connect=settings.s3_connect_timeout_s, read=settings.s3_read_timeout_s
        ),
        maxsize=settings.s3_max_connections,
        # S3ObjectStore retries with backoff and logs each retry; urllib3 must not retry
        # underneath it as well.
        retries=False,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or None,
    )


class S3ObjectStore:
    """Objects in one bucket of an S3-compatible server.

    The bucket is created when missing. Reads fetch only the byte ranges asked for.
    Requests that fail for a transient reason are retried within the limits of ``retry``;
    other failures raise :class:`StorageError` (or :class:`ObjectNotFoundError`) at once.
    """

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        endpoint: str = "the S3 server",
        access_key: str = "",
        part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
        parallel_parts: int = 2,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.endpoint = endpoint
        self.access_key = access_key
        self.part_size_bytes = part_size_bytes
        self.parallel_parts = parallel_parts
        self.retry = retry or RetryPolicy(max_s=15.0, initial_s=0.2)
        self._location = f"S3 bucket {bucket!r} at {endpoint}"
        self._ensure_bucket()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http_client: urllib3.PoolManager | None = None
    ) -> S3ObjectStore:
        """Connect to the bucket that ``settings`` name; ``http_client`` replaces the pool."""
        endpoint, secure = parse_endpoint(settings.s3_endpoint, settings.s3_secure)
        try:
            client = Minio(
                endpoint,
                access_key=settings.s3_access_key or None,
                secret_key=settings.s3_secret_key.get_secret_value() or None,
                secure=secure,
                region=settings.s3_region,
                http_client=http_client or create_http_client(settings),
            )
        except ValueError as error:
            raise StorageError(
                f"invalid S3 endpoint {settings.s3_endpoint!r}: {error}; give host:port or "
                "an http:// or https:// URL in NOCTIS_S3_ENDPOINT"
            ) from error
        return cls(
            client,
            settings.s3_bucket,
            endpoint=endpoint,
            access_key=settings.s3_access_key,
            part_size_bytes=settings.s3_part_size_bytes,
            parallel_parts=settings.s3_parallel_parts,
            retry=RetryPolicy(max_s=settings.s3_retry_max_s, initial_s=settings.s3_retry_initial_s),
        )

    # -- ObjectStore -------------------------------------------------------------------

    def put_file(self, key: str, source: Path) -> None:
        """Upload ``source`` under ``key``: one PUT, or a multipart upload above the part size.

        Each attempt streams the file again; a multipart upload keeps at most
        ``parallel_parts + 1`` parts in memory. Returns after the server acknowledged
        the complete object; ``source`` is deleted then.
        """

        def upload() -> None:
            self.client.fput_object(
                self.bucket,
                key,
                str(source),
                content_type=CONTENT_TYPE,
                part_size=self.part_size_bytes,
                num_parallel_uploads=self.parallel_parts,
            )

        self._call(f"storing object {key!r} in {self._location}", upload)
        source.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading by position; each read fetches only its byte range."""
        size = self.size(key)
        reader = S3ObjectReader(
            lambda start, length: self._read_range(key, start, length),
            size,
            name=f"s3://{self.bucket}/{key}",
        )
        return cast(BinaryIO, reader)

    def iter_range(self, key: str, start: int, length: int | None) -> Iterator[bytes]:
        """Stream ``length`` bytes from ``start`` (to the end for ``None``) by one ranged GET.

        A transfer cut off by a transient error resumes where it stopped.
        """
        description = f"reading object {key!r} from {self._location}"
        try:
            yield from self._stream_range(key, start, length, description)
        except (ObjectNotFoundError, StorageError):
            raise
        except REQUEST_ERRORS as error:
            raise self._translate(description, error, key) from error

    def size(self, key: str) -> int:
        stat = self._call(
            f"reading the size of object {key!r} in {self._location}",
            lambda: self.client.stat_object(self.bucket, key),
            key,
        )
        return int(stat.size or 0)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        # S3 returns success for a missing key too.
        self._call(
            f"deleting object {key!r} from {self._location}",
            lambda: self.client.remove_object(self.bucket, key),
        )

    def list_objects(self) -> Iterator[StoredObject]:
        """Yield every object of the bucket, listed by ``ListObjectsV2`` requests, page by page.

        A page whose request fails for a transient reason is requested again, within
        the retry limits, from the last key yielded.
        """
        description = f"listing the objects of {self._location}"
        retrying = self.retry.begin(description)
        start_after: str | None = None
        while True:
            try:
                for item in self.client.list_objects(
                    self.bucket, recursive=True, start_after=start_after
                ):
                    key = str(item.object_name)
                    start_after = key
                    retrying.reset()
                    yield StoredObject(
                        key=key,
                        size=int(item.size or 0),
                        modified_at=item.last_modified or datetime.now(UTC),
                    )
                return
            except REQUEST_ERRORS as error:
                if not is_transient_error(error):
                    raise self._translate(description, error) from error
                # Raises StorageError once the retry time is used up.
                retrying.wait_or_raise(error)

    def move(self, key: str, target_key: str) -> None:
        """Move object ``key`` to ``target_key`` in the bucket: a server-side copy, then delete.

        The original is deleted only after the server acknowledged the copy. Raises
        :class:`ObjectNotFoundError` when ``key`` does not exist.
        """
        # NOTE: S3 limits a single server-side copy to objects of 5 GiB.
        self._call(
            f"copying object {key!r} to {target_key!r} in {self._location}",
            lambda: self.client.copy_object(self.bucket, target_key, CopySource(self.bucket, key)),
            key,
        )
        self.delete(key)

    def check(self) -> None:
        """Raise :class:`StorageError` unless the bucket is reachable with the credentials.

        Sends one request without retries, for readiness probes.
        """
        description = f"checking {self._location}"
        try:
            found = self.client.bucket_exists(self.bucket)
        except REQUEST_ERRORS as error:
            raise self._translate(description, error) from error
        if not found:
            raise StorageError(
                f"{description} failed: the bucket does not exist; create it or restart "
                "the service, which creates a missing bucket"
            )

    # -- internals ---------------------------------------------------------------------

    def _ensure_bucket(self) -> None:
        """Create the bucket unless it exists; raise a clear error when that is not allowed."""
        if self._call(f"opening {self._location}", lambda: self.client.bucket_exists(self.bucket)):
            return

        def create() -> None:
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as error:
                # Another replica that started at the same time may have created it.
                if error.code != "BucketAlreadyOwnedByYou":
                    raise

        self._call(
            f"creating the missing {self._location}",
            create,
            advice="create the bucket beforehand or allow this access key to create buckets",
        )
        logger.info("created S3 bucket %s at %s", self.bucket, self.endpoint)

    def _call(
        self,
        description: str,
        operation: Callable[[], T],
        key: str | None = None,
        *,
        advice: str | None = None,
    ) -> T:
        """Run one S3 request with retries; raise errors as the ObjectStore types."""
        try:
            return self.retry.run(operation, description)
        except (ObjectNotFoundError, StorageError):
            raise
        except REQUEST_ERRORS as error:
            raise self._translate(description, error, key, advice=advice) from error

    def _read_range(self, key: str, start: int, length: int) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, key, offset=start, length=length)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(
            f"reading {length} bytes at byte {start} of object {key!r} from {self._location}",
            read,
            key,
        )

    def _stream_range(
        self, key: str, start: int, length: int | None, description: str
    ) -> Iterator[bytes]:
        end = None if length is None else start + length
        position = start
        retrying = self.retry.begin(description)
        while end is None or position < end:
            remaining = 0 if end is None else end - position  # minio reads to the end on 0
            try:
                response = self.client.get_object(
                    self.bucket, key, offset=position, length=remaining
                )
            except S3Error as error:
                if error.code == "InvalidRange":
                    return  # the range starts at or after the end of the object
                retrying.wait_or_raise(error)
                continue
            except REQUEST_ERRORS as error:
                retrying.wait_or_raise(error)
                continue
            try:
                for chunk in response.stream(CHUNK_BYTES):
                    position += len(chunk)
                    retrying.reset()
                    yield chunk
                return
            except REQUEST_ERRORS as error:
                retrying.wait_or_raise(error)  # then resume at ``position``
            finally:
                response.close()
                response.release_conn()

    def _translate(
        self,
        description: str,
        error: BaseException,
        key: str | None = None,
        *,
        advice: str | None = None,
    ) -> Exception:
        """Return the ObjectStore error for a request error that is not retried."""
        if isinstance(error, S3Error):
            if key is not None and error.code in MISSING_OBJECT_CODES:
                return ObjectNotFoundError(key)
            reason = f"{error.code}: {error.message} (HTTP {error.response.status})"
            if error.code in CREDENTIAL_CODES:
                hint = (
                    f"the server rejected access key {self.access_key!r}; check "
                    "NOCTIS_S3_ACCESS_KEY and NOCTIS_S3_SECRET_KEY and the key's permissions"
                )
            elif error.code == "InvalidBucketName":
                hint = (
                    "set NOCTIS_S3_BUCKET to a valid bucket name: 3 to 63 lowercase letters, "
                    "digits, dots and hyphens"
                )
            elif error.code == "NoSuchBucket":
                hint = (
                    "the bucket was deleted; create it again or restart the service, which "
                    "creates a missing bucket"
                )
            else:
                hint = "see the S3 server's log for the reason"
        elif isinstance(error, urllib3.exceptions.MaxRetryError):
            reason = str(error.reason)
            hint = "check NOCTIS_S3_ENDPOINT and NOCTIS_S3_SECURE"
        elif isinstance(error, urllib3.exceptions.HTTPError | ConnectionError):
            reason = str(error)
            hint = "check NOCTIS_S3_ENDPOINT and NOCTIS_S3_SECURE, and that the server runs"
        elif isinstance(error, OSError):
            reason = str(error)
            hint = "the local file could not be read; check the spool folder and its disk"
        else:
            reason = str(error)
            hint = "check the S3 settings (NOCTIS_S3_*) and the S3 server"
        if advice:
            hint = f"{hint}, or {advice}"
        return StorageError(f"{description} failed: {reason}; {hint}")
