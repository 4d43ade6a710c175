"""Attacks on the token service: input that the index database rejects, cached secrets.

PostgreSQL rejects a NUL character in a text value. A NUL in a username, a client id
or a refresh token must be rejected like any other wrong credential, not end in 500.
Tests marked xfail(strict=True) are open findings. Their reason names the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth_service.conftest import auth_settings, running_auth_app
from tests.auth_service.helpers import AuthApp, access_token, bearer, create_user


@pytest.fixture
def postgres_auth_app(tmp_path: Path, postgres_url: str) -> Iterator[AuthApp]:
    settings = auth_settings(tmp_path / "var", database_url=postgres_url)
    for running in running_auth_app(settings):
        create_user(running.service, "admin", ["administrator"])
        yield running


@pytest.mark.postgres
@pytest.mark.parametrize(
    "form",
    [
        pytest.param(
            {"grant_type": "password", "username": "ad\x00min", "password": "wrong"},
            id="username",
        ),
        pytest.param(
            {"grant_type": "client_credentials", "client_id": "gw\x00", "client_secret": "x"},
            id="client_id",
        ),
        pytest.param({"grant_type": "refresh_token", "refresh_token": "x\x00"}, id="refresh"),
    ],
)
def test_nul_in_token_request_is_rejected(postgres_auth_app: AuthApp, form: dict[str, str]) -> None:
    response = postgres_auth_app.client.post("/auth/token", data=form)
    assert response.status_code in (400, 401)


@pytest.mark.postgres
def test_nul_in_authorize_client_is_rejected(postgres_auth_app: AuthApp) -> None:
    response = postgres_auth_app.client.get("/auth/authorize", params={"client_id": "o\x00"})
    assert response.status_code == 400


def test_client_secret_is_not_cached(auth_app: AuthApp) -> None:
    token = access_token(auth_app.client, "admin")
    response = auth_app.client.post(
        "/auth/admin/clients",
        headers=bearer(token),
        json={
            "client_id": "ct-gateway",
            "roles": ["modality_gateway"],
            "grant_types": ["client_credentials"],
        },
    )
    assert response.status_code == 201
    assert response.headers.get("cache-control") == "no-store"
