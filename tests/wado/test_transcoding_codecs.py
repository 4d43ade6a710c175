"""Transcoding to JPEG and HTJ2K transfer syntaxes, checked by decoding with pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from pydicom.uid import (
    HTJ2K,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

from noctis_common.context import ArchiveContext
from tests.wado.helpers import instance_url, parse_multipart, pydicom_file, store_file

LOSSLESS_TARGETS = [JPEGLossless, JPEGLosslessSV1, HTJ2KLossless, HTJ2KLosslessRPCL]
# CT_small: signed 16-bit monochrome; SC_rgb: 8-bit RGB.
SOURCES = ["CT_small.dcm", "SC_rgb.dcm"]


def _dicom_accept(transfer_syntax_uid: str) -> dict[str, str]:
    return {
        "Accept": 'multipart/related; type="application/dicom"; '
        f"transfer-syntax={transfer_syntax_uid}"
    }


def _retrieve(client: TestClient, url: str, transfer_syntax_uid: UID) -> pydicom.Dataset:
    response = client.get(url, headers=_dicom_accept(transfer_syntax_uid))
    assert response.status_code == 200, response.text
    (part,) = parse_multipart(response)
    return pydicom.dcmread(io.BytesIO(part.content))


def _psnr(original: NDArray[np.generic], decoded: NDArray[np.generic], peak: float) -> float:
    error = np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / error)) if error else float("inf")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("target", LOSSLESS_TARGETS, ids=lambda uid: uid.name)
def test_lossless_codec_keeps_pixels(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, target: UID, source: str
) -> None:
    path = pydicom_file(source)
    stored = store_file(sqlite_context, path)

    received = _retrieve(sqlite_client, instance_url(stored), target)

    assert received.file_meta.TransferSyntaxUID == target
    assert "LossyImageCompression" not in received
    assert np.array_equal(received.pixel_array, pydicom.dcmread(path).pixel_array)


def test_jpeg_baseline_colour_within_psnr(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("SC_rgb.dcm")
    stored = store_file(sqlite_context, path)

    received = _retrieve(sqlite_client, instance_url(stored), JPEGBaseline8Bit)

    assert received.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert received.PhotometricInterpretation == "YBR_FULL_422"
    assert received.LossyImageCompression == "01"
    assert received.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(received.LossyImageCompressionRatio) > 1
    assert _psnr(pydicom.dcmread(path).pixel_array, received.pixel_array, 255) > 30


def test_jpeg_extended_12_bit_within_psnr(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    pixels = dataset.pixel_array.astype(np.int32)
    unsigned = ((pixels - pixels.min()) * 4095 // (pixels.max() - pixels.min())).astype(np.uint16)
    dataset.PixelRepresentation = 0
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelData = unsigned.tobytes()
    path = tmp_path / "unsigned_12_bit.dcm"
    dataset.save_as(path, enforce_file_format=True)
    stored = store_file(sqlite_context, path)

    received = _retrieve(sqlite_client, instance_url(stored), JPEGExtended12Bit)

    assert received.file_meta.TransferSyntaxUID == JPEGExtended12Bit
    assert received.LossyImageCompression == "01"
    assert _psnr(unsigned, received.pixel_array, 4095) > 40


def test_htj2k_lossy_within_psnr(sqlite_client: TestClient, sqlite_context: ArchiveContext) -> None:
    path = pydicom_file("CT_small.dcm")
    stored = store_file(sqlite_context, path)

    received = _retrieve(sqlite_client, instance_url(stored), HTJ2K)

    original = pydicom.dcmread(path).pixel_array
    peak = float(original.max()) - float(original.min())
    assert received.file_meta.TransferSyntaxUID == HTJ2K
    assert received.LossyImageCompressionMethod == "ISO_15444_15"
    assert _psnr(original, received.pixel_array, peak) > 40


def test_jpeg_baseline_rejects_16_bit(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("MR_small.dcm"))

    response = sqlite_client.get(instance_url(stored), headers=_dicom_accept(JPEGBaseline8Bit))

    assert response.status_code == 406
    assert "request its stored transfer syntax" in response.json()["detail"]


def test_not_acceptable_lists_new_syntaxes(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("CT_small.dcm"))

    response = sqlite_client.get(
        instance_url(stored), headers=_dicom_accept("1.2.840.10008.1.2.4.100")
    )

    assert response.status_code == 406
    detail = response.json()["detail"]
    for uid in [*LOSSLESS_TARGETS, JPEGBaseline8Bit, JPEGExtended12Bit, HTJ2K]:
        assert f"transfer-syntax={uid}" in detail, uid


def test_jpeg_media_type_defaults_to_lossless_sv1(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("CT_small.dcm"))

    response = sqlite_client.get(
        f"{instance_url(stored)}/frames/1",
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )

    assert response.status_code == 200, response.text
    (part,) = parse_multipart(response)
    assert part.content_type == f"image/jpeg; transfer-syntax={JPEGLosslessSV1}"
