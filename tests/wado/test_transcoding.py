"""Transcoding of instances and frames to the transfer syntax a client asks for."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from noctis_common.context import ArchiveContext
from tests.wado.helpers import (
    instance_url,
    parse_multipart,
    pydicom_file,
    store_file,
    study_url,
)

LOSSLESS_TARGETS = [
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
]


def _dicom_accept(transfer_syntax_uid: str) -> dict[str, str]:
    return {
        "Accept": 'multipart/related; type="application/dicom"; '
        f"transfer-syntax={transfer_syntax_uid}"
    }


def _retrieve(client: TestClient, url: str, headers: dict[str, str]) -> pydicom.Dataset:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    (part,) = parse_multipart(response)
    return pydicom.dcmread(io.BytesIO(part.content))


@pytest.mark.parametrize("target", LOSSLESS_TARGETS, ids=lambda uid: uid.name)
def test_lossless_target_keeps_pixels(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, target: str
) -> None:
    path = pydicom_file("CT_small.dcm")
    stored = store_file(sqlite_context, path)

    returned = _retrieve(sqlite_client, instance_url(stored), _dicom_accept(target))

    assert returned.file_meta.TransferSyntaxUID == target
    assert np.array_equal(returned.pixel_array, pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize(
    "name",
    ["JPEG2000.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle_2frame.dcm"],
)
def test_compressed_source_decoded(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, name: str
) -> None:
    path = pydicom_file(name)
    stored = store_file(sqlite_context, path)

    returned = _retrieve(sqlite_client, instance_url(stored), _dicom_accept(ExplicitVRLittleEndian))

    assert returned.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(returned.pixel_array, pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_web_excluded_syntax_sent_explicit_little(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, name: str
) -> None:
    path = pydicom_file(name)
    stored = store_file(sqlite_context, path)

    returned = _retrieve(sqlite_client, instance_url(stored), {})

    assert returned.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(returned.pixel_array, pydicom.dcmread(path).pixel_array)


def test_wildcard_transcodes_implicit_vr(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("MR_small_implicit.dcm"))

    returned = _retrieve(sqlite_client, instance_url(stored), _dicom_accept("*"))

    assert returned.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_web_excluded_syntax_sent_when_named(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("MR_small_implicit.dcm"))

    returned = _retrieve(
        sqlite_client, instance_url(stored), _dicom_accept(stored.transfer_syntax_uid)
    )

    assert returned.file_meta.TransferSyntaxUID == stored.transfer_syntax_uid


def test_wildcard_keeps_stored_syntax(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("CT_small.dcm"))

    returned = _retrieve(sqlite_client, instance_url(stored), _dicom_accept("*"))

    assert returned.file_meta.TransferSyntaxUID == stored.transfer_syntax_uid


def test_lossy_target_sent_only_when_named(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("CT_small.dcm")
    stored = store_file(sqlite_context, path)

    returned = _retrieve(sqlite_client, instance_url(stored), _dicom_accept(JPEG2000))

    assert returned.file_meta.TransferSyntaxUID == JPEG2000
    assert returned.LossyImageCompression == "01"
    assert returned.SOPInstanceUID == stored.sop_instance_uid
    assert returned.pixel_array.shape == pydicom.dcmread(path).pixel_array.shape


def test_stored_object_unchanged_by_transcoding(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("CT_small.dcm"))
    url = instance_url(stored)
    before = parse_multipart(sqlite_client.get(url))[0].content

    _retrieve(sqlite_client, url, _dicom_accept(RLELossless))

    assert parse_multipart(sqlite_client.get(url))[0].content == before


def test_jpeg_baseline_not_acceptable_names_choices(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    stored = store_file(sqlite_context, pydicom_file("CT_small.dcm"))

    response = sqlite_client.get(instance_url(stored), headers=_dicom_accept(JPEGBaseline8Bit))

    assert response.status_code == 406
    detail = response.json()["detail"]
    assert "lossy JPEG encodes unsigned samples only" in detail
    assert "request its stored transfer syntax" in detail


def test_study_transcoded_part_by_part(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    first = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    second = pydicom.dcmread(pydicom_file("MR_small_implicit.dcm"))
    second.StudyInstanceUID = first.StudyInstanceUID
    paths = []
    for index, dataset in enumerate((first, second)):
        paths.append(tmp_path / f"{index}.dcm")
        dataset.save_as(paths[-1])
    stored = [store_file(sqlite_context, path) for path in paths]

    response = sqlite_client.get(study_url(stored[0]), headers=_dicom_accept(RLELossless))

    assert response.status_code == 200
    parts = parse_multipart(response)
    syntaxes = {
        pydicom.dcmread(io.BytesIO(part.content)).file_meta.TransferSyntaxUID for part in parts
    }
    assert syntaxes == {RLELossless}


def test_compressed_frames_decoded_to_octet_stream(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("SC_rgb_rle_2frame.dcm")
    stored = store_file(sqlite_context, path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/frames/2",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )

    assert response.status_code == 200
    (part,) = parse_multipart(response)
    assert (
        part.content_type == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    assert part.content == pixel_array(pydicom.dcmread(path), index=1).tobytes()


def test_native_frames_encoded_as_jpeg_2000(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    path = pydicom_file("emri_small.dcm")
    stored = store_file(sqlite_context, path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/frames/3",
        headers={"Accept": 'multipart/related; type="image/jp2"'},
    )

    assert response.status_code == 200
    (part,) = parse_multipart(response)
    assert part.content_type == f"image/jp2; transfer-syntax={JPEG2000Lossless}"
    original = pydicom.dcmread(path)
    original.compress(JPEG2000Lossless)
    decoded = pixel_array(original, index=2)
    frames = list(generate_frames(original.PixelData, number_of_frames=original.NumberOfFrames))
    assert part.content == frames[2]
    assert np.array_equal(decoded, pixel_array(pydicom.dcmread(path), index=2))
