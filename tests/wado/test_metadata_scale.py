"""Study metadata of a 2,000-instance study: complete, cached, ETag and gzip.

The study is stored once per module through the archive in-process on SQLite. Timing
is not asserted here. docs/benchmarks.md has the measurement and its command.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from noctis_common.deletion import delete_instance
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.lookup import find_study_instances
from noctis_wado.metadata import stream_metadata
from noctis_wado.routes import router as wado_router
from tests.support import make_dataset

NUMBER_OF_SERIES = 4
INSTANCES_PER_SERIES = 500
BASE_URL = "http://testserver/dicom-web"


class ScaleStudy:
    """A stored 2,000-instance study and a client over its archive."""

    def __init__(self, context: ArchiveContext, client: TestClient, folder: Path) -> None:
        self.context = context
        self.client = client
        self.folder = folder
        self.study_instance_uid = generate_uid()
        self.series_instance_uids = [generate_uid() for _ in range(NUMBER_OF_SERIES)]
        self.sop_instance_uids: list[str] = []

    def store(self, series_index: int, instance_number: int, **attributes: object) -> str:
        dataset = make_dataset(
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uids[series_index],
            instance_number=instance_number,
            **attributes,  # type: ignore[arg-type]
        )
        path = self.folder / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        self.context.archive.store_part10(path)
        self.sop_instance_uids.append(dataset.SOPInstanceUID)
        return str(dataset.SOPInstanceUID)

    @property
    def metadata_url(self) -> str:
        return f"/dicom-web/studies/{self.study_instance_uid}/metadata"

    def uncached_metadata(self) -> list[dict[str, object]]:
        """Return the study metadata built instance by instance, without the cache."""
        instances = find_study_instances(self.context.database, self.study_instance_uid)
        body = b"".join(stream_metadata(self.context.database, instances, BASE_URL))
        result: list[dict[str, object]] = json.loads(body)
        return result


@pytest.fixture(scope="module")
def scale_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleStudy]:
    folder = tmp_path_factory.mktemp("scale")
    context = ArchiveContext.create(Settings(data_dir=folder / "var"))
    app = create_app("Noctis scale test", [wado_router], context.settings, context)
    with TestClient(app) as client:
        study = ScaleStudy(context, client, folder)
        for number in range(1, INSTANCES_PER_SERIES + 1):
            for series_index in range(NUMBER_OF_SERIES):
                study.store(series_index, number)
        yield study
    context.close()


def _uids(metadata: list[dict[str, object]]) -> list[str]:
    return [item["00080018"]["Value"][0] for item in metadata]  # type: ignore[index]


def test_study_metadata_is_complete(scale_study: ScaleStudy) -> None:
    response = scale_study.client.get(
        scale_study.metadata_url, headers={"Accept-Encoding": "identity"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    assert "content-encoding" not in response.headers
    metadata = response.json()
    assert len(metadata) == NUMBER_OF_SERIES * INSTANCES_PER_SERIES
    assert sorted(_uids(metadata)) == sorted(scale_study.sop_instance_uids)
    assert metadata == scale_study.uncached_metadata()


def test_cached_metadata_resolves_bulkdata_uris(scale_study: ScaleStudy) -> None:
    response = scale_study.client.get(scale_study.metadata_url)

    metadata = response.json()
    study_url = f"{BASE_URL}/studies/{scale_study.study_instance_uid}"
    for item in metadata:
        sop_instance_uid = item["00080018"]["Value"][0]
        series_instance_uid = item["0020000E"]["Value"][0]
        assert item["7FE00010"]["BulkDataURI"] == (
            f"{study_url}/series/{series_instance_uid}/instances/{sop_instance_uid}"
            "/bulkdata/7FE00010"
        )
    bulk = scale_study.client.get(
        metadata[0]["7FE00010"]["BulkDataURI"].removeprefix("http://testserver")
    )
    assert bulk.status_code == 200


def test_study_metadata_gzip_when_accepted(scale_study: ScaleStudy) -> None:
    plain = scale_study.client.get(
        scale_study.metadata_url, headers={"Accept-Encoding": "identity"}
    )
    with scale_study.client.stream(
        "GET", scale_study.metadata_url, headers={"Accept-Encoding": "gzip"}
    ) as response:
        compressed = b"".join(response.iter_raw())
        encoding = response.headers.get("content-encoding")

    assert encoding == "gzip"
    assert len(compressed) < len(plain.content)
    assert gzip.decompress(compressed) == plain.content


def test_study_metadata_etag_gives_304(scale_study: ScaleStudy) -> None:
    first = scale_study.client.get(scale_study.metadata_url)
    etag = first.headers["etag"]

    again = scale_study.client.get(scale_study.metadata_url, headers={"If-None-Match": etag})

    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


def test_series_metadata_etag_gives_304(scale_study: ScaleStudy) -> None:
    url = (
        f"/dicom-web/studies/{scale_study.study_instance_uid}"
        f"/series/{scale_study.series_instance_uids[0]}/metadata"
    )
    first = scale_study.client.get(url)

    again = scale_study.client.get(url, headers={"If-None-Match": first.headers["etag"]})

    assert len(first.json()) == INSTANCES_PER_SERIES
    assert again.status_code == 304


def test_store_and_delete_change_etag_and_content(scale_study: ScaleStudy) -> None:
    before = scale_study.client.get(scale_study.metadata_url)

    added = scale_study.store(1, INSTANCES_PER_SERIES + 1)
    after_store = scale_study.client.get(
        scale_study.metadata_url, headers={"If-None-Match": before.headers["etag"]}
    )

    assert after_store.status_code == 200
    assert after_store.headers["etag"] != before.headers["etag"]
    assert added in _uids(after_store.json())
    assert after_store.json() == scale_study.uncached_metadata()

    delete_instance(
        scale_study.context.database,
        scale_study.context.store,
        scale_study.study_instance_uid,
        scale_study.series_instance_uids[1],
        added,
    )
    scale_study.sop_instance_uids.remove(added)
    after_delete = scale_study.client.get(
        scale_study.metadata_url, headers={"If-None-Match": after_store.headers["etag"]}
    )

    assert after_delete.status_code == 200
    assert added not in _uids(after_delete.json())
    assert after_delete.json() == scale_study.uncached_metadata()
