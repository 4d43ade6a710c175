"""Retrieve Study, Series and Instance Metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from tests.support import write_series
from tests.wado.helpers import (
    DICOMWEB,
    instance_url,
    parse_multipart,
    series_url,
    store_file,
    study_url,
)

BASE_URL = "http://testserver/dicom-web"


def _store_series(context: ArchiveContext, paths: list[Path]) -> list[str]:
    return [store_file(context, path).sop_instance_uid for path in paths]


def _sop_instance_uids(metadata: list[dict[str, dict[str, list[str]]]]) -> list[str]:
    return [item["00080018"]["Value"][0] for item in metadata]


def test_study_metadata_lists_every_instance(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    paths = write_series(tmp_path, 3)
    uids = _store_series(context, paths)
    study_instance_uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)

    response = client.get(f"{DICOMWEB}/studies/{study_instance_uid}/metadata")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    metadata = response.json()
    assert _sop_instance_uids(metadata) == uids
    assert metadata[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}


def test_metadata_bulkdata_uri_can_be_fetched(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    (path,) = write_series(tmp_path, 1)
    stored = store_file(context, path)

    response = client.get(f"{instance_url(stored)}/metadata")

    assert response.status_code == 200
    (metadata,) = response.json()
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri == f"{BASE_URL}/studies/{stored.study_instance_uid}/series/" + (
        f"{stored.series_instance_uid}/instances/{stored.sop_instance_uid}/bulkdata/7FE00010"
    )
    bulkdata = client.get(uri)
    assert bulkdata.status_code == 200
    (part,) = parse_multipart(bulkdata)
    assert part.content == pydicom.dcmread(path).PixelData


def test_series_metadata_streams_in_batches(
    client: TestClient,
    context: ArchiveContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("noctis_wado.metadata.METADATA_BATCH_SIZE", 2)
    paths = write_series(tmp_path, 5)
    uids = _store_series(context, paths)
    stored = store_file(context, paths[0])

    response = client.get(f"{series_url(stored)}/metadata")

    assert response.status_code == 200
    assert _sop_instance_uids(response.json()) == uids


def test_metadata_unknown_study_not_found(client: TestClient) -> None:
    response = client.get(f"{DICOMWEB}/studies/1.2.3.4/metadata")

    assert response.status_code == 404
    assert response.json()["detail"] == "study 1.2.3.4 not found"


@pytest.mark.parametrize(
    ("accept", "expected_status"),
    [
        (None, 200),
        ("application/dicom+json", 200),
        ("application/json", 200),
        ("application/*", 200),
        ("*/*", 200),
        ("text/html, */*;q=0.1", 200),
        ("application/dicom+json; q=0", 406),
        ('multipart/related; type="application/dicom+xml"', 406),
        ('multipart/related; type="application/dicom"', 406),
    ],
)
def test_metadata_accept_variants(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    accept: str | None,
    expected_status: int,
) -> None:
    (path,) = write_series(tmp_path, 1)
    stored = store_file(sqlite_context, path)
    headers = {} if accept is None else {"Accept": accept}

    response = sqlite_client.get(f"{study_url(stored)}/metadata", headers=headers)

    assert response.status_code == expected_status, response.text
    if expected_status == 200:
        assert len(json.loads(response.content)) == 1
    else:
        assert "application/dicom+xml is not supported" in response.json()["detail"]
