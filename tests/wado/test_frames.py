"""Retrieve Frames from native and encapsulated pixel data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, get_frame
from pydicom.pixels.utils import pack_bits
from pydicom.uid import JPEGBaseline8Bit

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
FRAME_LENGTH = 600


def _synthetic_frame(index: int) -> bytes:
    """Return a frame shaped like a JPEG bitstream: SOI marker, no 0xFF bytes, EOI marker."""
    body = bytes((index * 31 + position * 7) % 200 for position in range(FRAME_LENGTH - 4))
    return b"\xff\xd8" + body + b"\xff\xd9"


def _encapsulated_dataset(layout: str, frames: list[bytes]) -> Dataset:
    dataset = make_dataset(rows=8, columns=8)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.NumberOfFrames = len(frames)
    if layout == "extended offset table":
        pixel_data, offsets, lengths = encapsulate_extended(frames)
        dataset.ExtendedOffsetTable = offsets
        dataset.ExtendedOffsetTableLengths = lengths
    else:
        has_bot = layout != "no offset table"
        pixel_data = encapsulate(frames, fragments_per_frame=3, has_bot=has_bot)
    if layout == "wrong basic offset table":
        # Point every entry after the first one byte past its fragment's item tag.
        table = bytearray(pixel_data)
        for entry in range(1, len(frames)):
            position = 8 + 4 * entry
            offset = int.from_bytes(table[position : position + 4], "little")
            table[position : position + 4] = (offset + 1).to_bytes(4, "little")
        pixel_data = bytes(table)
    dataset.PixelData = pixel_data
    dataset["PixelData"].VR = "OB"
    return dataset


def _frame_url(stored_url: str, frame_list: str) -> str:
    return f"{stored_url}/frames/{frame_list}"


def test_native_frames_in_requested_order(client: TestClient, context: ArchiveContext) -> None:
    path = pydicom_file("emri_small.dcm")
    stored = store_file(context, path)
    pixel_data = pydicom.dcmread(path).PixelData
    frame_bytes = 64 * 64 * 2

    response = client.get(_frame_url(instance_url(stored), "3,1,10"))

    assert response.status_code == 200
    _, parameters = content_type_parameters(response.headers["content-type"])
    assert parameters["type"] == "application/octet-stream"
    parts = parse_multipart(response)
    assert [part.content_type for part in parts] == [OCTET_STREAM_PART] * 3
    for part, number in zip(parts, [3, 1, 10], strict=True):
        start = (number - 1) * frame_bytes
        assert part.content == pixel_data[start : start + frame_bytes], f"frame {number}"


def test_big_endian_frames_sent_little_endian(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("emri_small_big_endian.dcm")
    stored = store_file(sqlite_context, path)
    pixels = pydicom.dcmread(path).pixel_array

    response = sqlite_client.get(_frame_url(instance_url(stored), "2,7"))

    assert response.status_code == 200
    parts = parse_multipart(response)
    assert parts[0].content_type == OCTET_STREAM_PART
    assert parts[0].content == pixels[1].astype("<u2").tobytes()
    assert parts[1].content == pixels[6].astype("<u2").tobytes()


def test_bit_packed_frames_start_at_bit_zero(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    # 3 x 3 one-bit pixels make 9-bit frames, so frames 2 and 3 start inside a byte.
    pixels = np.array([(index * 5 + index // 3) % 2 for index in range(27)], dtype=np.uint8)
    dataset = make_dataset(rows=3, columns=3)
    dataset.BitsAllocated = 1
    dataset.BitsStored = 1
    dataset.HighBit = 0
    dataset.NumberOfFrames = 3
    dataset.PixelData = pack_bits(pixels)
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(_frame_url(instance_url(stored), "1,2,3"))

    assert response.status_code == 200
    parts = parse_multipart(response)
    for number, part in enumerate(parts):
        expected = pack_bits(pixels[number * 9 : number * 9 + 9], pad=False)
        assert part.content == expected, f"frame {number + 1}"


# File, media type of its frames, and frames to request.
COMPRESSED_FILES = [
    ("emri_small_jpeg_2k_lossless.dcm", "image/jp2", [1, 10]),
    ("JPEG2000.dcm", "image/jp2", [1]),
    ("emri_small_jpeg_ls_lossless.dcm", "image/jls", [2, 5]),
    ("SC_rgb_jpeg_gdcm.dcm", "image/jpeg", [1]),
    ("JPGExtended.dcm", "image/jpeg", [1]),
    ("SC_rgb_rle_2frame.dcm", "image/dicom-rle", [2, 1]),
    ("emri_small_RLE.dcm", "image/dicom-rle", [4]),
]


@pytest.mark.parametrize(("name", "media_type", "frame_numbers"), COMPRESSED_FILES)
def test_compressed_frames_as_stored(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    name: str,
    media_type: str,
    frame_numbers: list[int],
) -> None:
    path = pydicom_file(name)
    stored = store_file(sqlite_context, path)
    dataset = pydicom.dcmread(path)
    number_of_frames = int(dataset.get("NumberOfFrames", 1))
    frame_list = ",".join(str(number) for number in frame_numbers)

    response = sqlite_client.get(_frame_url(instance_url(stored), frame_list))

    assert response.status_code == 200, response.text
    _, parameters = content_type_parameters(response.headers["content-type"])
    assert parameters["type"] == media_type
    parts = parse_multipart(response)
    expected_type = f"{media_type}; transfer-syntax={stored.transfer_syntax_uid}"
    for part, number in zip(parts, frame_numbers, strict=True):
        assert part.content_type == expected_type
        expected = get_frame(dataset.PixelData, number - 1, number_of_frames=number_of_frames)
        assert part.content == expected, f"frame {number}"


@pytest.mark.parametrize(
    "layout",
    [
        "no offset table",
        "basic offset table",
        "wrong basic offset table",
        "extended offset table",
    ],
)
def test_encapsulated_frame_layouts(
    client: TestClient, context: ArchiveContext, tmp_path: Path, layout: str
) -> None:
    frames = [_synthetic_frame(index) for index in range(4)]
    dataset = _encapsulated_dataset(layout, frames)
    stored = store_dataset(context, dataset, tmp_path)

    response = client.get(_frame_url(instance_url(stored), "4,2,1"))

    assert response.status_code == 200, response.text
    parts = parse_multipart(response)
    assert [part.content for part in parts] == [frames[3], frames[1], frames[0]]
    assert parts[0].content_type == f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"


@pytest.mark.parametrize(
    ("frame_list", "message"),
    [
        ("0", "frame numbers start at 1, not 0"),
        ("1,a", "'a' is not a frame number"),
        ("1,,2", "'' is not a frame number"),
        ("-1", "'-1' is not a frame number"),
        ("2,3,2", "frame 2 is listed twice"),
    ],
)
def test_invalid_frame_list_bad_request(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    frame_list: str,
    message: str,
) -> None:
    dataset = make_dataset()
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(_frame_url(instance_url(stored), frame_list))

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_frame_out_of_range_names_count(client: TestClient, context: ArchiveContext) -> None:
    stored = store_file(context, pydicom_file("emri_small.dcm"))

    response = client.get(_frame_url(instance_url(stored), "1,11"))

    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail == (
        f"frame 11 is out of range: instance {stored.sop_instance_uid} has 10 frames, "
        "numbered from 1"
    )


def test_frames_without_pixel_data_not_found(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    dataset = make_dataset()
    del dataset.PixelData
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(_frame_url(instance_url(stored), "1"))

    assert response.status_code == 404
    assert response.json()["detail"].endswith("has no pixel data, so it has no frames")


# Accept header, and the expected part Content-Type or None for 406, for frames of
# a native instance and of a JPEG Baseline instance.
NATIVE_ACCEPT_CASES = [
    (None, OCTET_STREAM_PART),
    ("*/*", OCTET_STREAM_PART),
    ("multipart/related", OCTET_STREAM_PART),
    ('multipart/related; type="application/octet-stream"', OCTET_STREAM_PART),
    (
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1',
        OCTET_STREAM_PART,
    ),
    ('multipart/related; type="application/octet-stream"; transfer-syntax=*', OCTET_STREAM_PART),
    ('multipart/related; type="image/jpeg"', "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70"),
    (
        'multipart/related; type="application/octet-stream"; '
        "transfer-syntax=1.2.840.10008.1.2.4.50",
        None,
    ),
]
JPEG_PART = f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"
JPEG_ACCEPT_CASES = [
    (None, JPEG_PART),
    ("*/*", JPEG_PART),
    ("multipart/related", JPEG_PART),
    ('multipart/related; type="image/jpeg"', JPEG_PART),
    ('multipart/related; type="image/*"', JPEG_PART),
    ("image/jpeg", JPEG_PART),
    (f'multipart/related; type="image/jpeg"; transfer-syntax={JPEGBaseline8Bit}', JPEG_PART),
    (
        'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        f"application/octet-stream; transfer-syntax={JPEGBaseline8Bit}",
    ),
    (
        'multipart/related; type="application/octet-stream"; q=0.5, '
        'multipart/related; type="image/jpeg"',
        JPEG_PART,
    ),
    ('multipart/related; type="application/octet-stream"', None),
    ('multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.70', None),
    ('multipart/related; type="image/jp2"', None),
    ('multipart/related; type="image/jpeg"; q=0', None),
]


def _negotiated_part_type(
    client: TestClient, url: str, accept: str | None
) -> tuple[int, str | None, str]:
    headers = {} if accept is None else {"Accept": accept}
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        return response.status_code, None, response.text
    (part,) = parse_multipart(response)
    return response.status_code, part.content_type, response.text


@pytest.mark.parametrize(("accept", "expected"), NATIVE_ACCEPT_CASES)
def test_native_frames_accept_variants(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    accept: str | None,
    expected: str | None,
) -> None:
    dataset = make_dataset()
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    status, part_type, text = _negotiated_part_type(
        sqlite_client, _frame_url(instance_url(stored), "1"), accept
    )

    assert status == (200 if expected else 406), text
    assert part_type == expected


@pytest.mark.parametrize(("accept", "expected"), JPEG_ACCEPT_CASES)
def test_compressed_frames_accept_variants(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    accept: str | None,
    expected: str | None,
) -> None:
    dataset = _encapsulated_dataset("basic offset table", [_synthetic_frame(0)])
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    status, part_type, text = _negotiated_part_type(
        sqlite_client, _frame_url(instance_url(stored), "1"), accept
    )

    assert status == (200 if expected else 406), text
    assert part_type == expected


def test_undecodable_frames_not_acceptable_names_reason(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    dataset = _encapsulated_dataset("basic offset table", [_synthetic_frame(0)])
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(
        _frame_url(instance_url(stored), "1"),
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )

    assert response.status_code == 406
    detail = response.json()["detail"]
    assert "cannot be transcoded to transfer syntax 1.2.840.10008.1.2.1" in detail
    assert "request its stored transfer syntax" in detail


def test_compressed_frames_not_acceptable_names_offers(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    dataset = _encapsulated_dataset("basic offset table", [_synthetic_frame(0)])
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(
        _frame_url(instance_url(stored), "1"),
        headers={"Accept": 'multipart/related; type="image/gif"'},
    )

    assert response.status_code == 406
    detail = response.json()["detail"]
    assert "cannot be sent in any media type that the Accept header allows" in detail
    assert f'multipart/related; type="image/jpeg"; transfer-syntax={JPEGBaseline8Bit}' in detail
    assert (
        'multipart/related; type="application/octet-stream"; '
        f"transfer-syntax={JPEGBaseline8Bit}" in detail
    )


def test_former_media_type_names_accepted(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    rle = store_file(sqlite_context, pydicom_file("SC_rgb_rle_2frame.dcm"))
    jpeg_ls = store_file(sqlite_context, pydicom_file("emri_small_jpeg_ls_lossless.dcm"))

    rle_status, rle_type, _ = _negotiated_part_type(
        sqlite_client,
        _frame_url(instance_url(rle), "1"),
        'multipart/related; type="image/x-dicom-rle"',
    )
    jls_status, jls_type, _ = _negotiated_part_type(
        sqlite_client,
        _frame_url(instance_url(jpeg_ls), "1"),
        'multipart/related; type="image/x-jls"',
    )

    assert rle_status == 200
    assert rle_type == "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    assert jls_status == 200
    assert jls_type == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
