"""Object stores: the filesystem backend and the S3 backend against SeaweedFS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.storage import (
    FileSystemObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    create_object_store,
)
from tests.servers.seaweedfs import SeaweedFS
from tests.support import dataset_bytes, make_dataset


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "filesystem":
        yield FileSystemObjectStore(tmp_path / "objects")
        return
    server: SeaweedFS = request.getfixturevalue("s3_server")
    settings = Settings(
        data_dir=tmp_path, **server.noctis_settings(f"noctis-{uuid.uuid4().hex[:8]}")
    )
    yield create_object_store(settings)


def _source(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(content)
    return path


def test_put_file_then_read_back(store: ObjectStore, tmp_path: Path) -> None:
    content = bytes(range(256)) * 5000
    source = _source(tmp_path, content)

    store.put_file("1.2/3.4/5.6.abc.dcm", source)

    assert not source.exists()
    assert store.exists("1.2/3.4/5.6.abc.dcm")
    assert store.size("1.2/3.4/5.6.abc.dcm") == len(content)
    with store.open("1.2/3.4/5.6.abc.dcm") as handle:
        assert handle.read() == content


def test_iter_range_reads_a_slice(store: ObjectStore, tmp_path: Path) -> None:
    content = bytes(range(256)) * 10000
    store.put_file("range.dcm", _source(tmp_path, content))

    assert b"".join(store.iter_range("range.dcm", 1000, 5000)) == content[1000:6000]
    assert b"".join(store.iter_range("range.dcm", 2_000_000, None)) == content[2_000_000:]


def test_iter_range_empty_cases(store: ObjectStore, tmp_path: Path) -> None:
    store.put_file("short.dcm", _source(tmp_path, b"0123456789"))

    assert b"".join(store.iter_range("short.dcm", 3, 0)) == b""
    assert b"".join(store.iter_range("short.dcm", 10, None)) == b""
    assert b"".join(store.iter_range("short.dcm", 25, None)) == b""


def test_open_reads_by_position(store: ObjectStore, tmp_path: Path) -> None:
    content = bytes(range(256)) * 4000
    store.put_file("seek.dcm", _source(tmp_path, content))

    with store.open("seek.dcm") as handle:
        handle.seek(500_000)
        middle = handle.read(100)
        position = handle.tell()
        handle.seek(-100, 2)
        tail = handle.read(1000)
        past_end = handle.read(10)
        handle.seek(0)
        whole = handle.read()

    assert middle == content[500_000:500_100]
    assert position == 500_100
    assert tail == content[-100:]
    assert past_end == b""
    assert whole == content


def test_missing_object_raises_not_found(store: ObjectStore) -> None:
    assert not store.exists("missing.dcm")
    with pytest.raises(ObjectNotFoundError):
        store.size("missing.dcm")
    with pytest.raises(ObjectNotFoundError):
        store.open("missing.dcm")


def test_delete_is_idempotent(store: ObjectStore, tmp_path: Path) -> None:
    store.put_file("gone.dcm", _source(tmp_path, b"x" * 10))

    store.delete("gone.dcm")
    store.delete("gone.dcm")

    assert not store.exists("gone.dcm")


def test_list_objects_finds_every_object(store: ObjectStore, tmp_path: Path) -> None:
    store.put_file("1.2/3.4/5.6.abc.dcm", _source(tmp_path, b"first"))
    store.put_file("1.2/3.4/5.7.abc.dcm", _source(tmp_path, b"second object"))

    listed = {item.key: item for item in store.list_objects()}

    assert sorted(listed) == ["1.2/3.4/5.6.abc.dcm", "1.2/3.4/5.7.abc.dcm"]
    assert listed["1.2/3.4/5.6.abc.dcm"].size == 5
    assert listed["1.2/3.4/5.7.abc.dcm"].size == 13
    assert listed["1.2/3.4/5.6.abc.dcm"].modified_at.tzinfo is not None


def test_list_objects_of_empty_store(store: ObjectStore) -> None:
    assert list(store.list_objects()) == []


def test_filesystem_listing_skips_partial_files(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path / "objects")
    store.put_file("1.2/3.4/5.6.abc.dcm", _source(tmp_path, b"complete"))
    (store.root / "1.2" / "3.4" / ".5.7.abc.dcm.4242.partial").write_bytes(b"half")

    assert [item.key for item in store.list_objects()] == ["1.2/3.4/5.6.abc.dcm"]


def test_filesystem_rejects_key_outside_root(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path / "objects")

    with pytest.raises(ValueError, match="outside the object store"):
        store.put_file("../escape.dcm", _source(tmp_path, b"x"))

    assert not (tmp_path / "escape.dcm").exists()


def test_filesystem_leaves_no_partial_files(tmp_path: Path) -> None:
    store = FileSystemObjectStore(tmp_path / "objects")
    store.put_file("a/b.dcm", _source(tmp_path, b"data" * 1000))

    names = [path.name for path in (tmp_path / "objects").rglob("*") if path.is_file()]

    assert names == ["b.dcm"]


def test_archive_stores_into_s3(tmp_path: Path, s3_server: SeaweedFS) -> None:
    settings = Settings(
        data_dir=tmp_path / "var", **s3_server.noctis_settings(f"noctis-{uuid.uuid4().hex[:8]}")
    )
    context = ArchiveContext.create(settings)
    try:
        dataset = make_dataset()
        sent = tmp_path / "sent.dcm"
        dataset.save_as(sent, enforce_file_format=True)
        spool = context.archive.new_spool_path()
        spool.write_bytes(sent.read_bytes())

        stored = context.archive.store_part10(spool)

        key = _object_key(context, stored.sop_instance_uid)
        copy = tmp_path / "copy.dcm"
        copy.write_bytes(b"".join(context.store.iter_range(key, 0, None)))
        assert dataset_bytes(copy) == dataset_bytes(sent)
    finally:
        context.close()


def _object_key(context: ArchiveContext, sop_instance_uid: str) -> str:
    from sqlalchemy import select

    from noctis_common.db.models import Instance

    with context.database.read_session() as session:
        key = session.scalar(
            select(Instance.object_key).where(Instance.sop_instance_uid == sop_instance_uid)
        )
    assert key is not None
    return key
