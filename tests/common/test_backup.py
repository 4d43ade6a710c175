"""Backups: create, destroy, restore and retrieve; the consistency check and its repair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from noctis_common.archive import StoredInstance
from noctis_common.backup import (
    BackupError,
    BackupManifest,
    check_consistency,
    create_backup,
    move_orphans_aside,
    restore_backup,
)
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from tests.support import make_dataset
from tests.wado.helpers import instance_url, parse_multipart, store_dataset

ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def store_small_archive(settings: Settings, folder: Path) -> list[StoredInstance]:
    """Store two series of a study and one other study; return what was stored."""
    context = ArchiveContext.create(settings)
    try:
        study = make_dataset().StudyInstanceUID
        datasets = [
            make_dataset(study_instance_uid=study, instance_number=1),
            make_dataset(study_instance_uid=study, instance_number=2, modality="MR"),
            make_dataset(patient_name="Other^Patient", patient_id="PID-0002"),
        ]
        return [store_dataset(context, dataset, folder) for dataset in datasets]
    finally:
        context.close()


def retrieve_instances(settings: Settings, stored: list[StoredInstance]) -> dict[str, bytes]:
    """Retrieve each instance by WADO-RS in its stored transfer syntax; map UID to bytes."""
    from noctis_wado.routes import router as wado_router

    context = ArchiveContext.create(settings)
    retrieved = {}
    try:
        app = create_app("Noctis backup test", [wado_router], settings, context)
        with TestClient(app) as client:
            for instance in stored:
                response = client.get(instance_url(instance), headers={"Accept": ACCEPT_AS_STORED})
                assert response.status_code == 200, response.text
                (part,) = parse_multipart(response)
                retrieved[instance.sop_instance_uid] = part.content
    finally:
        context.close()
    return retrieved


def run_backup_command(settings: Settings, *arguments: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -m noctis_common.backup`` with the settings' index and data folder."""
    environment = {
        **os.environ,
        "NOCTIS_DATA_DIR": str(settings.data_dir),
        "NOCTIS_DATABASE_URL": settings.resolved_database_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "noctis_common.backup", *map(str, arguments)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def destroy_archive(settings: Settings) -> None:
    """Remove the data folder and, for PostgreSQL, replace the index with an empty database."""
    shutil.rmtree(settings.data_dir)
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
        return
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()


def object_path(settings: Settings, instance: StoredInstance) -> Path:
    (path,) = settings.objects_dir.rglob(f"{instance.sop_instance_uid}.*.dcm")
    return path


@pytest.fixture
def stored(sqlite_settings: Settings, tmp_path: Path) -> list[StoredInstance]:
    return store_small_archive(sqlite_settings, tmp_path / "inputs")


# -- backup, destroy, restore -------------------------------------------------------------


def test_restore_brings_back_every_instance(settings: Settings, tmp_path: Path) -> None:
    stored = store_small_archive(settings, tmp_path / "inputs")
    before = retrieve_instances(settings, stored)
    backup = tmp_path / "backup"

    created = run_backup_command(settings, "create", backup)
    assert created.returncode == 0, created.stderr
    destroy_archive(settings)
    restored = run_backup_command(settings, "restore", backup, "--json")

    assert restored.returncode == 0, restored.stderr
    report = json.loads(restored.stdout)
    assert report["consistent"] is True
    assert report["indexed_instances"] == 3
    after = retrieve_instances(settings, stored)
    for instance in stored:
        assert after[instance.sop_instance_uid] == before[instance.sop_instance_uid]


def test_backup_folder_layout(stored: list[StoredInstance], sqlite_settings: Settings) -> None:
    backup = sqlite_settings.data_dir.parent / "backup"

    manifest = create_backup(sqlite_settings, backup)

    assert manifest.index_kind == "sqlite"
    assert (backup / "index.sqlite").is_file()
    assert (backup / "manifest.json").is_file()
    assert manifest.object_count == 3
    assert manifest.missing_objects == []
    assert len((backup / "objects.tsv").read_text().splitlines()) == 3
    for instance in stored:
        copy = next((backup / "objects").rglob(f"{instance.sop_instance_uid}.*.dcm"))
        assert copy.read_bytes() == object_path(sqlite_settings, instance).read_bytes()


def test_previous_backup_objects_hard_linked(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    create_backup(sqlite_settings, tmp_path / "monday")

    create_backup(sqlite_settings, tmp_path / "tuesday", previous=tmp_path / "monday")

    for instance in stored:
        monday = next((tmp_path / "monday" / "objects").rglob(f"{instance.sop_instance_uid}.*"))
        tuesday = next((tmp_path / "tuesday" / "objects").rglob(f"{instance.sop_instance_uid}.*"))
        assert monday.stat().st_ino == tuesday.stat().st_ino


def test_manifest_mode_copies_no_objects(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"

    manifest = create_backup(sqlite_settings, backup, objects_mode="manifest")
    Path(sqlite_settings.resolved_database_url.removeprefix("sqlite:///")).unlink()
    report = restore_backup(sqlite_settings, backup)

    assert manifest.objects_mode == "manifest"
    assert not (backup / "objects").exists()
    assert report.consistent
    assert report.indexed_instances == len(stored)


def test_object_lost_before_backup_listed_missing(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    object_path(sqlite_settings, stored[0]).unlink()

    created = run_backup_command(sqlite_settings, "create", tmp_path / "backup")

    assert created.returncode == 1
    manifest = BackupManifest.read(tmp_path / "backup")
    assert len(manifest.missing_objects) == 1
    assert stored[0].sop_instance_uid in manifest.missing_objects[0]


def test_backup_refuses_used_folder(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")

    with pytest.raises(BackupError, match="is not an empty folder"):
        create_backup(sqlite_settings, used)


def test_restore_refuses_nonempty_index(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    create_backup(sqlite_settings, tmp_path / "backup")

    restored = run_backup_command(sqlite_settings, "restore", tmp_path / "backup")

    assert restored.returncode == 2
    assert "exists and is not empty" in restored.stderr
    assert "--replace" in restored.stderr


def test_restore_replace_overwrites_index(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    create_backup(sqlite_settings, tmp_path / "backup")
    store_small_archive(sqlite_settings, tmp_path / "later")

    report = restore_backup(sqlite_settings, tmp_path / "backup", replace=True)

    assert report.indexed_instances == 3
    # The objects stored after the backup stay in the store, without rows now.
    assert len(report.objects_without_rows) == 3


def test_restore_without_manifest_rejected(sqlite_settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()

    with pytest.raises(BackupError, match=r"has no manifest\.json"):
        restore_backup(sqlite_settings, tmp_path / "half")


# -- consistency check ----------------------------------------------------------------------


def old_timestamp(path: Path) -> None:
    """Date ``path`` back by a day, out of the check's grace period."""
    day_ago = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    os.utime(path, (day_ago, day_ago))


def test_check_reports_consistent_archive(
    stored: list[StoredInstance], sqlite_settings: Settings
) -> None:
    checked = run_backup_command(sqlite_settings, "check", "--json")

    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["consistent"] is True
    assert report["stored_objects"] == 3


def test_check_finds_missing_and_orphan_objects(
    stored: list[StoredInstance], sqlite_settings: Settings
) -> None:
    object_path(sqlite_settings, stored[0]).unlink()
    orphan = sqlite_settings.objects_dir / "1.2.3" / "4.5.6" / "7.8.9.0123456789abcdef.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan bytes")
    old_timestamp(orphan)

    checked = run_backup_command(sqlite_settings, "check")

    assert checked.returncode == 1
    assert "rows without objects: 1" in checked.stdout
    assert stored[0].sop_instance_uid in checked.stdout
    assert "objects without rows: 1" in checked.stdout
    assert "1.2.3/4.5.6/7.8.9.0123456789abcdef.dcm" in checked.stdout
    assert checked.stdout.rstrip().endswith("INCONSISTENT")


def test_repair_moves_orphans_aside(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    orphan = sqlite_settings.objects_dir / "1.2.3" / "4.5.6" / "7.8.9.0123456789abcdef.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan bytes")
    old_timestamp(orphan)
    quarantine = tmp_path / "quarantine"

    repaired = run_backup_command(sqlite_settings, "check", "--repair", "--quarantine", quarantine)

    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not orphan.exists()
    moved = quarantine / "1.2.3" / "4.5.6" / "7.8.9.0123456789abcdef.dcm"
    assert moved.read_bytes() == b"orphan bytes"
    assert run_backup_command(sqlite_settings, "check").returncode == 0


def test_check_skips_recent_orphans(
    stored: list[StoredInstance], sqlite_settings: Settings
) -> None:
    orphan = sqlite_settings.objects_dir / "1.2.3" / "4.5.6" / "7.8.9.0123456789abcdef.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"a store in progress")
    context = ArchiveContext.create(sqlite_settings)
    try:
        report = check_consistency(context.database, context.store)
    finally:
        context.close()

    assert report.consistent
    assert report.recent_objects_skipped == 1


def test_check_reports_wrong_size(stored: list[StoredInstance], sqlite_settings: Settings) -> None:
    with open(object_path(sqlite_settings, stored[1]), "ab") as handle:
        handle.write(b"extra")
    context = ArchiveContext.create(sqlite_settings)
    try:
        report = check_consistency(context.database, context.store)
    finally:
        context.close()

    assert not report.consistent
    (mismatch,) = report.size_mismatches
    assert mismatch.sop_instance_uid == stored[1].sop_instance_uid
    assert mismatch.stored_size == mismatch.indexed_size + 5


def test_repair_skips_vanished_orphan(
    stored: list[StoredInstance], sqlite_settings: Settings, tmp_path: Path
) -> None:
    orphan = sqlite_settings.objects_dir / "1.2.3" / "4.5.6" / "7.8.9.0123456789abcdef.dcm"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan bytes")
    old_timestamp(orphan)
    context = ArchiveContext.create(sqlite_settings)
    try:
        report = check_consistency(context.database, context.store)
        orphan.unlink()
        move_orphans_aside(report, context.store, str(tmp_path / "quarantine"))
    finally:
        context.close()

    assert report.moved_aside == {"1.2.3/4.5.6/7.8.9.0123456789abcdef.dcm": "(gone)"}
