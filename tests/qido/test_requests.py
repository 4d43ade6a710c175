"""QIDO-RS request handling: paging, media types and rejected requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_qido.routes import router
from tests.qido.helpers import search, store, value
from tests.support import make_dataset

CUT_WARNING = (
    '299 http://testserver/dicom-web: "The number of results exceeded the maximum '
    'supported by the server. Additional results can be requested."'
)


@pytest.fixture
def small_limit_client(settings: Settings) -> Iterator[tuple[TestClient, ArchiveContext]]:
    """A QIDO-RS client whose server returns at most two matches per response."""
    context = ArchiveContext.create(settings.model_copy(update={"qido_max_limit": 2}))
    app = create_app("Noctis QIDO-RS test", [router], context.settings, context)
    try:
        with TestClient(app) as test_client:
            yield test_client, context
    finally:
        context.close()


def _store_studies(context: ArchiveContext, count: int) -> list[str]:
    """Store ``count`` studies on successive dates; return their accession numbers."""
    numbers = []
    for day in range(1, count + 1):
        number = f"ACC-{day}"
        store(context, make_dataset(study_date=f"202401{day:02d}", accession_number=number))
        numbers.append(number)
    return numbers


def _accessions(results: list[dict[str, Any]]) -> list[str]:
    return [value(result, "AccessionNumber") for result in results]


def test_limit_and_offset_page_through_matches(client: TestClient, context: ArchiveContext) -> None:
    numbers = _store_studies(context, 5)

    pages = [
        _accessions(search(client, "/studies", {"limit": "2", "offset": str(offset)}))
        for offset in (0, 2, 4)
    ]

    assert pages == [["ACC-5", "ACC-4"], ["ACC-3", "ACC-2"], ["ACC-1"]]
    assert sorted(number for page in pages for number in page) == sorted(numbers)
    assert search(client, "/studies", {"offset": "5"}) == []


def test_server_maximum_cut_sends_warning(
    small_limit_client: tuple[TestClient, ArchiveContext],
) -> None:
    client, context = small_limit_client
    _store_studies(context, 3)

    without_limit = client.get("/dicom-web/studies")
    over_maximum = client.get("/dicom-web/studies", params={"limit": "10"})
    own_limit = client.get("/dicom-web/studies", params={"limit": "2"})
    last_page = client.get("/dicom-web/studies", params={"offset": "2"})

    assert len(without_limit.json()) == 2
    assert without_limit.headers["warning"] == CUT_WARNING
    assert len(over_maximum.json()) == 2
    assert over_maximum.headers["warning"] == CUT_WARNING
    assert len(own_limit.json()) == 2
    assert "warning" not in own_limit.headers
    assert _accessions(last_page.json()) == ["ACC-1"]
    assert "warning" not in last_page.headers


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "-1"}, "invalid limit value '-1'"),
        ({"limit": "ten"}, "invalid limit value 'ten'"),
        ({"offset": "1.5"}, "invalid offset value '1.5'"),
        ({"offset": "99999999999"}, "invalid offset value '99999999999'"),
        ([("limit", "1"), ("limit", "2")], "limit is given more than once"),
        ({"fuzzymatching": "yes"}, "invalid fuzzymatching value 'yes'"),
    ],
)
def test_invalid_paging_parameters_rejected(
    sqlite_client: TestClient, params: dict[str, str] | list[tuple[str, str]], message: str
) -> None:
    response = sqlite_client.get("/dicom-web/studies", params=params)

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_unknown_keyword_rejected(sqlite_client: TestClient) -> None:
    unknown = sqlite_client.get("/dicom-web/studies", params={"PatientFavouriteColour": "blue"})
    wrong_case = sqlite_client.get("/dicom-web/studies", params={"patientname": "Doe"})
    unknown_include = sqlite_client.get(
        "/dicom-web/studies", params={"includefield": "NoSuchThing"}
    )

    assert unknown.status_code == 400
    assert "unknown attribute 'PatientFavouriteColour'" in unknown.json()["detail"]
    assert wrong_case.status_code == 400
    assert "did you mean PatientName?" in wrong_case.json()["detail"]
    assert unknown_include.status_code == 400
    assert "'NoSuchThing' in includefield" in unknown_include.json()["detail"]


def test_unindexed_key_lists_matchable_keys(sqlite_client: TestClient) -> None:
    response = sqlite_client.get("/dicom-web/studies", params={"ProtocolName": "Head*"})

    detail = response.json()["detail"]
    assert response.status_code == 400
    assert detail.startswith("cannot match ProtocolName='Head*'")
    assert "PatientName" in detail
    assert "ModalitiesInStudy" in detail
    assert "SeriesInstanceUID" not in detail


def test_lower_level_key_rejected_with_hint(sqlite_client: TestClient) -> None:
    response = sqlite_client.get("/dicom-web/studies", params={"Modality": "CT"})

    assert response.status_code == 400
    assert "Modality is a series-level attribute" in response.json()["detail"]
    assert "match ModalitiesInStudy" in response.json()["detail"]


def test_returned_only_key_rejects_value(sqlite_client: TestClient) -> None:
    response = sqlite_client.get("/dicom-web/studies", params={"NumberOfStudyRelatedSeries": "2"})

    assert response.status_code == 400
    assert "NumberOfStudyRelatedSeries cannot be matched against '2'" in (response.json()["detail"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"StudyDate": "20240201-20240101"}, "invalid StudyDate range '20240201-20240101'"),
        ({"StudyDate": "2024-01-01"}, "invalid StudyDate range '2024-01-01'"),
        ({"StudyDate": "20241301"}, "invalid StudyDate value '20241301'"),
        ({"StudyTime": "2500"}, "invalid StudyTime value '2500'"),
        ({"StudyInstanceUID": "1.2.abc"}, "invalid StudyInstanceUID '1.2.abc'"),
        ({"00200011": "two"}, "invalid SeriesNumber value 'two'"),
    ],
)
def test_invalid_values_rejected_with_value(
    sqlite_client: TestClient, params: dict[str, str], message: str
) -> None:
    path = "/series" if "00200011" in params else "/studies"

    response = sqlite_client.get(f"/dicom-web{path}", params=params)

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_sequence_matching_rejected(sqlite_client: TestClient) -> None:
    response = sqlite_client.get(
        "/dicom-web/studies", params={"ProcedureCodeSequence.CodeValue": "P1"}
    )

    assert response.status_code == 400
    assert "Sequence Matching" in response.json()["detail"]


def test_repeated_match_key_rejected(sqlite_client: TestClient) -> None:
    response = sqlite_client.get(
        "/dicom-web/studies", params=[("PatientID", "A"), ("00100020", "B")]
    )

    assert response.status_code == 400
    assert "PatientID is given more than once" in response.json()["detail"]


def test_invalid_path_uid_rejected(sqlite_client: TestClient) -> None:
    response = sqlite_client.get("/dicom-web/studies/1.2.x/series")

    assert response.status_code == 400
    assert "invalid StudyInstanceUID '1.2.x'" in response.json()["detail"]


def test_unacceptable_media_type_gets_406(sqlite_client: TestClient) -> None:
    response = sqlite_client.get(
        "/dicom-web/studies", headers={"Accept": 'multipart/related; type="application/dicom+xml"'}
    )

    assert response.status_code == 406
    assert "application/dicom+json" in response.json()["detail"]


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/dicom+json", "application/dicom+json"),
        ("application/json", "application/json"),
        ("*/*", "application/dicom+json"),
        ("text/html, application/json;q=0.5", "application/json"),
        ("application/dicom+json;q=0, application/json", "application/json"),
    ],
)
def test_json_media_types_accepted(sqlite_client: TestClient, accept: str, media_type: str) -> None:
    response = sqlite_client.get("/dicom-web/studies", headers={"Accept": accept})

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type


def test_empty_value_matching_warns_unsupported(sqlite_client: TestClient) -> None:
    response = sqlite_client.get("/dicom-web/studies", params={"emptyvaluematching": "true"})

    assert response.status_code == 200
    assert "The emptyvaluematching parameter is not supported." in response.headers["warning"]
