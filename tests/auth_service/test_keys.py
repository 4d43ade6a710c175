"""Signing keys: the JWKS, rotation with overlap, retirement, encryption at rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from noctis_auth.keys import SigningKeyError, SigningKeyStore, jwk_thumbprint
from noctis_common.db import Database
from noctis_common.db.models import AuthSigningKey
from tests.auth_service.conftest import auth_settings, running_auth_app
from tests.auth_service.helpers import AuthApp, bearer, create_user, password_login


def jwks(auth_app: AuthApp) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = auth_app.client.get("/auth/jwks").json()["keys"]
    return keys


def admin_token(auth_app: AuthApp) -> str:
    token: str = password_login(auth_app.client, "admin").json()["access_token"]
    return token


def test_jwks_has_public_key_only(auth_app: AuthApp) -> None:
    admin_token(auth_app)
    [key] = jwks(auth_app)
    assert key["kty"] == "EC"
    assert key["crv"] == "P-256"
    assert key["alg"] == "ES256"
    assert key["use"] == "sig"
    assert key["kid"] == jwk_thumbprint(key)
    assert "d" not in key


def test_jwks_may_be_cached_briefly(auth_app: AuthApp) -> None:
    response = auth_app.client.get("/auth/jwks")
    assert response.headers["cache-control"] == "public, max-age=300"


def test_rotation_keeps_old_key_published(auth_app: AuthApp) -> None:
    old_token = admin_token(auth_app)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    response = auth_app.client.post("/auth/admin/keys/rotate", headers=bearer(old_token))
    new_kid = response.json()["kid"]
    assert {key["kid"] for key in jwks(auth_app)} == {old_kid, new_kid}
    new_token = admin_token(auth_app)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert auth_app.client.get("/dicom-web/studies", headers=bearer(old_token)).status_code == 200
    assert auth_app.client.get("/dicom-web/studies", headers=bearer(new_token)).status_code == 200
    assert auth_app.client.get("/auth/userinfo", headers=bearer(old_token)).status_code == 200


def test_retired_key_stops_verifying(auth_app: AuthApp) -> None:
    old_token = admin_token(auth_app)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    auth_app.client.post("/auth/admin/keys/rotate", headers=bearer(old_token))
    new_token = admin_token(auth_app)
    response = auth_app.client.post(f"/auth/admin/keys/{old_kid}/retire", headers=bearer(new_token))
    assert response.status_code == 204
    assert old_kid not in {key["kid"] for key in jwks(auth_app)}
    rejected = auth_app.client.get("/auth/userinfo", headers=bearer(old_token))
    assert rejected.status_code == 401
    assert "unknown or retired" in rejected.json()["detail"]
    assert auth_app.client.get("/auth/userinfo", headers=bearer(new_token)).status_code == 200


def test_signing_key_cannot_be_retired(auth_app: AuthApp) -> None:
    token = admin_token(auth_app)
    kid = jwt.get_unverified_header(token)["kid"]
    response = auth_app.client.post(f"/auth/admin/keys/{kid}/retire", headers=bearer(token))
    assert response.status_code == 409
    assert "rotate the keys first" in response.json()["detail"]


def test_unknown_key_cannot_be_retired(auth_app: AuthApp) -> None:
    response = auth_app.client.post(
        "/auth/admin/keys/no-such-kid/retire", headers=bearer(admin_token(auth_app))
    )
    assert response.status_code == 404


def test_key_list_shows_states(auth_app: AuthApp) -> None:
    token = admin_token(auth_app)
    auth_app.client.post("/auth/admin/keys/rotate", headers=bearer(token))
    keys = auth_app.client.get("/auth/admin/keys", headers=bearer(token)).json()
    assert [key["signing"] for key in keys] == [True, False]
    assert [key["published"] for key in keys] == [True, True]
    assert keys[0]["retired_at"] is None
    assert keys[1]["retired_at"] is not None
    assert "private_key_pem" not in str(keys)


@pytest.fixture
def no_overlap_app(tmp_path: Path) -> Iterator[AuthApp]:
    for running in running_auth_app(auth_settings(tmp_path / "var", auth_key_overlap_s=0)):
        create_user(running.service, "admin", ["administrator"])
        yield running


def test_zero_overlap_retires_at_rotation(no_overlap_app: AuthApp) -> None:
    token = admin_token(no_overlap_app)
    response = no_overlap_app.client.post("/auth/admin/keys/rotate", headers=bearer(token))
    assert [key["kid"] for key in jwks(no_overlap_app)] == [response.json()["kid"]]


def test_rs256_keys_sign_tokens(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path / "var", auth_signing_algorithm="RS256")
    for running in running_auth_app(settings):
        create_user(running.service, "admin", ["administrator"])
        token = admin_token(running)
        [key] = jwks(running)
        assert key["kty"] == "RSA"
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        assert running.client.get("/dicom-web/studies", headers=bearer(token)).status_code == 200


def stored_keys(database: Database) -> list[AuthSigningKey]:
    with database.read_session() as session:
        return list(session.scalars(select(AuthSigningKey)))


def test_passphrase_encrypts_stored_keys(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path / "var", auth_key_passphrase=SecretStr("key passphrase"))
    for running in running_auth_app(settings):
        create_user(running.service, "admin", ["administrator"])
        token = admin_token(running)
        assert running.client.get("/dicom-web/studies", headers=bearer(token)).status_code == 200
        [row] = stored_keys(running.context.database)
        assert row.encrypted
        assert "BEGIN ENCRYPTED PRIVATE KEY" in row.private_key_pem


def test_encrypted_key_needs_passphrase(tmp_path: Path) -> None:
    settings = auth_settings(tmp_path / "var", auth_key_passphrase=SecretStr("key passphrase"))
    database = Database(settings.resolved_database_url)
    database.upgrade()
    try:
        SigningKeyStore(database, settings).rotate()
        without = SigningKeyStore(database, auth_settings(tmp_path / "var"))
        with pytest.raises(SigningKeyError, match="set NOCTIS_AUTH_KEY_PASSPHRASE"):
            without.signing_key()
        wrong = SigningKeyStore(
            database,
            auth_settings(tmp_path / "var", auth_key_passphrase=SecretStr("other")),
        )
        with pytest.raises(SigningKeyError, match="passphrase differs"):
            wrong.signing_key()
    finally:
        database.dispose()


def test_passphrase_file_is_read(tmp_path: Path) -> None:
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("from a file\n")
    settings = auth_settings(tmp_path / "var", auth_key_passphrase_file=passphrase_file)
    database = Database(settings.resolved_database_url)
    database.upgrade()
    try:
        SigningKeyStore(database, settings).rotate()
        same = auth_settings(tmp_path / "var", auth_key_passphrase=SecretStr("from a file"))
        assert SigningKeyStore(database, same).signing_key().kid
    finally:
        database.dispose()


def test_both_passphrase_settings_are_rejected(tmp_path: Path) -> None:
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("x")
    settings = auth_settings(
        tmp_path / "var",
        auth_key_passphrase=SecretStr("y"),
        auth_key_passphrase_file=passphrase_file,
    )
    with pytest.raises(SigningKeyError, match="set only one"):
        SigningKeyStore(Database(settings.resolved_database_url), settings)
