"""The referring physician restriction in QIDO-RS, WADO-RS and WADO-URI."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noctis_common.auth_restrictions import person_name_forms
from noctis_common.context import ArchiveContext
from noctis_common.roles import Role
from tests.auth.conftest import StoredStudy, store_study
from tests.auth.support import SigningKey, bearer, make_token

STUDY_INSTANCE_UID_TAG = "0020000D"


@pytest.fixture
def two_studies(auth_context: ArchiveContext, tmp_path: Path) -> tuple[StoredStudy, StoredStudy]:
    own = store_study(
        auth_context, tmp_path / "own", patient_id="PID-A", referring_physician_name="SMITH^JOHN"
    )
    other = store_study(
        auth_context, tmp_path / "other", patient_id="PID-B", referring_physician_name="Who^Else"
    )
    return own, other


def _physician_token(signing_key: SigningKey, name: str | None = "Smith^John") -> str:
    if name is None:
        return make_token(signing_key, roles=(Role.REFERRING_PHYSICIAN,))
    return make_token(signing_key, roles=(Role.REFERRING_PHYSICIAN,), referring_physician_name=name)


def _found_studies(client: TestClient, token: str, path: str) -> set[str]:
    response = client.get(path, headers=bearer(token))
    assert response.status_code == 200
    return {match[STUDY_INSTANCE_UID_TAG]["Value"][0] for match in response.json()}


def test_search_shows_only_own_studies(
    auth_client: TestClient,
    signing_key: SigningKey,
    two_studies: tuple[StoredStudy, StoredStudy],
) -> None:
    own, _ = two_studies
    token = _physician_token(signing_key)
    for path in ("/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances"):
        assert _found_studies(auth_client, token, path) == {own.study_instance_uid}, path


def test_radiologist_sees_every_study(
    auth_client: TestClient,
    signing_key: SigningKey,
    two_studies: tuple[StoredStudy, StoredStudy],
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,))
    found = _found_studies(auth_client, token, "/dicom-web/studies")
    assert found == {study.study_instance_uid for study in two_studies}


def test_physician_with_another_role_is_unrestricted(
    auth_client: TestClient,
    signing_key: SigningKey,
    two_studies: tuple[StoredStudy, StoredStudy],
) -> None:
    token = make_token(
        signing_key,
        roles=(Role.REFERRING_PHYSICIAN, Role.RADIOLOGIST),
        referring_physician_name="Smith^John",
    )
    assert len(_found_studies(auth_client, token, "/dicom-web/studies")) == 2


def test_token_without_name_sees_no_study(
    auth_client: TestClient,
    signing_key: SigningKey,
    two_studies: tuple[StoredStudy, StoredStudy],
) -> None:
    token = _physician_token(signing_key, name=None)
    assert _found_studies(auth_client, token, "/dicom-web/studies") == set()


def test_other_study_is_not_found(
    auth_client: TestClient,
    signing_key: SigningKey,
    two_studies: tuple[StoredStudy, StoredStudy],
) -> None:
    own, other = two_studies
    token = _physician_token(signing_key)
    for study, expected in ((own, 200), (other, 404)):
        base = f"/dicom-web/studies/{study.study_instance_uid}"
        instance = f"{base}/series/{study.series_instance_uid}/instances/{study.sop_instance_uid}"
        for path in (f"{base}/metadata", base, f"{instance}/rendered", f"{base}/thumbnail"):
            response = auth_client.get(path, headers=bearer(token))
            assert response.status_code == expected, path
        response = auth_client.get(
            "/wado",
            params={
                "requestType": "WADO",
                "studyUID": study.study_instance_uid,
                "seriesUID": study.series_instance_uid,
                "objectUID": study.sop_instance_uid,
            },
            headers=bearer(token),
        )
        assert response.status_code == expected


def test_hidden_study_reads_like_missing_one(
    auth_client: TestClient,
    signing_key: SigningKey,
    two_studies: tuple[StoredStudy, StoredStudy],
) -> None:
    _, other = two_studies
    token = _physician_token(signing_key)
    response = auth_client.get(
        f"/dicom-web/studies/{other.study_instance_uid}/metadata", headers=bearer(token)
    )
    assert response.json() == {"detail": f"study {other.study_instance_uid} not found"}


@pytest.mark.parametrize(
    ("claim", "stored", "matches"),
    [
        ("Smith^John", "smith^john", True),
        ("Smith^John", "smith^john^^^", True),
        ("Smith^John", "smith^john=スミス^ジョン", True),
        ("Smith^John^^", "smith^john", True),
        ("Smith^John", "smith^john^q", False),
        ("Smith^John", "smith", False),
        ("Smith^J%", "smith^john", False),
    ],
)
def test_person_name_rule(claim: str, stored: str, matches: bool) -> None:
    forms = person_name_forms(claim)
    found = stored in forms or any(stored.startswith(form + "=") for form in forms)
    assert found is matches
