"""Retrieve Bulkdata of top-level and nested elements."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import get_frame

from noctis_common.context import ArchiveContext
from tests.support import make_dataset
from tests.wado.helpers import (
    content_type_parameters,
    instance_url,
    parse_multipart,
    pydicom_file,
    store_dataset,
    store_file,
)

OCTET_STREAM_PART = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"


def test_native_pixel_data_in_one_part(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    dataset = make_dataset(rows=32, columns=48)
    stored = store_dataset(context, dataset, tmp_path)

    response = client.get(f"{instance_url(stored)}/bulkdata/7FE00010")

    assert response.status_code == 200
    _, parameters = content_type_parameters(response.headers["content-type"])
    assert parameters["type"] == "application/octet-stream"
    (part,) = parse_multipart(response)
    assert part.content_type == OCTET_STREAM_PART
    assert part.content == dataset.PixelData


def test_nested_waveform_data(client: TestClient, context: ArchiveContext) -> None:
    path = pydicom_file("waveform_ecg.dcm")
    stored = store_file(context, path)
    waveforms = pydicom.dcmread(path).WaveformSequence

    first = client.get(f"{instance_url(stored)}/bulkdata/54000100/0/54001010")
    second = client.get(f"{instance_url(stored)}/bulkdata/54000100/1/54001010")

    assert first.status_code == 200
    assert parse_multipart(first)[0].content == waveforms[0].WaveformData
    assert second.status_code == 200
    assert parse_multipart(second)[0].content == waveforms[1].WaveformData


def test_nested_icon_pixel_data(sqlite_client: TestClient, sqlite_context: ArchiveContext) -> None:
    path = pydicom_file("MR-SIEMENS-DICOM-WithOverlays.dcm")
    stored = store_file(sqlite_context, path)
    dataset = pydicom.dcmread(path)

    icon = sqlite_client.get(f"{instance_url(stored)}/bulkdata/00880200/0/7FE00010")
    overlay = sqlite_client.get(f"{instance_url(stored)}/bulkdata/60003000")

    assert icon.status_code == 200
    assert parse_multipart(icon)[0].content == dataset.IconImageSequence[0].PixelData
    assert overlay.status_code == 200
    assert parse_multipart(overlay)[0].content == dataset[0x60003000].value


def test_big_endian_pixel_data_sent_little_endian(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("emri_small_big_endian.dcm")
    stored = store_file(sqlite_context, path)
    pixels = pydicom.dcmread(path).pixel_array

    response = sqlite_client.get(f"{instance_url(stored)}/bulkdata/7FE00010")

    assert response.status_code == 200
    (part,) = parse_multipart(response)
    assert part.content == pixels.astype("<u2").tobytes()


def test_encapsulated_pixel_data_one_part_per_frame(
    client: TestClient, context: ArchiveContext
) -> None:
    path = pydicom_file("SC_rgb_rle_2frame.dcm")
    stored = store_file(context, path)
    pixel_data = pydicom.dcmread(path).PixelData

    response = client.get(f"{instance_url(stored)}/bulkdata/7FE00010")

    assert response.status_code == 200
    parts = parse_multipart(response)
    assert [part.content_type for part in parts] == [
        "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    ] * 2
    assert [part.content for part in parts] == [
        get_frame(pixel_data, 0, number_of_frames=2),
        get_frame(pixel_data, 1, number_of_frames=2),
    ]


@pytest.mark.parametrize(
    "tag_path", ["7FE0", "7FE00010/x", "00540016/0", "GGGGGGGG", "54000100/-1/54001010"]
)
def test_invalid_bulkdata_path_bad_request(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path, tag_path: str
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)

    response = sqlite_client.get(f"{instance_url(stored)}/bulkdata/{tag_path}")

    assert response.status_code == 400
    assert f"invalid bulk data path {tag_path!r}" in response.json()["detail"]


@pytest.mark.parametrize(
    ("tag_path", "message"),
    [
        ("00420011", "has no element 00420011"),
        ("54000100/5/54001010", "has no sequence item 54000100/5"),
        ("54000100/0/00420011", "has no element 54000100/0/00420011"),
        ("00100010", "has VR PN, which is not bulk data"),
    ],
)
def test_missing_bulkdata_not_found(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tag_path: str, message: str
) -> None:
    stored = store_file(sqlite_context, pydicom_file("waveform_ecg.dcm"))

    response = sqlite_client.get(f"{instance_url(stored)}/bulkdata/{tag_path}")

    assert response.status_code == 404
    assert message in response.json()["detail"]


def test_bulkdata_accept_not_acceptable(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/bulkdata/7FE00010",
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )

    assert response.status_code == 406
    assert (
        'multipart/related; type="application/octet-stream"; '
        "transfer-syntax=1.2.840.10008.1.2.1" in response.json()["detail"]
    )


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=3000-", 3000, 3071),
        ("bytes=-16", 3056, 3071),
        ("bytes=100-999999", 100, 3071),
    ],
)
def test_byte_range_sends_slice(
    *,
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    range_header: str,
    first: int,
    last: int,
) -> None:
    dataset = make_dataset(rows=32, columns=48)
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/bulkdata/7FE00010", headers={"Range": range_header}
    )

    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {first}-{last}/3072"
    (part,) = parse_multipart(response)
    assert part.content == dataset.PixelData[first : last + 1]


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "items=0-1", "bytes=9-2"])
def test_unsupported_range_sends_whole_value(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path, range_header: str
) -> None:
    dataset = make_dataset()
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/bulkdata/7FE00010", headers={"Range": range_header}
    )

    assert response.status_code == 200
    (part,) = parse_multipart(response)
    assert part.content == dataset.PixelData


def test_range_past_end_not_satisfiable(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/bulkdata/7FE00010", headers={"Range": "bytes=99999-"}
    )

    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */512"
    assert "starts past the end" in response.json()["detail"]
