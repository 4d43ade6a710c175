"""WADO-RS over the S3 object store backend, against SeaweedFS's S3 server on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import get_frame

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.routes import router
from tests.servers.seaweedfs import SeaweedFS
from tests.support import dataset_bytes
from tests.wado.helpers import (
    instance_url,
    parse_multipart,
    part10_dataset_bytes,
    pydicom_file,
    store_file,
)


@pytest.fixture
def s3_context(tmp_path: Path, s3_server: SeaweedFS) -> Iterator[ArchiveContext]:
    """An archive context over SQLite and a new bucket of the S3 server."""
    settings = Settings(
        data_dir=tmp_path / "var", **s3_server.noctis_settings(f"noctis-{uuid.uuid4().hex[:8]}")
    )
    context = ArchiveContext.create(settings)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def s3_client(s3_context: ArchiveContext) -> Iterator[TestClient]:
    app = create_app("Noctis WADO-RS S3 test", [router], s3_context.settings, s3_context)
    with TestClient(app) as client:
        yield client


def test_s3_instance_and_frames(s3_client: TestClient, s3_context: ArchiveContext) -> None:
    path = pydicom_file("emri_small_jpeg_2k_lossless.dcm")
    stored = store_file(s3_context, path)
    pixel_data = pydicom.dcmread(path).PixelData

    instance = s3_client.get(instance_url(stored))
    frames = s3_client.get(f"{instance_url(stored)}/frames/3,7")

    assert instance.status_code == 200
    assert part10_dataset_bytes(parse_multipart(instance)[0].content) == dataset_bytes(path)
    assert frames.status_code == 200
    assert [part.content for part in parse_multipart(frames)] == [
        get_frame(pixel_data, 2, number_of_frames=10),
        get_frame(pixel_data, 6, number_of_frames=10),
    ]


def test_s3_metadata_bulkdata(s3_client: TestClient, s3_context: ArchiveContext) -> None:
    path = pydicom_file("emri_small.dcm")
    stored = store_file(s3_context, path)

    metadata = s3_client.get(f"{instance_url(stored)}/metadata")
    uri = metadata.json()[0]["7FE00010"]["BulkDataURI"]
    bulkdata = s3_client.get(uri)

    assert bulkdata.status_code == 200
    assert parse_multipart(bulkdata)[0].content == pydicom.dcmread(path).PixelData
