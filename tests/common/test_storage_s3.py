"""The S3 object store against a real S3 server: SeaweedFS on loopback.

Covers what the backend-neutral tests in test_storage.py cannot: multipart uploads,
ranged reads, bucket creation, credential errors, retries across a server outage and
the durability rule (a put that returns has stored the whole object).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio.error import S3Error, ServerError
from sqlalchemy import func, select

from noctis_common.archive import StoreFailedError
from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance
from noctis_common.settings import Settings
from noctis_common.storage import S3ObjectStore, StorageError, create_object_store
from noctis_common.storage.s3 import create_http_client
from noctis_common.storage.s3_retry import is_transient_error
from tests.servers.seaweedfs import S3Credentials, SeaweedFS
from tests.support import make_dataset

MIB = 1024 * 1024
PART_SIZE = 5 * MIB  # the smallest part size S3 allows


class RecordingPoolManager(urllib3.PoolManager):
    """The S3 client's connection pool, recording each request; it can hold one back."""

    def __init__(self, **connection_pool_kw: Any) -> None:
        super().__init__(**connection_pool_kw)
        self.requests: list[tuple[str, str, str | None]] = []
        self.hold_when: Callable[[str, str], bool] | None = None
        self.request_held = threading.Event()
        self.release_request = threading.Event()

    def urlopen(  # type: ignore[override]  # the signature of PoolManager.urlopen
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        headers = kw.get("headers") or {}
        self.requests.append((method, url, headers.get("Range")))
        if (
            self.hold_when is not None
            and not self.request_held.is_set()
            and self.hold_when(method, url)
        ):
            self.request_held.set()
            self.release_request.wait(timeout=60)
        return super().urlopen(method, url, redirect=redirect, **kw)

    def ranged_gets(self) -> list[tuple[int, int]]:
        """Return the (first byte, last byte) of each ranged GET sent so far."""
        ranges = []
        for method, _, header in self.requests:
            if method == "GET" and header is not None:
                first, _, last = header.removeprefix("bytes=").partition("-")
                ranges.append((int(first), int(last) if last else -1))
        return ranges


def _settings(tmp_path: Path, server: SeaweedFS, **overrides: Any) -> Settings:
    values = {
        **server.noctis_settings(f"noctis-{uuid.uuid4().hex[:12]}"),
        "s3_part_size_bytes": PART_SIZE,
        "s3_retry_initial_s": 0.05,
        **overrides,
    }
    return Settings(data_dir=tmp_path / "var", **values)


def _recording_store(settings: Settings) -> tuple[S3ObjectStore, RecordingPoolManager]:
    pool = RecordingPoolManager(**create_http_client(settings).connection_pool_kw)
    return S3ObjectStore.from_settings(settings, http_client=pool), pool


def _content(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _source(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.spool"
    path.write_bytes(content)
    return path


def _stored_bytes(server: SeaweedFS, bucket: str, key: str) -> bytes:
    """Read an object back with a client of its own, bypassing the store under test."""
    response = server.client().get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _object_missing(server: SeaweedFS, bucket: str, key: str) -> bool:
    try:
        server.client().stat_object(bucket, key)
    except S3Error as error:
        return error.code == "NoSuchKey"
    return False


@pytest.fixture
def own_server() -> Iterator[SeaweedFS]:
    """A SeaweedFS server of this test alone, which the test may kill and restart."""
    server = SeaweedFS()
    server.start()
    try:
        yield server
    finally:
        server.kill()
        server.close()


# -- uploads ---------------------------------------------------------------------------


def test_small_object_is_one_put(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store, pool = _recording_store(_settings(tmp_path, s3_server))
    content = _content(100_000)

    store.put_file("small.dcm", _source(tmp_path, content))

    puts = [url for method, url, _ in pool.requests if method == "PUT" and "small.dcm" in url]
    assert len(puts) == 1
    assert "partNumber" not in puts[0]
    assert _stored_bytes(s3_server, store.bucket, "small.dcm") == content


def test_large_object_uploads_in_parts(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store, pool = _recording_store(_settings(tmp_path, s3_server))
    content = _content(2 * PART_SIZE + 12345)
    source = _source(tmp_path, content)

    store.put_file("large.dcm", source)

    part_puts = [url for method, url, _ in pool.requests if method == "PUT" and "partNumber" in url]
    completions = [
        url for method, url, _ in pool.requests if method == "POST" and "uploadId" in url
    ]
    assert len(part_puts) == 3
    assert len(completions) == 1
    assert not source.exists()
    assert store.size("large.dcm") == len(content)
    assert _stored_bytes(s3_server, store.bucket, "large.dcm") == content
    assert b"".join(store.iter_range("large.dcm", 0, None)) == content


# -- ranged reads ----------------------------------------------------------------------


def test_open_reads_only_requested_range(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store, pool = _recording_store(_settings(tmp_path, s3_server))
    content = _content(3 * PART_SIZE)
    store.put_file("frames.dcm", _source(tmp_path, content))
    start = 2 * PART_SIZE + 777

    with store.open("frames.dcm") as handle:
        handle.seek(start)
        first = handle.read(1000)
        handle.seek(-500, 1)
        second = handle.read(1000)
        handle.seek(-10, 2)
        tail = handle.read()

    assert first == content[start : start + 1000]
    assert second == content[start + 500 : start + 1500]
    assert tail == content[-10:]
    fetched = sum(last - first_byte + 1 for first_byte, last in pool.ranged_gets())
    assert fetched < 128 * 1024
    assert len(pool.ranged_gets()) == 2


def test_sequential_reads_grow_read_ahead(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store, pool = _recording_store(_settings(tmp_path, s3_server))
    content = _content(3 * PART_SIZE)
    store.put_file("sequential.dcm", _source(tmp_path, content))

    chunks = []
    with store.open("sequential.dcm") as handle:
        while chunk := handle.read(8192):
            chunks.append(chunk)

    assert b"".join(chunks) == content
    assert len(pool.ranged_gets()) < 16


def test_iter_range_streams_one_request(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store, pool = _recording_store(_settings(tmp_path, s3_server))
    content = _content(PART_SIZE)
    store.put_file("stream.dcm", _source(tmp_path, content))

    received = b"".join(store.iter_range("stream.dcm", 1000, 3 * MIB))

    assert received == content[1000 : 1000 + 3 * MIB]
    assert pool.ranged_gets() == [(1000, 1000 + 3 * MIB - 1)]


def test_wado_frame_reads_a_range(
    tmp_path: Path, s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from noctis_common.web import create_app
    from noctis_wado.routes import router
    from tests.wado.helpers import instance_url, parse_multipart, store_dataset

    pools: list[RecordingPoolManager] = []

    def recording_http_client(settings: Settings) -> urllib3.PoolManager:
        pools.append(RecordingPoolManager(**create_http_client(settings).connection_pool_kw))
        return pools[-1]

    monkeypatch.setattr("noctis_common.storage.s3.create_http_client", recording_http_client)
    dataset = make_dataset(rows=256, columns=256)
    dataset.NumberOfFrames = 40
    frame_bytes = 256 * 256 * 2
    dataset.PixelData = _content(40 * frame_bytes)
    context = ArchiveContext.create(_settings(tmp_path, s3_server))
    try:
        stored = store_dataset(context, dataset, tmp_path / "in")
        app = create_app("Noctis WADO-RS over S3", [router], context.settings, context)
        pools[0].requests.clear()
        with TestClient(app) as client:
            response = client.get(f"{instance_url(stored)}/frames/31")
    finally:
        context.close()

    assert response.status_code == 200
    assert (
        parse_multipart(response)[0].content
        == dataset.PixelData[30 * frame_bytes : 31 * frame_bytes]
    )
    fetched = sum(last - first + 1 for first, last in pools[0].ranged_gets())
    assert fetched < 40 * frame_bytes // 4


# -- bucket and credentials ------------------------------------------------------------


def test_missing_bucket_is_created(tmp_path: Path, s3_server: SeaweedFS) -> None:
    settings = _settings(tmp_path, s3_server)
    assert not s3_server.client().bucket_exists(settings.s3_bucket)

    store = S3ObjectStore.from_settings(settings)

    assert s3_server.client().bucket_exists(settings.s3_bucket)
    store.check()


@pytest.mark.parametrize("wrong", ["secret_key", "access_key"])
def test_wrong_credentials_name_the_settings(
    tmp_path: Path, s3_server: SeaweedFS, wrong: str
) -> None:
    good = s3_server.credentials
    credentials = (
        S3Credentials(good.access_key, "not-the-secret-key-0000")
        if wrong == "secret_key"
        else S3Credentials("unknown-access-key", good.secret_key)
    )
    settings = _settings(
        tmp_path,
        s3_server,
        s3_access_key=credentials.access_key,
        s3_secret_key=credentials.secret_key,
        s3_retry_max_s=0,
    )

    with pytest.raises(StorageError) as raised:
        S3ObjectStore.from_settings(settings)

    message = str(raised.value)
    assert f"rejected access key {credentials.access_key!r}" in message
    assert "NOCTIS_S3_ACCESS_KEY and NOCTIS_S3_SECRET_KEY" in message
    assert credentials.secret_key not in message


def test_key_without_bucket_rights_explains(tmp_path: Path, s3_server: SeaweedFS) -> None:
    limited = s3_server.limited_credentials
    settings = _settings(
        tmp_path,
        s3_server,
        s3_access_key=limited.access_key,
        s3_secret_key=limited.secret_key,
        s3_retry_max_s=0,
    )

    with pytest.raises(StorageError, match="creating the missing S3 bucket") as raised:
        S3ObjectStore.from_settings(settings)

    assert "allow this access key to create buckets" in str(raised.value)
    assert not s3_server.client().bucket_exists(settings.s3_bucket)


def test_limited_key_uses_existing_bucket(tmp_path: Path, s3_server: SeaweedFS) -> None:
    limited = s3_server.limited_credentials
    settings = _settings(
        tmp_path, s3_server, s3_access_key=limited.access_key, s3_secret_key=limited.secret_key
    )
    s3_server.create_bucket(settings.s3_bucket)

    store = S3ObjectStore.from_settings(settings)
    store.put_file("limited.dcm", _source(tmp_path, b"limited"))

    assert b"".join(store.iter_range("limited.dcm", 0, None)) == b"limited"


def test_invalid_bucket_name_is_rejected(tmp_path: Path, s3_server: SeaweedFS) -> None:
    settings = _settings(tmp_path, s3_server, s3_bucket="No_Such_Name")

    with pytest.raises(StorageError, match=r"'No_Such_Name'.* InvalidBucketName") as raised:
        S3ObjectStore.from_settings(settings)

    assert "set NOCTIS_S3_BUCKET to a valid bucket name" in str(raised.value)


def test_invalid_endpoint_url_is_rejected(tmp_path: Path, s3_server: SeaweedFS) -> None:
    settings = _settings(tmp_path, s3_server, s3_endpoint=f"{s3_server.url}/some/path")

    with pytest.raises(StorageError, match="without a path in NOCTIS_S3_ENDPOINT"):
        S3ObjectStore.from_settings(settings)


def test_endpoint_may_be_a_url(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, s3_server, s3_endpoint=s3_server.url))

    store.put_file("url.dcm", _source(tmp_path, b"by URL"))

    assert store.exists("url.dcm")


def test_check_fails_once_bucket_deleted(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, s3_server))
    store.check()

    s3_server.client().remove_bucket(store.bucket)

    with pytest.raises(StorageError, match="the bucket does not exist"):
        store.check()


def test_put_of_missing_file_fails(tmp_path: Path, s3_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, s3_server))

    with pytest.raises(StorageError, match="the local file could not be read"):
        store.put_file("missing.dcm", tmp_path / "no-such-spool-file")

    assert not store.exists("missing.dcm")


def test_environment_selects_the_bucket(
    tmp_path: Path, s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"noctis-{uuid.uuid4().hex[:12]}"
    for name, value in s3_server.noctis_environment(bucket).items():
        monkeypatch.setenv(name, value)

    store = create_object_store(Settings(data_dir=tmp_path))
    store.put_file("from-environment.dcm", _source(tmp_path, b"environment"))

    assert _stored_bytes(s3_server, bucket, "from-environment.dcm") == b"environment"


# -- transient errors and outages ------------------------------------------------------


NO_CONNECTION: Any = None  # urllib3's errors only keep the connection for messages


def _s3_error(code: str, status: int) -> S3Error:
    return S3Error(urllib3.HTTPResponse(status=status), code, "test", "/bucket", None, None)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_s3_error("SlowDown", 503), True),
        (_s3_error("InternalError", 500), True),
        (_s3_error("RequestTimeout", 400), True),
        (_s3_error("NoSuchKey", 404), False),
        (_s3_error("AccessDenied", 403), False),
        (ServerError("server failed with HTTP status code 502", 502), True),
        (urllib3.exceptions.NewConnectionError(NO_CONNECTION, "Connection refused"), True),
        (urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"), True),
        (urllib3.exceptions.ReadTimeoutError(NO_CONNECTION, "/", "read timed out"), True),
        (urllib3.exceptions.SSLError("certificate verify failed"), False),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (FileNotFoundError(2, "No such file or directory"), False),
    ],
)
def test_transient_errors_are_classified(error: Exception, transient: bool) -> None:
    assert is_transient_error(error) is transient


def test_put_waits_for_restarted_server(tmp_path: Path, own_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, own_server, s3_retry_max_s=30))
    content = _content(200_000)
    own_server.kill()
    failures: list[BaseException] = []

    def put() -> None:
        try:
            store.put_file("after-restart.dcm", _source(tmp_path, content))
        except BaseException as error:
            failures.append(error)

    writer = threading.Thread(target=put)
    writer.start()
    threading.Event().wait(1.0)  # let the put fail a few times first
    own_server.start()
    writer.join(timeout=60)

    assert not writer.is_alive()
    assert failures == []
    assert _stored_bytes(own_server, store.bucket, "after-restart.dcm") == content


def test_put_fails_after_retry_window(tmp_path: Path, own_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, own_server, s3_retry_max_s=0.5))
    source = _source(tmp_path, _content(1000))
    own_server.kill()

    with pytest.raises(StorageError, match=r"failed \d+ times in .* unreachable or overloaded"):
        store.put_file("never.dcm", source)

    own_server.start()
    assert source.exists()
    assert _object_missing(own_server, store.bucket, "never.dcm")


@pytest.mark.parametrize("restarted", [True, False], ids=["restarted", "stays-down"])
def test_crash_during_multipart_put(tmp_path: Path, own_server: SeaweedFS, restarted: bool) -> None:
    """The server dies after the first part: the put succeeds whole or fails, leaving nothing."""
    settings = _settings(
        tmp_path, own_server, s3_parallel_parts=1, s3_retry_max_s=30 if restarted else 1.0
    )
    store, pool = _recording_store(settings)
    pool.hold_when = lambda method, url: method == "PUT" and "partNumber=2" in url
    content = _content(2 * PART_SIZE + 1)
    outcome: list[BaseException | None] = []

    def put() -> None:
        try:
            store.put_file("crash.dcm", _source(tmp_path, content))
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    writer = threading.Thread(target=put)
    writer.start()
    assert pool.request_held.wait(timeout=60)
    own_server.kill()
    pool.release_request.set()
    if restarted:
        threading.Event().wait(1.0)
        own_server.start()
    writer.join(timeout=90)
    if not restarted:
        own_server.start()

    assert not writer.is_alive()
    if restarted:
        assert outcome == [None]
        assert _stored_bytes(own_server, store.bucket, "crash.dcm") == content
    else:
        assert isinstance(outcome[0], StorageError)
        assert _object_missing(own_server, store.bucket, "crash.dcm")


def test_stream_resumes_after_restart(tmp_path: Path, own_server: SeaweedFS) -> None:
    store, pool = _recording_store(_settings(tmp_path, own_server, s3_retry_max_s=30))
    content = _content(8 * PART_SIZE)
    store.put_file("resume.dcm", _source(tmp_path, content))
    pool.requests.clear()

    stream = store.iter_range("resume.dcm", 0, None)
    received = [next(stream)]
    own_server.kill()
    own_server.start()
    received.extend(stream)

    gets = [header for method, url, header in pool.requests if method == "GET" and "resume" in url]
    assert b"".join(received) == content
    assert len(gets) >= 2
    assert gets[0] is None
    assert gets[-1] is not None
    assert int(gets[-1].removeprefix("bytes=").rstrip("-")) > 0


def test_server_restart_keeps_objects(tmp_path: Path, own_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, own_server))
    store.put_file("kept.dcm", _source(tmp_path, b"kept"))

    own_server.restart()

    assert _stored_bytes(own_server, store.bucket, "kept.dcm") == b"kept"


def test_check_fails_while_server_down(tmp_path: Path, own_server: SeaweedFS) -> None:
    store = S3ObjectStore.from_settings(_settings(tmp_path, own_server))
    own_server.kill()

    with pytest.raises(StorageError, match=r"checking S3 bucket .* failed: .*refused"):
        store.check()


def test_archive_store_fails_while_down(tmp_path: Path, own_server: SeaweedFS) -> None:
    context = ArchiveContext.create(_settings(tmp_path, own_server, s3_retry_max_s=0.3))
    try:
        dataset = make_dataset()
        path = tmp_path / "sent.dcm"
        dataset.save_as(path, enforce_file_format=True)
        spool = context.archive.new_spool_path()
        spool.write_bytes(path.read_bytes())
        own_server.kill()

        with pytest.raises(StoreFailedError, match="unreachable or overloaded"):
            context.archive.store_part10(spool)

        with context.database.read_session() as session:
            indexed = session.scalar(select(func.count()).select_from(Instance))
    finally:
        context.close()
    assert indexed == 0
