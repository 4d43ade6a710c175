"""The token service's flows on a PostgreSQL index (row locks, booleans, time zones)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth_service.conftest import LOCKOUT_THRESHOLD, auth_settings, running_auth_app
from tests.auth_service.helpers import (
    AuthApp,
    Pkce,
    authorization_code,
    bearer,
    create_user,
    create_viewer_client,
    exchange_code,
    password_login,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_auth_app(tmp_path: Path, postgres_url: str) -> Iterator[AuthApp]:
    settings = auth_settings(tmp_path / "var", database_url=postgres_url)
    for running in running_auth_app(settings):
        create_user(running.service, "admin", ["administrator"])
        yield running


def test_refresh_rotation_and_reuse(postgres_auth_app: AuthApp) -> None:
    client = postgres_auth_app.client
    first = password_login(client, "admin").json()["refresh_token"]
    rotated = client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": first}
    )
    assert rotated.status_code == 200
    reuse = client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": first})
    assert reuse.status_code == 400
    second = rotated.json()["refresh_token"]
    revoked = client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": second}
    )
    assert revoked.status_code == 400


def test_lockout_and_unlock(postgres_auth_app: AuthApp) -> None:
    client = postgres_auth_app.client
    create_user(postgres_auth_app.service, "rad", ["radiologist"])
    for _ in range(LOCKOUT_THRESHOLD):
        password_login(client, "rad", "not the password")
    assert password_login(client, "rad").status_code == 400
    token = password_login(client, "admin").json()["access_token"]
    client.patch("/auth/admin/users/rad", json={"unlock": True}, headers=bearer(token))
    assert password_login(client, "rad").status_code == 200


def test_code_flow_and_rotation(postgres_auth_app: AuthApp) -> None:
    client = postgres_auth_app.client
    create_viewer_client(postgres_auth_app.service)
    pkce = Pkce.generate()
    code = authorization_code(client, pkce, "admin")
    tokens = exchange_code(client, code, pkce).json()
    assert exchange_code(client, code, pkce).status_code == 400
    headers = bearer(tokens["access_token"])
    assert client.post("/auth/admin/keys/rotate", headers=headers).status_code == 403
    admin_token = password_login(client, "admin").json()["access_token"]
    assert client.post("/auth/admin/keys/rotate", headers=bearer(admin_token)).status_code == 201
    assert client.get("/dicom-web/studies", headers=headers).status_code == 200
    assert len(client.get("/auth/jwks").json()["keys"]) == 2
