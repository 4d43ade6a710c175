"""WADO-RS end to end: dicomweb-client against ``python -m noctis_archive`` over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import get_frame

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from tests.support import dataset_bytes, free_port, running_archive, write_series
from tests.wado.helpers import pydicom_file, store_file

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class ArchiveFiles:
    """The files stored into the archive's data folder before it starts."""

    study_instance_uid: str
    native: list[Path]
    compressed: Path


@pytest.fixture
def archive_files(tmp_path: Path) -> ArchiveFiles:
    """Store one study, a native series and a JPEG 2000 instance, into ``tmp_path/var``."""
    native = write_series(tmp_path / "native", 2)
    study_instance_uid = str(pydicom.dcmread(native[0]).StudyInstanceUID)
    compressed = pydicom.dcmread(pydicom_file("emri_small_jpeg_2k_lossless.dcm"))
    compressed.StudyInstanceUID = study_instance_uid
    compressed_path = tmp_path / "compressed.dcm"
    compressed.save_as(compressed_path, enforce_file_format=True)

    context = ArchiveContext.create(Settings(data_dir=tmp_path / "var"))
    try:
        for path in [*native, compressed_path]:
            store_file(context, path)
    finally:
        context.close()
    return ArchiveFiles(study_instance_uid, native, compressed_path)


@pytest.fixture
def web_client(archive_files: ArchiveFiles, tmp_path: Path) -> Iterator[DICOMwebClient]:
    """A DICOMweb client of the archive, started after ``archive_files`` filled its data.

    dicomweb-client 0.61 sends a Host header without the port, from which the archive
    would build BulkDataURIs for port 80, so the archive gets its public base URL set.
    The archive_process fixture cannot set it, because it picks the port itself.
    """
    http_port = free_port()
    public_base_url = f"http://127.0.0.1:{http_port}/dicom-web"
    for archive in running_archive(
        tmp_path / "var",
        http_port=http_port,
        extra_env={"NOCTIS_PUBLIC_BASE_URL": public_base_url},
    ):
        yield DICOMwebClient(url=archive.dicomweb_url)


def test_dicomweb_client_retrieves_study(
    archive_files: ArchiveFiles, web_client: DICOMwebClient
) -> None:
    datasets = web_client.retrieve_study(archive_files.study_instance_uid)

    received = {str(dataset.SOPInstanceUID): dataset for dataset in datasets}
    for path in [*archive_files.native, archive_files.compressed]:
        original = pydicom.dcmread(path)
        assert received[str(original.SOPInstanceUID)].PixelData == original.PixelData
    assert len(received) == 3


def test_dicomweb_client_retrieves_instance_and_frames(
    archive_files: ArchiveFiles, web_client: DICOMwebClient, tmp_path: Path
) -> None:
    original = pydicom.dcmread(archive_files.compressed)
    uids = (
        archive_files.study_instance_uid,
        str(original.SeriesInstanceUID),
        str(original.SOPInstanceUID),
    )

    instance = web_client.retrieve_instance(*uids)
    frames = web_client.retrieve_instance_frames(*uids, frame_numbers=[2, 9])
    jp2_frames = web_client.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=("image/jp2",)
    )

    received_path = tmp_path / "received.dcm"
    instance.save_as(received_path)
    assert dataset_bytes(received_path) == dataset_bytes(archive_files.compressed)
    assert frames == [
        get_frame(original.PixelData, 1, number_of_frames=10),
        get_frame(original.PixelData, 8, number_of_frames=10),
    ]
    assert jp2_frames == [get_frame(original.PixelData, 0, number_of_frames=10)]


def test_dicomweb_client_retrieves_metadata_and_bulkdata(
    archive_files: ArchiveFiles, web_client: DICOMwebClient
) -> None:
    metadata = web_client.retrieve_study_metadata(archive_files.study_instance_uid)

    native = pydicom.dcmread(archive_files.native[0])
    (item,) = [
        entry for entry in metadata if entry["00080018"]["Value"][0] == str(native.SOPInstanceUID)
    ]
    bulkdata = web_client.retrieve_bulkdata(item["7FE00010"]["BulkDataURI"])
    assert len(metadata) == 3
    assert bulkdata == [native.PixelData]
