"""C-STORE through the SCP with dcmtk's storescu as the sender, over loopback."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy.exc import OperationalError

from noctis_common.archive import Archive, FailureReason, StoreFailedError
from noctis_common.storage import StorageError
from noctis_common.uids import IMPLEMENTATION_CLASS_UID
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk
from tests.ingest_scp.recording_proxy import RecordingProxy
from tests.support import CT_IMAGE_STORAGE, make_dataset, write_series

pytestmark = pytest.mark.dcmtk


def store_response_statuses(storescu_output: str) -> list[str]:
    """Return the status text of each 'Received Store Response' line of ``storescu -v``."""
    return re.findall(r"Received Store Response \(([^)]*)\)", storescu_output)


def test_storescu_series_stored_as_sent(scp: RunningSCP, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "series", 4)
    proxy = RecordingProxy(scp.port)
    try:
        result = run_dcmtk(
            "storescu", "-v", "-R", "+sd", "+r", "127.0.0.1", proxy.port, tmp_path / "series"
        )
    finally:
        proxy.close()

    assert result.returncode == 0, result.stdout
    assert store_response_statuses(result.stdout) == ["Success"] * 4
    for path in paths:
        sent = pydicom.dcmread(path, stop_before_pixels=True)
        instance = scp.instance(sent.SOPInstanceUID)
        assert instance is not None, f"{path.name} is not in the index"
        assert scp.stored_dataset_bytes(instance) == proxy.datasets[sent.SOPInstanceUID]
        assert instance.transfer_syntax_uid == ExplicitVRLittleEndian
        assert instance.source_ae_title == "STORESCU"


def test_stored_file_meta_information(scp: RunningSCP, tmp_path: Path) -> None:
    [path] = write_series(tmp_path / "series", 1)
    sent = pydicom.dcmread(path, stop_before_pixels=True)

    result = run_dcmtk("storescu", "127.0.0.1", scp.port, path)

    assert result.returncode == 0, result.stdout
    instance = scp.instance(sent.SOPInstanceUID)
    assert instance is not None
    file_meta = scp.stored_file(instance).file_meta
    assert file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
    assert file_meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
    assert file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert file_meta.SourceApplicationEntityTitle == "STORESCU"


def test_resent_identical_instance_stored_once(scp: RunningSCP, tmp_path: Path) -> None:
    [path] = write_series(tmp_path / "series", 1)

    first = run_dcmtk("storescu", "-v", "127.0.0.1", scp.port, path)
    second = run_dcmtk("storescu", "-v", "127.0.0.1", scp.port, path)

    assert store_response_statuses(first.stdout) == ["Success"]
    assert store_response_statuses(second.stdout) == ["Success"]
    assert second.returncode == 0
    assert scp.instance_count() == 1
    assert len(scp.object_files()) == 1


def test_conflicting_instance_rejected_0111(scp: RunningSCP, tmp_path: Path) -> None:
    original = make_dataset(patient_name="Doe^Jane")
    conflicting = make_dataset(
        study_instance_uid=original.StudyInstanceUID,
        series_instance_uid=original.SeriesInstanceUID,
        sop_instance_uid=original.SOPInstanceUID,
        patient_name="Roe^Richard",
    )
    original_path = tmp_path / "original.dcm"
    conflicting_path = tmp_path / "conflicting.dcm"
    original.save_as(original_path, enforce_file_format=True)
    conflicting.save_as(conflicting_path, enforce_file_format=True)

    run_dcmtk("storescu", "127.0.0.1", scp.port, original_path)
    result = run_dcmtk("storescu", "-d", "127.0.0.1", scp.port, conflicting_path)

    assert result.returncode != 0
    assert "DIMSE Status                  : 0x0111" in result.stdout
    assert "a different object with this SOP Instance UID is stored" in result.stdout
    instance = scp.instance(original.SOPInstanceUID)
    assert instance is not None
    assert scp.stored_file(instance).PatientName == "Doe^Jane"
    assert len(scp.object_files()) == 1


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SOPInstanceUID", "../../etc/passwd"),
        ("SOPInstanceUID", "1" * 80),
        ("StudyInstanceUID", "../../../outside"),
        ("SeriesInstanceUID", "1.2.3/../../4"),
    ],
    ids=["traversal-sop", "80-digits", "traversal-study", "slash-series"],
)
def test_hostile_uid_rejected(scp: RunningSCP, tmp_path: Path, keyword: str, value: str) -> None:
    dataset = make_dataset()
    setattr(dataset, keyword, value)
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = tmp_path / "hostile.dcm"
    dataset.save_as(path, enforce_file_format=True)
    data_dir = scp.context.settings.data_dir
    # An object key built from "../../../outside" would resolve next to tmp_path.
    watched = tmp_path.parent
    files_before = {found for found in watched.rglob("*") if found.is_file()}

    result = run_dcmtk("storescu", "-v", "127.0.0.1", scp.port, path)

    assert result.returncode != 0
    assert store_response_statuses(result.stdout) == ["Error: CannotUnderstand"]
    assert scp.instance_count() == 0
    assert scp.object_files() == []
    assert scp.spool_files() == []
    written_outside = [
        found
        for found in watched.rglob("*")
        if found.is_file() and found not in files_before and data_dir not in found.parents
    ]
    assert written_outside == []


def test_out_of_resources_answers_a700(
    scp: RunningSCP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_to_store(key: str, source: Path) -> None:
        raise StorageError(f"failed to store object {key!r}: disk full")

    monkeypatch.setattr(scp.context.store, "put_file", fail_to_store)
    [path] = write_series(tmp_path / "series", 1)

    result = run_dcmtk("storescu", "-d", "127.0.0.1", scp.port, path)

    assert result.returncode != 0
    assert "DIMSE Status                  : 0xa700" in result.stdout
    assert scp.instance_count() == 0
    assert scp.spool_files() == []


def test_index_failure_logs_one_error(
    sqlite_scp: RunningSCP,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail_to_index(*_args: object, **_keywords: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(Archive, "_insert_rows", fail_to_index)
    [path] = write_series(tmp_path / "series", 1)

    with caplog.at_level(logging.INFO):
        result = run_dcmtk("storescu", "-v", "127.0.0.1", sqlite_scp.port, path)

    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert result.returncode != 0
    assert len(errors) == 1, errors
    assert "failed with status 0xA700" in errors[0]
    assert "OperationalError" in errors[0]


def test_unexpected_error_keeps_association(
    sqlite_scp: RunningSCP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = sqlite_scp.context.archive
    original_store = Archive.store_part10
    calls = 0

    def store_failing_once(path: Path, **keywords: Any) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("simulated bug")
        return original_store(archive, path, **keywords)

    monkeypatch.setattr(archive, "store_part10", store_failing_once)
    paths = write_series(tmp_path / "series", 2)

    result = run_dcmtk("storescu", "-v", "-nh", "127.0.0.1", sqlite_scp.port, *paths)

    assert store_response_statuses(result.stdout) == ["Unknown Status: 0x110", "Success"]
    assert sqlite_scp.instance_count() == 1
    assert sqlite_scp.spool_files() == []


def test_store_failure_comment_fits_lo(
    sqlite_scp: RunningSCP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reject(path: Path, **keywords: str | None) -> object:
        path.unlink()
        raise StoreFailedError(FailureReason.CANNOT_UNDERSTAND, "x\\y " * 40)

    monkeypatch.setattr(sqlite_scp.context.archive, "store_part10", reject)
    [path] = write_series(tmp_path / "series", 1)

    result = run_dcmtk("storescu", "-d", "127.0.0.1", sqlite_scp.port, path)

    match = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", result.stdout)
    assert match is not None, result.stdout
    assert len(match.group(1)) <= 64
    assert "\\" not in match.group(1)
    assert match.group(1).endswith("...")


def test_spool_empty_after_stores(sqlite_scp: RunningSCP, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "series", 3)

    result = run_dcmtk("storescu", "127.0.0.1", sqlite_scp.port, *paths)

    assert result.returncode == 0, result.stdout
    assert sqlite_scp.spool_files() == []
    assert sqlite_scp.instance_count() == 3
