"""WADO-URI (PS3.18 chapter 9): one object as DICOM or as a rendered image."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from noctis_common.archive import StoredInstance
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.routes import router
from noctis_wado.wado_uri import router as wado_uri_router
from tests.support import ArchiveProcess, make_dataset
from tests.wado.helpers import pydicom_file, store_dataset, store_file


@pytest.fixture
def uri_client(sqlite_context: ArchiveContext) -> Iterator[TestClient]:
    """A test client for WADO-RS and WADO-URI over ``sqlite_context``."""
    app = create_app("Noctis WADO test", [router], sqlite_context.settings, sqlite_context)
    app.include_router(wado_uri_router)
    with TestClient(app) as test_client:
        yield test_client


def _parameters(stored: StoredInstance, **extra: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": stored.study_instance_uid,
        "seriesUID": stored.series_instance_uid,
        "objectUID": stored.sop_instance_uid,
        **extra,
    }


def _ramp_dataset(rows: int = 16, columns: int = 32) -> pydicom.Dataset:
    dataset = make_dataset(rows=rows, columns=columns)
    dataset.BitsStored = 16
    dataset.HighBit = 15
    pixels = np.arange(rows * columns, dtype=np.uint16) * 8
    dataset.PixelData = pixels.astype("<u2").tobytes()
    return dataset


def _image(response: httpx.Response) -> NDArray[np.uint8]:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_image_defaults_to_jpeg(
    uri_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = store_dataset(sqlite_context, _ramp_dataset(), tmp_path)

    response = uri_client.get("/wado", params=_parameters(stored))

    assert response.headers["content-type"] == "image/jpeg"
    assert _image(response).shape == (16, 32)


def test_dicom_defaults_to_explicit_little(
    uri_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("MR_small_implicit.dcm")
    stored = store_file(sqlite_context, path)

    response = uri_client.get("/wado", params=_parameters(stored, contentType="application/dicom"))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    returned = pydicom.dcmread(io.BytesIO(response.content))
    assert returned.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(returned.pixel_array, pydicom.dcmread(path).pixel_array)


def test_dicom_in_requested_syntax(uri_client: TestClient, sqlite_context: ArchiveContext) -> None:
    path = pydicom_file("CT_small.dcm")
    stored = store_file(sqlite_context, path)

    response = uri_client.get(
        "/wado",
        params=_parameters(
            stored, contentType="application/dicom", transferSyntax=str(JPEGLSLossless)
        ),
    )

    assert response.status_code == 200
    returned = pydicom.dcmread(io.BytesIO(response.content))
    assert returned.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(returned.pixel_array, pydicom.dcmread(path).pixel_array)


def test_png_window_rows_and_region(
    uri_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = store_dataset(sqlite_context, _ramp_dataset(), tmp_path)

    full = _image(
        uri_client.get(
            "/wado",
            params=_parameters(
                stored, contentType="image/png", windowCenter="2048", windowWidth="4096"
            ),
        )
    )
    cropped = _image(
        uri_client.get(
            "/wado",
            params=_parameters(stored, contentType="image/png", region="0,0,0.5,0.5", rows="8"),
        )
    )

    values = np.arange(16 * 32, dtype=np.float64).reshape(16, 32) * 8
    expected = np.rint(np.clip((values - 2047.5) / 4095 + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(full, expected)
    assert cropped.shape == (8, 16)


def test_frame_number_selects_frame(uri_client: TestClient, sqlite_context: ArchiveContext) -> None:
    stored = store_file(sqlite_context, pydicom_file("SC_rgb_rle_2frame.dcm"))
    expected = pydicom.dcmread(pydicom_file("SC_rgb_rle_2frame.dcm")).pixel_array[1]

    image = _image(
        uri_client.get(
            "/wado", params=_parameters(stored, contentType="image/png", frameNumber="2")
        )
    )

    assert np.array_equal(image, expected)


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        ({"requestType": "RETRIEVE"}, 400, "requestType must be WADO"),
        ({"anonymize": "yes"}, 400, "anonymize is not supported"),
        ({"windowCenter": "40"}, 400, "windowCenter and windowWidth together"),
        ({"region": "0.5,0,0.2,1"}, 400, "left below right"),
        ({"contentType": "text/html"}, 406, "names no supported media type"),
        (
            {"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.100"},
            406,
            "cannot be sent in transfer syntax",
        ),
        ({"contentType": "application/dicom", "rows": "8"}, 400, "rendered images only"),
    ],
)
def test_invalid_request_rejected(
    *,
    uri_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    extra: dict[str, str],
    status: int,
    message: str,
) -> None:
    stored = store_dataset(sqlite_context, _ramp_dataset(), tmp_path)

    response = uri_client.get("/wado", params=_parameters(stored, **extra))

    assert response.status_code == status
    assert message in response.json()["detail"]


def test_missing_object_uid_rejected(
    uri_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = store_dataset(sqlite_context, _ramp_dataset(), tmp_path)
    parameters = _parameters(stored)
    del parameters["objectUID"]

    response = uri_client.get("/wado", params=parameters)

    assert response.status_code == 400
    assert "objectUID parameter is missing" in response.json()["detail"]


def test_archive_serves_wado_uri(archive_process: ArchiveProcess, tmp_path: Path) -> None:
    context = ArchiveContext.create(Settings(data_dir=archive_process.data_dir))
    try:
        stored = store_dataset(context, _ramp_dataset(), tmp_path)
    finally:
        context.close()

    response = httpx.get(
        f"{archive_process.http_url}/wado",
        params=_parameters(stored, contentType="image/png"),
        timeout=30,
    )

    assert _image(response).shape == (16, 32)
