"""Backups on the S3 object store: create, restore, check and repair against SeaweedFS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from io import BytesIO
from pathlib import Path

import pytest
from minio import Minio

from noctis_common.archive import StoredInstance
from noctis_common.backup import check_consistency, move_orphans_aside
from noctis_common.backup.objects import list_objects
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.storage import (
    ObjectNotFoundError,
    S3ObjectStore,
    StorageError,
    create_object_store,
)
from noctis_common.storage.s3 import create_http_client
from tests.common.test_backup import retrieve_instances, store_small_archive
from tests.servers.seaweedfs import SeaweedFS
from tests.support import free_port

ORPHAN_KEY = "1.2.3/4.5.6/7.8.9.0123456789abcdef.dcm"


@pytest.fixture
def bucket() -> str:
    return f"noctis-backup-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_settings(tmp_path: Path, s3_server: SeaweedFS, bucket: str) -> Settings:
    """SQLite index, objects in a bucket of this test's own, retries cut short."""
    return Settings(
        data_dir=tmp_path / "var",
        auth_mode="off",
        s3_retry_max_s=0.5,
        s3_retry_initial_s=0.05,
        **s3_server.noctis_settings(bucket),
    )


@pytest.fixture
def stored(s3_settings: Settings, tmp_path: Path) -> list[StoredInstance]:
    return store_small_archive(s3_settings, tmp_path / "inputs")


def run_backup_command(
    settings: Settings, server: SeaweedFS, *arguments: object
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m noctis_common.backup`` on the settings' index and bucket."""
    environment = {
        **os.environ,
        **server.noctis_environment(settings.s3_bucket),
        "NOCTIS_DATA_DIR": str(settings.data_dir),
        "NOCTIS_DATABASE_URL": settings.resolved_database_url,
        "NOCTIS_S3_RETRY_MAX_S": "0.5",
    }
    return subprocess.run(
        [sys.executable, "-m", "noctis_common.backup", *map(str, arguments)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def object_keys(client: Minio, bucket: str) -> list[str]:
    return sorted(str(item.object_name) for item in client.list_objects(bucket, recursive=True))


def object_bytes(client: Minio, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def put_orphan(client: Minio, bucket: str) -> None:
    """Put an object that no instance row refers to."""
    client.put_object(bucket, ORPHAN_KEY, BytesIO(b"orphan bytes"), length=len(b"orphan bytes"))


def destroy_archive(settings: Settings, client: Minio) -> None:
    """Delete the bucket with every object in it, the index and the data folder."""
    for key in object_keys(client, settings.s3_bucket):
        client.remove_object(settings.s3_bucket, key)
    client.remove_bucket(settings.s3_bucket)
    shutil.rmtree(settings.data_dir)


# -- backup, destroy, restore -------------------------------------------------------------


def test_s3_restore_brings_back_every_instance(
    stored: list[StoredInstance], s3_settings: Settings, s3_server: SeaweedFS, tmp_path: Path
) -> None:
    before = retrieve_instances(s3_settings, stored)
    backup = tmp_path / "backup"

    created = run_backup_command(s3_settings, s3_server, "create", backup)
    assert created.returncode == 0, created.stderr
    destroy_archive(s3_settings, s3_server.client())
    restored = run_backup_command(s3_settings, s3_server, "restore", backup, "--json")

    assert restored.returncode == 0, restored.stderr
    report = json.loads(restored.stdout)
    assert report["consistent"] is True
    assert report["indexed_instances"] == 3
    assert report["stored_objects"] == 3
    after = retrieve_instances(s3_settings, stored)
    for instance in stored:
        assert after[instance.sop_instance_uid] == before[instance.sop_instance_uid]


def test_s3_manifest_backup_lists_objects(
    stored: list[StoredInstance], s3_settings: Settings, s3_server: SeaweedFS, tmp_path: Path
) -> None:
    created = run_backup_command(
        s3_settings, s3_server, "create", tmp_path / "backup", "--objects", "manifest"
    )

    assert created.returncode == 0, created.stderr
    assert not (tmp_path / "backup" / "objects").exists()
    listed = (tmp_path / "backup" / "objects.tsv").read_text().splitlines()
    assert len(listed) == len(stored)


# -- check and repair ----------------------------------------------------------------------


def test_s3_check_reports_consistent_bucket(
    stored: list[StoredInstance], s3_settings: Settings, s3_server: SeaweedFS
) -> None:
    checked = run_backup_command(s3_settings, s3_server, "check", "--json")

    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["consistent"] is True
    assert report["stored_objects"] == 3


def test_s3_check_finds_missing_and_orphan(
    stored: list[StoredInstance], s3_settings: Settings, s3_server: SeaweedFS
) -> None:
    client = s3_server.client()
    (lost_key,) = [
        key
        for key in object_keys(client, s3_settings.s3_bucket)
        if stored[0].sop_instance_uid in key
    ]
    client.remove_object(s3_settings.s3_bucket, lost_key)
    put_orphan(client, s3_settings.s3_bucket)

    # Objects younger than the grace period are skipped; this orphan is seconds old.
    checked = run_backup_command(s3_settings, s3_server, "check", "--grace-s", "0")

    assert checked.returncode == 1, checked.stderr
    assert "rows without objects: 1" in checked.stdout
    assert lost_key in checked.stdout
    assert "objects without rows: 1" in checked.stdout
    assert ORPHAN_KEY in checked.stdout


def test_s3_repair_moves_orphan_to_quarantine(
    stored: list[StoredInstance], s3_settings: Settings, s3_server: SeaweedFS
) -> None:
    client = s3_server.client()
    put_orphan(client, s3_settings.s3_bucket)

    repaired = run_backup_command(
        s3_settings, s3_server, "check", "--repair", "--grace-s", "0", "--quarantine", "night-1"
    )

    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    moved = f"quarantine/night-1/{ORPHAN_KEY}"
    assert f"s3://{s3_settings.s3_bucket}/{moved}" in repaired.stdout
    keys = object_keys(client, s3_settings.s3_bucket)
    assert ORPHAN_KEY not in keys
    assert object_bytes(client, s3_settings.s3_bucket, moved) == b"orphan bytes"
    rechecked = run_backup_command(s3_settings, s3_server, "check", "--grace-s", "0")
    assert rechecked.returncode == 0, rechecked.stdout


def test_s3_repair_skips_vanished_orphan(
    stored: list[StoredInstance], s3_settings: Settings, s3_server: SeaweedFS
) -> None:
    client = s3_server.client()
    put_orphan(client, s3_settings.s3_bucket)
    context = ArchiveContext.create(s3_settings)
    try:
        report = check_consistency(context.database, context.store, grace_s=0.0)
        client.remove_object(s3_settings.s3_bucket, ORPHAN_KEY)
        move_orphans_aside(report, context.store, "quarantine/night-2/")
    finally:
        context.close()

    assert report.moved_aside == {ORPHAN_KEY: "(gone)"}


# -- an unreachable S3 server -----------------------------------------------------------


def test_unreachable_s3_listing_explains(s3_settings: Settings) -> None:
    store = create_object_store(s3_settings)
    assert isinstance(store, S3ObjectStore)
    # The store opened its bucket. Its client now sends to a port where nothing listens,
    # as when the server stops after the check began.
    store.client = Minio(
        f"127.0.0.1:{free_port()}",
        access_key="unused",
        secret_key="unused",
        secure=False,
        http_client=create_http_client(s3_settings),
    )

    with pytest.raises(StorageError) as raised:
        list(list_objects(store))

    message = str(raised.value)
    assert f"listing the objects of S3 bucket {s3_settings.s3_bucket!r}" in message
    assert "unreachable or overloaded" in message


def test_unreachable_s3_check_exits_2(s3_settings: Settings, s3_server: SeaweedFS) -> None:
    unreachable = s3_settings.model_copy(update={"s3_endpoint": f"127.0.0.1:{free_port()}"})
    environment = {
        **os.environ,
        **s3_server.noctis_environment(s3_settings.s3_bucket),
        "NOCTIS_DATA_DIR": str(s3_settings.data_dir),
        "NOCTIS_S3_ENDPOINT": unreachable.s3_endpoint,
        "NOCTIS_S3_RETRY_MAX_S": "0.5",
    }

    checked = subprocess.run(
        [sys.executable, "-m", "noctis_common.backup", "check"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert checked.returncode == 2
    assert "check failed" in checked.stderr
    assert "unreachable or overloaded" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_s3_move_of_missing_object(s3_settings: Settings) -> None:
    store = create_object_store(s3_settings)
    assert isinstance(store, S3ObjectStore)

    with pytest.raises(ObjectNotFoundError):
        store.move("1.2/3.4/absent.dcm", "quarantine/x/1.2/3.4/absent.dcm")
