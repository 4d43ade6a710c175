"""The client credentials grant (RFC 6749 4.4) and client authentication (RFC 6749 2.3)."""

from __future__ import annotations

import base64

import httpx

from tests.auth_service.helpers import (
    AuthApp,
    bearer,
    create_client,
    password_login,
    verified_claims,
)


def create_gateway(auth_app: AuthApp) -> str:
    created = create_client(
        auth_app.service,
        "gateway",
        name="CT gateway",
        roles=["modality_gateway"],
        grant_types=["client_credentials"],
    )
    assert created.client_secret is not None
    return created.client_secret


def client_token(auth_app: AuthApp, client_id: str, secret: str, **data: str) -> httpx.Response:
    response: httpx.Response = auth_app.client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", **data},
        auth=(client_id, secret),
    )
    return response


def test_client_gets_token_of_its_roles(auth_app: AuthApp) -> None:
    secret = create_gateway(auth_app)
    response = client_token(auth_app, "gateway", secret)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "store"
    assert "refresh_token" not in body
    claims = verified_claims(auth_app.client, body["access_token"])
    assert claims["sub"] == "gateway"
    assert claims["client_id"] == "gateway"
    assert claims["roles"] == ["modality_gateway"]
    assert claims["name"] == "CT gateway"


def test_client_token_lacks_other_scopes(auth_app: AuthApp) -> None:
    secret = create_gateway(auth_app)
    token = client_token(auth_app, "gateway", secret).json()["access_token"]
    response = auth_app.client.get("/dicom-web/studies", headers=bearer(token))
    assert response.status_code == 403


def test_secret_in_form_works(auth_app: AuthApp) -> None:
    secret = create_gateway(auth_app)
    response = auth_app.client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "gateway", "client_secret": secret},
    )
    assert response.status_code == 200


def test_wrong_secret_is_invalid_client(auth_app: AuthApp) -> None:
    create_gateway(auth_app)
    response = client_token(auth_app, "gateway", "wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


def test_two_authentication_methods_are_rejected(auth_app: AuthApp) -> None:
    secret = create_gateway(auth_app)
    response = client_token(auth_app, "gateway", secret, client_secret=secret)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_malformed_basic_credentials_are_rejected(auth_app: AuthApp) -> None:
    response = auth_app.client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_grant_needs_client(auth_app: AuthApp) -> None:
    response = auth_app.client.post("/auth/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_unregistered_grant_is_unauthorized(auth_app: AuthApp) -> None:
    created = create_client(auth_app.service, "scripts", grant_types=["password", "refresh_token"])
    response = client_token(auth_app, "scripts", str(created.client_secret))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_disabled_client_is_rejected(auth_app: AuthApp) -> None:
    secret = create_gateway(auth_app)
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    auth_app.client.patch(
        "/auth/admin/clients/gateway", json={"disabled": True}, headers=bearer(admin_token)
    )
    response = client_token(auth_app, "gateway", secret)
    assert response.status_code == 401


def test_new_secret_replaces_old(auth_app: AuthApp) -> None:
    old_secret = create_gateway(auth_app)
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    response = auth_app.client.post(
        "/auth/admin/clients/gateway/secret", headers=bearer(admin_token)
    )
    new_secret = response.json()["client_secret"]
    assert client_token(auth_app, "gateway", old_secret).status_code == 401
    assert client_token(auth_app, "gateway", new_secret).status_code == 200


def test_requested_scope_is_checked(auth_app: AuthApp) -> None:
    secret = create_gateway(auth_app)
    response = client_token(auth_app, "gateway", secret, scope="delete")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
