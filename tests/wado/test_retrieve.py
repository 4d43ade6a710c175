"""Retrieve Study, Series and Instance over both index databases."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from tests.support import dataset_bytes, make_dataset, write_series
from tests.wado.helpers import (
    DICOMWEB,
    content_type_parameters,
    instance_url,
    parse_multipart,
    part10_dataset_bytes,
    pydicom_file,
    series_url,
    store_file,
    study_url,
)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def _store_all(context: ArchiveContext, paths: list[Path]) -> None:
    for path in paths:
        store_file(context, path)


def _datasets_by_uid(parts_content: list[bytes]) -> dict[str, bytes]:
    result = {}
    for content in parts_content:
        sop_instance_uid = str(pydicom.dcmread(io.BytesIO(content)).SOPInstanceUID)
        result[sop_instance_uid] = part10_dataset_bytes(content)
    return result


def test_retrieve_study_returns_received_bytes(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    first_series = write_series(tmp_path / "a", 3)
    study_instance_uid = str(pydicom.dcmread(first_series[0]).StudyInstanceUID)
    second_series = write_series(tmp_path / "b", 2, study_instance_uid=study_instance_uid)
    _store_all(context, first_series + second_series)

    response = client.get(f"{DICOMWEB}/studies/{study_instance_uid}")

    assert response.status_code == 200
    _, parameters = content_type_parameters(response.headers["content-type"])
    assert parameters["type"] == "application/dicom"
    assert parameters["transfer-syntax"] == EXPLICIT_VR_LITTLE_ENDIAN
    parts = parse_multipart(response)
    for part in parts:
        assert (
            part.content_type == f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        )
    expected = {path.stem: dataset_bytes(path) for path in first_series + second_series}
    assert _datasets_by_uid([part.content for part in parts]) == expected


def test_retrieve_series_returns_only_its_instances(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    series = write_series(tmp_path / "a", 2)
    study_instance_uid = str(pydicom.dcmread(series[0]).StudyInstanceUID)
    other_series = write_series(tmp_path / "b", 1, study_instance_uid=study_instance_uid)
    _store_all(context, series + other_series)
    first = pydicom.dcmread(series[0])

    response = client.get(
        f"{DICOMWEB}/studies/{study_instance_uid}/series/{first.SeriesInstanceUID}"
    )

    assert response.status_code == 200
    parts = parse_multipart(response)
    expected = {path.stem: dataset_bytes(path) for path in series}
    assert _datasets_by_uid([part.content for part in parts]) == expected


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
    ],
)
def test_retrieve_instance_keeps_stored_syntax(
    client: TestClient, context: ArchiveContext, name: str
) -> None:
    path = pydicom_file(name)
    stored = store_file(context, path)

    response = client.get(instance_url(stored))

    assert response.status_code == 200
    (part,) = parse_multipart(response)
    assert part.content_type == f"application/dicom; transfer-syntax={stored.transfer_syntax_uid}"
    assert part10_dataset_bytes(part.content) == dataset_bytes(path)


def test_retrieve_mixed_syntax_study(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    native = make_dataset()
    native_path = tmp_path / "native.dcm"
    native.save_as(native_path, enforce_file_format=True)
    compressed = pydicom.dcmread(pydicom_file("JPEG2000.dcm"))
    compressed.StudyInstanceUID = native.StudyInstanceUID
    compressed_path = tmp_path / "compressed.dcm"
    compressed.save_as(compressed_path, enforce_file_format=True)
    _store_all(context, [native_path, compressed_path])

    response = client.get(f"{DICOMWEB}/studies/{native.StudyInstanceUID}")

    assert response.status_code == 200
    _, parameters = content_type_parameters(response.headers["content-type"])
    assert "transfer-syntax" not in parameters
    syntaxes = sorted(part.content_type for part in parse_multipart(response))
    assert syntaxes == [
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.91",
    ]


def test_retrieve_uses_new_boundary_each_time(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    (path,) = write_series(tmp_path, 1)
    stored = store_file(context, path)

    first = content_type_parameters(client.get(instance_url(stored)).headers["content-type"])
    second = content_type_parameters(client.get(instance_url(stored)).headers["content-type"])

    assert first[1]["boundary"] != second[1]["boundary"]


def test_retrieve_unknown_resources_not_found(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    (path,) = write_series(tmp_path, 1)
    stored = store_file(context, path)
    unknown = generate_uid()

    study = client.get(f"{DICOMWEB}/studies/{unknown}")
    series = client.get(f"{study_url(stored)}/series/{unknown}")
    instance = client.get(f"{series_url(stored)}/instances/{unknown}")

    assert study.status_code == 404
    assert study.json()["detail"] == f"study {unknown} not found"
    assert series.status_code == 404
    assert series.json()["detail"] == f"series {unknown} not found"
    assert instance.status_code == 404
    assert instance.json()["detail"] == f"instance {unknown} not found"


def test_retrieve_series_of_other_study_not_found(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    (first_path,) = write_series(tmp_path / "a", 1)
    (second_path,) = write_series(tmp_path / "b", 1)
    first = store_file(context, first_path)
    second = store_file(context, second_path)
    wrong_study = f"{DICOMWEB}/studies/{first.study_instance_uid}/series/"

    series = client.get(wrong_study + second.series_instance_uid)
    instance = client.get(f"{series_url(first)}/instances/{second.sop_instance_uid}")

    assert series.status_code == 404
    assert f"belongs to study {second.study_instance_uid}" in series.json()["detail"]
    assert instance.status_code == 404
    assert f"belongs to series {second.series_instance_uid}" in instance.json()["detail"]


def test_retrieve_invalid_uid_bad_request(client: TestClient) -> None:
    response = client.get(f"{DICOMWEB}/studies/1.2.abc")

    assert response.status_code == 400
    assert "invalid StudyInstanceUID '1.2.abc'" in response.json()["detail"]


def test_retrieve_other_syntax_not_acceptable(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    (path,) = write_series(tmp_path, 1)
    stored = store_file(context, path)

    response = client.get(
        study_url(stored),
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.100"
        },
    )

    assert response.status_code == 406
    detail = response.json()["detail"]
    assert f"(stored syntax {EXPLICIT_VR_LITTLE_ENDIAN})" in detail
    assert (
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}'
        in detail
    )
