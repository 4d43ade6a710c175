"""Every public call of dicomweb-client 0.61's DICOMwebClient against ``python -m noctis_archive``.

One archive process serves the whole module. The calls that change the archive
(store_instances and the delete_* calls) work on studies of their own, so the other
tests see the same content whatever order they run in. ``lookup_keyword`` and
``lookup_tag`` are static and send no request, so they are not exercised here.
dicomweb-client 0.61 has no call for the thumbnail resources (PS3.18 10.4.1.1.4).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from tests.support import dataset_bytes, free_port, make_dataset, running_archive, write_series
from tests.wado.helpers import pydicom_file, store_file

pytestmark = pytest.mark.slow

PATIENT_ID = "INTEROP-DWC-1"
PATIENT_NAME = "Interop^Alpha"
JPEG_2000_FRAMES = 10


@dataclass(frozen=True)
class InteropStudies:
    """The files stored into the archive before it starts, by the test that uses them."""

    study_instance_uid: str
    native: list[Path]
    compressed: Path
    study_to_delete: list[Path]
    series_to_delete: list[Path]
    instance_to_delete: list[Path]


@dataclass(frozen=True)
class Server:
    studies: InteropStudies
    client: DICOMwebClient


def uids_of(path: Path) -> tuple[str, str, str]:
    """Return the Study, Series and SOP Instance UID of the Part 10 file at ``path``."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return (
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
        str(dataset.SOPInstanceUID),
    )


def value_of(item: dict[str, dict], tag: str) -> object:  # type: ignore[type-arg]
    """Return the first value of ``tag`` in a DICOM JSON object."""
    return item[tag]["Value"][0]


def sop_instance_uids(results: list[dict[str, dict]]) -> set[str]:  # type: ignore[type-arg]
    return {str(value_of(item, "00080018")) for item in results}


def dataset_bytes_of(dataset: Dataset, folder: Path) -> bytes:
    """Return the dataset bytes after the File Meta of a dataset that a client received."""
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path)
    return dataset_bytes(path)


def store_interop_studies(root: Path) -> InteropStudies:
    """Write the test studies under ``root`` and store them into ``root/var``."""
    native = write_series(
        root / "native", 2, patient_id=PATIENT_ID, patient_name=PATIENT_NAME, modality="MR"
    )
    study_instance_uid = uids_of(native[0])[0]
    compressed = pydicom.dcmread(pydicom_file("emri_small_jpeg_2k_lossless.dcm"))
    compressed.StudyInstanceUID = study_instance_uid
    compressed.PatientID = PATIENT_ID
    compressed.PatientName = PATIENT_NAME
    compressed_path = root / "compressed.dcm"
    compressed.save_as(compressed_path, enforce_file_format=True)

    studies = InteropStudies(
        study_instance_uid=study_instance_uid,
        native=native,
        compressed=compressed_path,
        study_to_delete=write_series(root / "delete-study", 1, patient_id="INTEROP-DWC-2"),
        series_to_delete=write_series(root / "delete-series", 1, patient_id="INTEROP-DWC-3"),
        instance_to_delete=write_series(root / "delete-instance", 2, patient_id="INTEROP-DWC-4"),
    )
    context = ArchiveContext.create(Settings(data_dir=root / "var"))
    try:
        for path in [
            *studies.native,
            studies.compressed,
            *studies.study_to_delete,
            *studies.series_to_delete,
            *studies.instance_to_delete,
        ]:
            store_file(context, path)
    finally:
        context.close()
    return studies


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One archive with the interop studies and a DICOMwebClient of it.

    dicomweb-client 0.61 sends a Host header without the port on GET requests, so the
    archive gets NOCTIS_PUBLIC_BASE_URL to build BulkDataURIs with the right port.
    """
    root = tmp_path_factory.mktemp("interop-dicomweb-client")
    studies = store_interop_studies(root)
    http_port = free_port()
    for archive in running_archive(
        root / "var",
        http_port=http_port,
        extra_env={"NOCTIS_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}/dicom-web"},
    ):
        yield Server(studies, DICOMwebClient(url=archive.dicomweb_url))


# QIDO-RS (PS3.18 10.6)


def test_search_for_studies_by_patient_id(server: Server) -> None:
    results = server.client.search_for_studies(search_filters={"PatientID": PATIENT_ID})

    assert len(results) == 1
    (study,) = results
    assert value_of(study, "0020000D") == server.studies.study_instance_uid
    assert value_of(study, "00100010") == {"Alphabetic": PATIENT_NAME}
    assert value_of(study, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert value_of(study, "00201208") == 3  # NumberOfStudyRelatedInstances


def test_search_for_studies_fuzzy_name(server: Server) -> None:
    results = server.client.search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": "alph inter"}
    )

    assert {str(value_of(item, "0020000D")) for item in results} == {
        server.studies.study_instance_uid
    }


def test_search_for_studies_with_fields(server: Server) -> None:
    results = server.client.search_for_studies(
        fields=["StudyDescription", "00080061"], search_filters={"PatientID": PATIENT_ID}
    )

    (study,) = results
    assert value_of(study, "00081030") == "Synthetic study"
    assert study["00080061"]["Value"] == ["MR"]


def test_search_for_studies_limit_offset(server: Server) -> None:
    everything = server.client.search_for_studies()
    second = server.client.search_for_studies(limit=1, offset=1)

    assert len(second) == 1
    assert second[0] == everything[1]


def test_search_for_series_of_study(server: Server) -> None:
    results = server.client.search_for_series(server.studies.study_instance_uid)

    expected = {uids_of(server.studies.native[0])[1], uids_of(server.studies.compressed)[1]}
    assert {str(value_of(item, "0020000E")) for item in results} == expected


def test_search_for_series_all_by_uid(server: Server) -> None:
    series_instance_uid = uids_of(server.studies.native[0])[1]

    results = server.client.search_for_series(
        search_filters={"SeriesInstanceUID": series_instance_uid}
    )

    (series,) = results
    assert value_of(series, "00080060") == "MR"
    assert value_of(series, "00201209") == 2  # NumberOfSeriesRelatedInstances


def test_search_for_instances_of_series(server: Server) -> None:
    study_instance_uid, series_instance_uid, _ = uids_of(server.studies.native[0])

    results = server.client.search_for_instances(study_instance_uid, series_instance_uid)

    assert sop_instance_uids(results) == {uids_of(path)[2] for path in server.studies.native}


def test_search_for_instances_get_remaining(server: Server) -> None:
    results = server.client.search_for_instances(
        server.studies.study_instance_uid, limit=1, get_remaining=True
    )

    expected = {uids_of(path)[2] for path in [*server.studies.native, server.studies.compressed]}
    assert len(results) == 3
    assert sop_instance_uids(results) == expected


def test_search_for_instances_all_by_patient(server: Server) -> None:
    results = server.client.search_for_instances(
        search_filters={"PatientID": PATIENT_ID}, fields=["Rows"]
    )

    compressed_uid = uids_of(server.studies.compressed)[2]
    (compressed,) = [item for item in results if value_of(item, "00080018") == compressed_uid]
    assert len(results) == 3
    assert value_of(compressed, "00280010") == 64


# WADO-RS instances (PS3.18 10.4)


def test_retrieve_study_byte_identical(server: Server, tmp_path: Path) -> None:
    datasets = server.client.retrieve_study(server.studies.study_instance_uid)

    received = {str(dataset.SOPInstanceUID): dataset for dataset in datasets}
    assert len(received) == 3
    for path in [*server.studies.native, server.studies.compressed]:
        sop_instance_uid = uids_of(path)[2]
        assert dataset_bytes_of(received[sop_instance_uid], tmp_path) == dataset_bytes(path)


def test_iter_study_yields_every_instance(server: Server) -> None:
    datasets = list(server.client.iter_study(server.studies.study_instance_uid))

    expected = {uids_of(path)[2] for path in [*server.studies.native, server.studies.compressed]}
    assert {str(dataset.SOPInstanceUID) for dataset in datasets} == expected


def test_retrieve_series_explicit_little_endian(server: Server, tmp_path: Path) -> None:
    study_instance_uid, series_instance_uid, _ = uids_of(server.studies.native[0])

    datasets = server.client.retrieve_series(
        study_instance_uid,
        series_instance_uid,
        media_types=(("application/dicom", ExplicitVRLittleEndian),),
    )

    received = {str(dataset.SOPInstanceUID): dataset for dataset in datasets}
    for path in server.studies.native:
        sop_instance_uid = uids_of(path)[2]
        assert dataset_bytes_of(received[sop_instance_uid], tmp_path) == dataset_bytes(path)
    assert len(received) == 2


def test_iter_series_any_transfer_syntax(server: Server) -> None:
    study_instance_uid, series_instance_uid, sop_instance_uid = uids_of(server.studies.compressed)

    datasets = list(
        server.client.iter_series(
            study_instance_uid, series_instance_uid, media_types=(("application/dicom", "*"),)
        )
    )

    (dataset,) = datasets
    assert str(dataset.SOPInstanceUID) == sop_instance_uid
    assert dataset.file_meta.TransferSyntaxUID == JPEG2000Lossless


def test_retrieve_instance_jpeg_2000(server: Server, tmp_path: Path) -> None:
    uids = uids_of(server.studies.compressed)

    dataset = server.client.retrieve_instance(
        *uids, media_types=(("application/dicom", JPEG2000Lossless),)
    )

    assert dataset_bytes_of(dataset, tmp_path) == dataset_bytes(server.studies.compressed)


def test_retrieve_instance_transcoded_to_native(server: Server) -> None:
    uids = uids_of(server.studies.compressed)
    original = pydicom.dcmread(server.studies.compressed)

    dataset = server.client.retrieve_instance(
        *uids, media_types=(("application/dicom", ExplicitVRLittleEndian),)
    )

    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (dataset.pixel_array == original.pixel_array).all()


# WADO-RS metadata (PS3.18 10.4.1.1.2)


def test_retrieve_study_metadata_values(server: Server) -> None:
    metadata = server.client.retrieve_study_metadata(server.studies.study_instance_uid)

    expected = {uids_of(path)[2] for path in [*server.studies.native, server.studies.compressed]}
    assert sop_instance_uids(metadata) == expected
    assert {value_of(item, "00100020") for item in metadata} == {PATIENT_ID}


def test_retrieve_series_metadata_values(server: Server) -> None:
    study_instance_uid, series_instance_uid, _ = uids_of(server.studies.native[0])

    metadata = server.client.retrieve_series_metadata(study_instance_uid, series_instance_uid)

    assert sop_instance_uids(metadata) == {uids_of(path)[2] for path in server.studies.native}
    assert {value_of(item, "00200011") for item in metadata} == {1}  # SeriesNumber


def test_retrieve_instance_metadata_values(server: Server) -> None:
    uids = uids_of(server.studies.compressed)

    metadata = server.client.retrieve_instance_metadata(*uids)

    assert value_of(metadata, "00080018") == uids[2]
    assert value_of(metadata, "00280008") == JPEG_2000_FRAMES  # NumberOfFrames
    assert "BulkDataURI" in metadata["7FE00010"]


# WADO-RS frames and bulkdata (PS3.18 10.4.1.1.3, 10.4.1.1.5)


def test_retrieve_instance_frames_native(server: Server) -> None:
    uids = uids_of(server.studies.native[1])
    original = pydicom.dcmread(server.studies.native[1])

    frames = server.client.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=("application/octet-stream",)
    )

    assert frames == [original.PixelData]


def test_retrieve_instance_frames_jpeg_2000(server: Server) -> None:
    uids = uids_of(server.studies.compressed)
    original = pydicom.dcmread(server.studies.compressed)

    frames = server.client.retrieve_instance_frames(
        *uids, frame_numbers=[3, 10], media_types=(("image/jp2", JPEG2000Lossless),)
    )

    assert frames == [
        get_frame(original.PixelData, 2, number_of_frames=JPEG_2000_FRAMES),
        get_frame(original.PixelData, 9, number_of_frames=JPEG_2000_FRAMES),
    ]


def test_iter_instance_frames_in_order(server: Server) -> None:
    uids = uids_of(server.studies.compressed)
    original = pydicom.dcmread(server.studies.compressed)

    frames = list(server.client.iter_instance_frames(*uids, frame_numbers=[5, 1]))

    assert frames == [
        get_frame(original.PixelData, 4, number_of_frames=JPEG_2000_FRAMES),
        get_frame(original.PixelData, 0, number_of_frames=JPEG_2000_FRAMES),
    ]


def bulkdata_uri(server: Server, path: Path) -> str:
    metadata = server.client.retrieve_instance_metadata(*uids_of(path))
    return str(metadata["7FE00010"]["BulkDataURI"])


def test_retrieve_bulkdata_pixel_data(server: Server) -> None:
    original = pydicom.dcmread(server.studies.native[0])

    bulkdata = server.client.retrieve_bulkdata(bulkdata_uri(server, server.studies.native[0]))

    assert bulkdata == [original.PixelData]


def test_retrieve_bulkdata_byte_range(server: Server) -> None:
    original = pydicom.dcmread(server.studies.native[0])

    bulkdata = server.client.retrieve_bulkdata(
        bulkdata_uri(server, server.studies.native[0]), byte_range=(10, 19)
    )

    assert bulkdata == [original.PixelData[10:20]]


def test_iter_bulkdata_small_chunks(server: Server) -> None:
    original = pydicom.dcmread(server.studies.native[1])
    client = DICOMwebClient(url=server.client.base_url)
    client.set_chunk_size(100)
    client.set_http_retry_params(retry=False)

    bulkdata = list(
        client.iter_bulkdata(
            bulkdata_uri(server, server.studies.native[1]),
            media_types=("application/octet-stream",),
        )
    )

    assert bulkdata == [original.PixelData]


# WADO-RS rendered (PS3.18 10.4.1.1.3)


def test_retrieve_instance_rendered_png(server: Server) -> None:
    uids = uids_of(server.studies.native[0])

    rendered = server.client.retrieve_instance_rendered(*uids, media_types=("image/png",))

    image = Image.open(io.BytesIO(rendered))
    assert image.format == "PNG"
    assert image.size == (16, 16)


def test_retrieve_instance_rendered_viewport(server: Server) -> None:
    uids = uids_of(server.studies.compressed)

    rendered = server.client.retrieve_instance_rendered(
        *uids, media_types=("image/jpeg",), params={"viewport": "32,32"}
    )

    image = Image.open(io.BytesIO(rendered))
    assert image.format == "JPEG"
    assert image.size == (32, 32)


def test_retrieve_instance_frames_rendered(server: Server) -> None:
    uids = uids_of(server.studies.compressed)

    rendered = server.client.retrieve_instance_frames_rendered(
        *uids, frame_numbers=[4], media_types=("image/png",)
    )

    image = Image.open(io.BytesIO(rendered))
    assert image.format == "PNG"
    assert image.size == (64, 64)


def split_multipart_body(body: bytes) -> list[tuple[bytes, bytes]]:
    """Split a multipart body into (headers, content) pairs at the delimiter on its first line.

    dicomweb-client 0.61's retrieve_series_rendered returns the response body unparsed and
    drops the Content-Type header, so the boundary is only known from the body itself.
    """
    delimiter = body.split(b"\r\n", 1)[0]
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        headers, content = chunk.removeprefix(b"\r\n").split(b"\r\n\r\n", 1)
        parts.append((headers, content.removesuffix(b"\r\n")))
    return parts


def test_retrieve_series_rendered_multipart(server: Server) -> None:
    study_instance_uid, series_instance_uid, _ = uids_of(server.studies.native[0])

    rendered = server.client.retrieve_series_rendered(
        study_instance_uid, series_instance_uid, media_types=("image/jpeg",)
    )

    parts = split_multipart_body(rendered)
    assert len(parts) == 2
    for headers, content in parts:
        assert b"Content-Type: image/jpeg" in headers
        image = Image.open(io.BytesIO(content))
        assert image.format == "JPEG"
        assert image.size == (16, 16)


# STOW-RS (PS3.18 10.5) and DELETE


def test_store_instances_then_retrieve(server: Server, tmp_path: Path) -> None:
    dataset = make_dataset(patient_id="INTEROP-DWC-5")
    path = tmp_path / "original" / "stored.dcm"
    path.parent.mkdir()
    dataset.save_as(path, enforce_file_format=True)

    response = server.client.store_instances([pydicom.dcmread(path)])
    received = server.client.retrieve_instance(*uids_of(path))

    (referenced,) = response.ReferencedSOPSequence
    assert referenced.ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    assert "FailedSOPSequence" not in response
    assert dataset_bytes_of(received, tmp_path) == dataset_bytes(path)


def test_store_instances_into_named_study(server: Server) -> None:
    study_instance_uid = str(generate_uid())
    dataset = make_dataset(study_instance_uid=study_instance_uid, patient_id="INTEROP-DWC-6")

    response = server.client.store_instances([dataset], study_instance_uid=study_instance_uid)

    (referenced,) = response.ReferencedSOPSequence
    assert referenced.ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    assert server.client.search_for_studies(search_filters={"PatientID": "INTEROP-DWC-6"})


def test_delete_study_removes_it(server: Server) -> None:
    study_instance_uid = uids_of(server.studies.study_to_delete[0])[0]

    server.client.delete_study(study_instance_uid)

    results = server.client.search_for_studies(
        search_filters={"StudyInstanceUID": study_instance_uid}
    )
    assert results == []


def test_delete_series_removes_it(server: Server) -> None:
    study_instance_uid, series_instance_uid, _ = uids_of(server.studies.series_to_delete[0])

    server.client.delete_series(study_instance_uid, series_instance_uid)

    results = server.client.search_for_series(
        search_filters={"SeriesInstanceUID": series_instance_uid}
    )
    assert results == []


def test_delete_instance_keeps_sibling(server: Server) -> None:
    deleted, kept = server.studies.instance_to_delete
    study_instance_uid, series_instance_uid, sop_instance_uid = uids_of(deleted)

    server.client.delete_instance(study_instance_uid, series_instance_uid, sop_instance_uid)

    results = server.client.search_for_instances(study_instance_uid, series_instance_uid)
    assert sop_instance_uids(results) == {uids_of(kept)[2]}
