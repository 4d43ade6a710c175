"""Bearer token verification: what is rejected with 401, and how the key set is fetched."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.roles import Role
from noctis_common.settings import Settings
from tests.auth.conftest import StoredStudy, archive_app
from tests.auth.support import ISSUER, KeyServer, SigningKey, bearer, make_token, serving_keys
from tests.support import free_port

STUDIES = "/dicom-web/studies"


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assert_invalid_token(response_status: int, challenge: str, description_part: str) -> None:
    assert response_status == 401
    assert challenge.startswith('Bearer realm="noctis"')
    assert 'error="invalid_token"' in challenge
    assert description_part in challenge


def test_valid_token_is_accepted(auth_client: TestClient, signing_key: SigningKey) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,))
    assert auth_client.get(STUDIES, headers=bearer(token)).status_code == 200


def test_missing_token_gets_bare_challenge(auth_client: TestClient) -> None:
    response = auth_client.get(STUDIES)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="noctis"'
    assert "bearer token" in response.json()["detail"]


def test_non_bearer_scheme_is_rejected(auth_client: TestClient) -> None:
    response = auth_client.get(STUDIES, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "Bearer")


@pytest.mark.parametrize(
    "header",
    [{"alg": "\u2603"}, {"alg": "ES256", "crit": ["a\r\nX-Injected: 1"]}],
    ids=["snowman-algorithm", "line-break-in-crit"],
)
def test_odd_token_header_gets_ascii_challenge(
    auth_client: TestClient, header: dict[str, object]
) -> None:
    token = f"{_base64url(json.dumps(header).encode())}.e30.AAAA"
    response = auth_client.get(STUDIES, headers=bearer(token))
    challenge = response.headers["www-authenticate"]
    _assert_invalid_token(response.status_code, challenge, "error_description")
    assert all(" " <= character <= "~" for character in challenge)


def test_expired_token_is_rejected(auth_client: TestClient, signing_key: SigningKey) -> None:
    token = make_token(
        signing_key, roles=(Role.RADIOLOGIST,), issued_at=time.time() - 3600, lifetime_s=600
    )
    response = auth_client.get(STUDIES, headers=bearer(token))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "expired")


def test_expiry_within_clock_skew_is_accepted(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    token = make_token(
        signing_key, roles=(Role.RADIOLOGIST,), issued_at=time.time() - 330, lifetime_s=300
    )
    assert auth_client.get(STUDIES, headers=bearer(token)).status_code == 200


def test_tampered_token_is_rejected(auth_client: TestClient, signing_key: SigningKey) -> None:
    token = make_token(signing_key, roles=(Role.REFERRING_PHYSICIAN,))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["administrator"]
    claims["scope"] = "search retrieve store delete admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = auth_client.get(STUDIES, headers=bearer(f"{header}.{forged}.{signature}"))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "signature")


def test_wrong_audience_is_rejected(auth_client: TestClient, signing_key: SigningKey) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), audience="another-service")
    response = auth_client.get(STUDIES, headers=bearer(token))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "audience")


def test_wrong_issuer_is_rejected(auth_client: TestClient, signing_key: SigningKey) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,), issuer="https://evil.example")
    response = auth_client.get(STUDIES, headers=bearer(token))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], ISSUER)


def test_unknown_key_id_is_rejected(auth_client: TestClient) -> None:
    stranger = SigningKey.generate("ES256")
    token = make_token(stranger, roles=(Role.RADIOLOGIST,))
    response = auth_client.get(STUDIES, headers=bearer(token))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], stranger.kid)


def test_foreign_key_under_known_id_rejected(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    stranger = SigningKey.generate("ES256")
    token = make_token(stranger, roles=(Role.RADIOLOGIST,), kid=signing_key.kid)
    response = auth_client.get(STUDIES, headers=bearer(token))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "signature")


def test_unsigned_token_is_rejected(auth_client: TestClient, signing_key: SigningKey) -> None:
    claims = jwt.decode(
        make_token(signing_key, roles=(Role.ADMINISTRATOR,)), options={"verify_signature": False}
    )
    unsigned = jwt.encode(claims, key="", algorithm="none", headers={"kid": signing_key.kid})
    response = auth_client.get(STUDIES, headers=bearer(unsigned))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "'none'")


def test_public_key_as_hmac_secret_is_rejected(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    claims = jwt.decode(
        make_token(signing_key, roles=(Role.ADMINISTRATOR,)), options={"verify_signature": False}
    )
    public_pem = signing_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT refuses to sign with a PEM key as HMAC secret, so the token is built here.
    signing_input = ".".join(
        _base64url(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}, claims)
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{_base64url(signature)}"
    response = auth_client.get(STUDIES, headers=bearer(forged))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "HS256")


def test_garbage_token_is_rejected(auth_client: TestClient) -> None:
    response = auth_client.get(STUDIES, headers=bearer("not-a-token"))
    _assert_invalid_token(response.status_code, response.headers["www-authenticate"], "malformed")


def test_rotated_key_is_fetched_once(tmp_path: Path) -> None:
    old_key = SigningKey.generate("ES256")
    new_key = SigningKey.generate("RS256")
    with serving_keys([old_key]) as server:
        settings = Settings(
            data_dir=tmp_path / "var",
            auth_mode="internal",
            auth_issuer=ISSUER,
            auth_jwks_url=server.jwks_url,
            auth_jwks_min_refresh_interval_s=3600,
        )
        context = ArchiveContext.create(settings)
        try:
            with TestClient(archive_app(context)) as client:
                old_token = make_token(old_key, roles=(Role.RADIOLOGIST,))
                assert client.get(STUDIES, headers=bearer(old_token)).status_code == 200
                assert server.requests == 1

                server.keys = [old_key, new_key]
                new_token = make_token(new_key, roles=(Role.RADIOLOGIST,))
                assert client.get(STUDIES, headers=bearer(new_token)).status_code == 200
                assert server.requests == 2
                assert client.get(STUDIES, headers=bearer(old_token)).status_code == 200
                assert server.requests == 2
        finally:
            context.close()


def test_unknown_key_ids_refresh_at_limited_rate(tmp_path: Path) -> None:
    key = SigningKey.generate("ES256")
    with serving_keys([key]) as server:
        settings = Settings(
            data_dir=tmp_path / "var",
            auth_mode="internal",
            auth_issuer=ISSUER,
            auth_jwks_url=server.jwks_url,
            auth_jwks_min_refresh_interval_s=3600,
        )
        context = ArchiveContext.create(settings)
        try:
            with TestClient(archive_app(context)) as client:
                valid = make_token(key, roles=(Role.RADIOLOGIST,))
                assert client.get(STUDIES, headers=bearer(valid)).status_code == 200
                for _ in range(5):
                    forged = make_token(SigningKey.generate("ES256"), roles=(Role.RADIOLOGIST,))
                    assert client.get(STUDIES, headers=bearer(forged)).status_code == 401
                assert server.requests == 2
        finally:
            context.close()


def test_unreachable_key_set_gives_503(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        auth_mode="internal",
        auth_issuer=ISSUER,
        auth_jwks_url=f"http://127.0.0.1:{free_port()}/jwks",
    )
    context = ArchiveContext.create(settings)
    try:
        with TestClient(archive_app(context)) as client:
            token = make_token(SigningKey.generate("ES256"), roles=(Role.RADIOLOGIST,))
            response = client.get(STUDIES, headers=bearer(token))
    finally:
        context.close()
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "retry later" in response.json()["detail"]


def test_unreachable_key_set_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        auth_mode="internal",
        auth_issuer=ISSUER,
        auth_jwks_url=f"http://127.0.0.1:{free_port()}/jwks",
    )
    context = ArchiveContext.create(settings)
    try:
        with TestClient(archive_app(context)) as client, caplog.at_level(logging.INFO):
            token = make_token(SigningKey.generate("ES256"), roles=(Role.RADIOLOGIST,))
            statuses = [client.get(STUDIES, headers=bearer(token)).status_code for _ in range(5)]
    finally:
        context.close()

    errors = [
        record
        for record in caplog.records
        if record.name == "noctis_common.auth" and record.levelno >= logging.WARNING
    ]
    assert statuses == [503] * 5
    assert len(errors) == 1


def test_token_in_query_opens_wado_uri_link(
    auth_client: TestClient, signing_key: SigningKey, stored_study: StoredStudy
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,))
    response = auth_client.get(
        "/wado",
        params={
            "requestType": "WADO",
            "studyUID": stored_study.study_instance_uid,
            "seriesUID": stored_study.series_instance_uid,
            "objectUID": stored_study.sop_instance_uid,
            "contentType": "application/dicom",
            "access_token": token,
        },
    )
    assert response.status_code == 200


def test_token_in_query_does_not_open_search(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,))
    response = auth_client.get(STUDIES, params={"access_token": token})
    assert response.status_code == 401


def test_oidc_roles_are_mapped_to_scopes(tmp_path: Path, key_server: KeyServer) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        auth_mode="oidc",
        auth_issuer="https://keycloak.example/realms/hospital",
        auth_jwks_url=key_server.jwks_url,
        auth_role_claim="realm_access.roles",
        auth_role_mapping="pacs-reader=radiologist",
    )
    key = key_server.keys[0]
    context = ArchiveContext.create(settings)
    try:
        with TestClient(archive_app(context)) as client:
            token = make_token(
                key,
                scope="openid profile",
                issuer="https://keycloak.example/realms/hospital",
                realm_access={"roles": ["pacs-reader", "offline_access"]},
            )
            assert client.get(STUDIES, headers=bearer(token)).status_code == 200
            unmapped = make_token(
                key,
                scope="openid profile",
                issuer="https://keycloak.example/realms/hospital",
                realm_access={"roles": ["offline_access"]},
            )
            response = client.get(STUDIES, headers=bearer(unmapped))
            assert response.status_code == 403
            assert response.json()["missing_scope"] == "search"
    finally:
        context.close()


def test_two_authorization_headers_are_rejected(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    valid = f"Bearer {make_token(signing_key, roles=(Role.RADIOLOGIST,))}"
    for headers in (
        [("Authorization", valid), ("Authorization", "Bearer forged")],
        [("Authorization", "Bearer forged"), ("Authorization", valid)],
        [("Authorization", valid), ("Authorization", valid)],
    ):
        response = auth_client.get(STUDIES, headers=headers)

        assert response.status_code == 400
        assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]
        assert "2 Authorization headers" in response.json()["detail"]


def test_header_and_query_token_are_rejected(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    token = make_token(signing_key, roles=(Role.RADIOLOGIST,))
    response = auth_client.get(
        "/wado",
        params={"requestType": "WADO", "studyUID": "1.2", "seriesUID": "1.3", "objectUID": "1.4"}
        | {"access_token": token},
        headers=bearer(token),
    )

    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


KEYCLOAK_ISSUER = "https://keycloak.example/realms/hospital"


def _oidc_client(tmp_path: Path, key_server: KeyServer) -> tuple[ArchiveContext, FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "var",
        auth_mode="oidc",
        auth_issuer=KEYCLOAK_ISSUER,
        auth_jwks_url=key_server.jwks_url,
        auth_role_claim="realm_access.roles",
        auth_role_mapping="pacs-reader=radiologist,pacs-sender=modality_gateway",
    )
    context = ArchiveContext.create(settings)
    return context, archive_app(context)


def test_oidc_scope_claim_grants_nothing(tmp_path: Path, key_server: KeyServer) -> None:
    context, app = _oidc_client(tmp_path, key_server)
    try:
        with TestClient(app) as client:
            token = make_token(
                key_server.keys[0],
                scope="openid search retrieve store",
                issuer=KEYCLOAK_ISSUER,
                realm_access={"roles": ["offline_access"]},
            )
            response = client.get(STUDIES, headers=bearer(token))
    finally:
        context.close()

    assert response.status_code == 403
    assert response.json()["missing_scope"] == "search"


def test_oidc_scope_claim_narrows_roles(tmp_path: Path, key_server: KeyServer) -> None:
    context, app = _oidc_client(tmp_path, key_server)
    try:
        with TestClient(app) as client:
            sender = make_token(
                key_server.keys[0],
                scope="openid search retrieve store",
                issuer=KEYCLOAK_ISSUER,
                realm_access={"roles": ["pacs-sender"]},
            )
            reader_store_only = make_token(
                key_server.keys[0],
                scope="openid store",
                issuer=KEYCLOAK_ISSUER,
                realm_access={"roles": ["pacs-reader"]},
            )
            sender_search = client.get(STUDIES, headers=bearer(sender))
            reader_search = client.get(STUDIES, headers=bearer(reader_store_only))
    finally:
        context.close()

    assert sender_search.status_code == 403
    assert reader_search.status_code == 403


def test_internal_scope_beyond_roles_dropped(
    auth_client: TestClient, signing_key: SigningKey
) -> None:
    token = make_token(signing_key, roles=(Role.MODALITY_GATEWAY,), scope="store search retrieve")
    no_roles = make_token(signing_key, roles=(), scope="search retrieve")

    assert auth_client.get(STUDIES, headers=bearer(token)).status_code == 403
    assert auth_client.get(STUDIES, headers=bearer(no_roles)).status_code == 403
