"""Attacks on access control and the audit trail, and what stops them.

Each test sends what an attacker would send: padded or percent-encoded UIDs, a series
of another study under a study the caller may see, bytes the index database rejects,
a huge query string, a forged forwarded address, a percent-encoded token parameter, or
a discovery document of another issuer. Tests marked xfail(strict=True) are open
findings in code that another change owns. Their reason names what fails and where to
fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from noctis_common import auth_keys
from noctis_common.auth import AccessTokenLogFilter
from noctis_common.auth_keys import KeySetUnavailableError, discovery_jwks_fetcher
from noctis_common.context import ArchiveContext
from noctis_common.roles import Role
from noctis_common.settings import Settings
from tests.auth.conftest import StoredStudy, archive_app, store_study
from tests.auth.support import AUDIENCE, ISSUER, KeyServer, SigningKey, bearer, make_token

# Trailing padding that validate_uid removes from a UID in a URL: a space and a NUL.
PADDINGS = ["%20", "%00"]


@pytest.fixture
def two_studies(auth_context: ArchiveContext, tmp_path: Path) -> tuple[StoredStudy, StoredStudy]:
    own = store_study(
        auth_context, tmp_path / "own", patient_id="PID-OWN", referring_physician_name="Smith^John"
    )
    other = store_study(
        auth_context,
        tmp_path / "other",
        patient_id="PID-OTHER",
        referring_physician_name="Who^Else",
    )
    return own, other


@pytest.fixture
def physician_token(signing_key: SigningKey) -> str:
    return make_token(
        signing_key, roles=(Role.REFERRING_PHYSICIAN,), referring_physician_name="Smith^John"
    )


@pytest.fixture
def admin_token(signing_key: SigningKey) -> str:
    return make_token(signing_key, roles=(Role.ADMINISTRATOR,), subject="admin-1")


def _records(client: TestClient, admin_token: str, **filters: str) -> list[dict[str, Any]]:
    response = client.get("/audit/records", params=filters, headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


def _wado_paths(study: StoredStudy, padding: str) -> list[str]:
    base = f"/dicom-web/studies/{study.study_instance_uid}{padding}"
    instance = f"{base}/series/{study.series_instance_uid}/instances/{study.sop_instance_uid}"
    return [
        base,
        f"{base}/metadata",
        f"{base}/thumbnail",
        f"{base}/series/{study.series_instance_uid}/metadata",
        f"{instance}/metadata",
        f"{instance}/rendered",
        f"{instance}/frames/1",
        "/wado?requestType=WADO&contentType=application/dicom"
        f"&studyUID={study.study_instance_uid}{padding}&seriesUID={study.series_instance_uid}"
        f"&objectUID={study.sop_instance_uid}",
    ]


@pytest.mark.parametrize("padding", PADDINGS)
def test_padded_uid_keeps_study_hidden(
    auth_client: TestClient,
    two_studies: tuple[StoredStudy, StoredStudy],
    physician_token: str,
    padding: str,
) -> None:
    _, other = two_studies
    for path in _wado_paths(other, padding):
        response = auth_client.get(path, headers=bearer(physician_token))
        assert response.status_code == 404, path


@pytest.mark.parametrize("padding", PADDINGS)
def test_padded_uid_opens_own_study(
    auth_client: TestClient,
    two_studies: tuple[StoredStudy, StoredStudy],
    physician_token: str,
    padding: str,
) -> None:
    own, _ = two_studies
    for path in _wado_paths(own, padding):
        response = auth_client.get(path, headers=bearer(physician_token))
        assert response.status_code == 200, path


def test_other_series_under_own_study_stays_hidden(
    auth_client: TestClient, two_studies: tuple[StoredStudy, StoredStudy], physician_token: str
) -> None:
    own, other = two_studies
    response = auth_client.get(
        f"/dicom-web/studies/{own.study_instance_uid}/series/{other.series_instance_uid}/metadata",
        headers=bearer(physician_token),
    )
    assert response.status_code == 404
    assert other.study_instance_uid not in response.text


def test_other_instance_under_own_series_stays_hidden(
    auth_client: TestClient, two_studies: tuple[StoredStudy, StoredStudy], physician_token: str
) -> None:
    own, other = two_studies
    response = auth_client.get(
        f"/dicom-web/studies/{own.study_instance_uid}/series/{own.series_instance_uid}"
        f"/instances/{other.sop_instance_uid}/metadata",
        headers=bearer(physician_token),
    )
    assert response.status_code == 404
    assert other.study_instance_uid not in response.text


def test_repeated_wado_uri_study_stays_hidden(
    auth_client: TestClient, two_studies: tuple[StoredStudy, StoredStudy], physician_token: str
) -> None:
    own, other = two_studies
    response = auth_client.get(
        "/wado?requestType=WADO&contentType=application/dicom"
        f"&studyUID={own.study_instance_uid}&studyUID={other.study_instance_uid}"
        f"&seriesUID={other.series_instance_uid}&objectUID={other.sop_instance_uid}",
        headers=bearer(physician_token),
    )
    assert response.status_code == 404


def test_malformed_uid_reads_as_missing(
    auth_client: TestClient, two_studies: tuple[StoredStudy, StoredStudy], physician_token: str
) -> None:
    response = auth_client.get("/dicom-web/studies/1.2.x/metadata", headers=bearer(physician_token))
    assert response.status_code == 404


@pytest.mark.parametrize("padding", PADDINGS)
def test_padded_retrieval_names_study_in_audit(
    auth_client: TestClient,
    signing_key: SigningKey,
    stored_study: StoredStudy,
    admin_token: str,
    padding: str,
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), subject="rad-1")
    response = auth_client.get(
        f"/dicom-web/studies/{stored_study.study_instance_uid}{padding}/metadata",
        headers=bearer(token),
    )
    assert response.status_code == 200

    (record,) = _records(auth_client, admin_token, user="rad-1")
    assert stored_study.study_instance_uid in record["study_instance_uids"]
    assert record["patients"][0]["patient_id"] == stored_study.patient_id


def test_encoded_wado_uri_study_names_it_in_audit(
    auth_client: TestClient, signing_key: SigningKey, stored_study: StoredStudy, admin_token: str
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), subject="rad-2")
    encoded_study = stored_study.study_instance_uid.replace(".", "%2E", 1)
    response = auth_client.get(
        "/wado?requestType=WADO&contentType=application/dicom"
        f"&studyUID={encoded_study}&seriesUID={stored_study.series_instance_uid}"
        f"&objectUID={stored_study.sop_instance_uid}",
        headers=bearer(token),
    )
    assert response.status_code == 200

    (record,) = _records(auth_client, admin_token, user="rad-2")
    assert stored_study.study_instance_uid in record["study_instance_uids"]


def test_hidden_study_search_names_no_patient(
    auth_client: TestClient,
    two_studies: tuple[StoredStudy, StoredStudy],
    physician_token: str,
    admin_token: str,
) -> None:
    _, other = two_studies
    response = auth_client.get(
        f"/dicom-web/studies/{other.study_instance_uid}/series", headers=bearer(physician_token)
    )
    assert response.json() == []

    (record,) = _records(auth_client, admin_token, user="user-1", event_type="query")
    assert record["patients"] == []


@pytest.fixture
def postgres_auth_client(
    tmp_path: Path, key_server: KeyServer, postgres_url: str
) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=postgres_url,
        auth_mode="internal",
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        auth_jwks_url=key_server.jwks_url,
    )
    context = ArchiveContext.create(settings)
    try:
        with TestClient(archive_app(context)) as client:
            yield client
    finally:
        context.close()


@pytest.mark.postgres
def test_nul_in_path_keeps_audit_flowing(
    postgres_auth_client: TestClient, signing_key: SigningKey, admin_token: str
) -> None:
    refused = postgres_auth_client.get("/dicom-web/studies/1.2%00/metadata")
    assert refused.status_code == 401
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), subject="rad-3")
    assert postgres_auth_client.get("/dicom-web/studies", headers=bearer(token)).status_code == 200

    records = _records(postgres_auth_client, admin_token, user="rad-3")
    assert len(records) == 1


def test_huge_query_string_is_cut_in_audit(auth_client: TestClient, admin_token: str) -> None:
    response = auth_client.get("/dicom-web/studies", params={"x": "a" * 60_000})
    assert response.status_code == 401

    (record,) = _records(auth_client, admin_token, user="unauthenticated")
    assert len(record["query"]) < 10_000


def _forwarded_client(tmp_path: Path, key_server: KeyServer, trusted: bool) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "var",
        auth_mode="internal",
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        auth_jwks_url=key_server.jwks_url,
        trust_forwarded_headers=trusted,
        # TestClient's peer, "testclient", stands for the reverse proxy.
        trusted_proxies="*",
    )
    context = ArchiveContext.create(settings)
    try:
        with TestClient(archive_app(context)) as client:
            yield client
    finally:
        context.close()


def _recorded_address(client: TestClient, signing_key: SigningKey, admin_token: str) -> str:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), subject="rad-4")
    headers = {**bearer(token), "X-Forwarded-For": "10.1.2.3"}
    assert client.get("/dicom-web/studies", headers=headers).status_code == 200
    (record,) = _records(client, admin_token, user="rad-4")
    address: str = record["network_access_point"]
    return address


def test_untrusted_forwarded_address_is_not_recorded(
    tmp_path: Path, key_server: KeyServer, signing_key: SigningKey, admin_token: str
) -> None:
    for client in _forwarded_client(tmp_path, key_server, trusted=False):
        assert _recorded_address(client, signing_key, admin_token) == "testclient"


def test_trusted_forwarded_address_is_recorded(
    tmp_path: Path, key_server: KeyServer, signing_key: SigningKey, admin_token: str
) -> None:
    for client in _forwarded_client(tmp_path, key_server, trusted=True):
        assert _recorded_address(client, signing_key, admin_token) == "10.1.2.3"


PROVIDER = "https://idp.example/realms/hospital"
PROVIDER_DISCOVERY = PROVIDER + "/.well-known/openid-configuration"


def _provider_documents(
    monkeypatch: pytest.MonkeyPatch, discovery: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Serve these documents to the key set fetches, without any network."""
    documents = {PROVIDER_DISCOVERY: discovery, PROVIDER + "/certs": {"keys": []}}
    monkeypatch.setattr(auth_keys, "_fetch_json", documents.__getitem__)
    return documents


def test_discovery_of_own_issuer_gives_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    _provider_documents(monkeypatch, {"issuer": PROVIDER, "jwks_uri": PROVIDER + "/certs"})
    assert discovery_jwks_fetcher(PROVIDER + "/")() == {"keys": []}


def test_discovery_of_other_issuer_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    other = "https://idp.example/realms/other"
    _provider_documents(monkeypatch, {"issuer": other, "jwks_uri": PROVIDER + "/certs"})
    with pytest.raises(KeySetUnavailableError, match="names the issuer"):
        discovery_jwks_fetcher(PROVIDER)()


def test_plain_http_key_set_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    http_certs = "http://idp.example/realms/hospital/certs"
    _provider_documents(monkeypatch, {"issuer": PROVIDER, "jwks_uri": http_certs})
    with pytest.raises(KeySetUnavailableError, match="http jwks_uri"):
        discovery_jwks_fetcher(PROVIDER)()


# Spellings of the access_token parameter that Starlette decodes to access_token.
ENCODED_TOKEN_PARAMETERS = ["access%5Ftoken", "%61ccess_token", "ACCESS%5ftoken"]


@pytest.mark.parametrize("name", ENCODED_TOKEN_PARAMETERS)
def test_encoded_token_parameter_is_redacted(name: str) -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s", (f"GET /wado?{name}=SECRET",), None
    )
    AccessTokenLogFilter().filter(record)
    assert "SECRET" not in record.getMessage()


def test_encoded_token_parameter_stays_out_of_audit(
    auth_client: TestClient, signing_key: SigningKey, stored_study: StoredStudy, admin_token: str
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), subject="rad-5")
    response = auth_client.get(
        "/wado?requestType=WADO&contentType=application/dicom"
        f"&studyUID={stored_study.study_instance_uid}"
        f"&seriesUID={stored_study.series_instance_uid}"
        f"&objectUID={stored_study.sop_instance_uid}&access%5Ftoken={token}"
    )
    assert response.status_code == 200

    (record,) = _records(auth_client, admin_token, user="rad-5")
    assert token not in record["query"]
