"""The password grant (RFC 6749 4.3) and the token endpoint's request checks."""

from __future__ import annotations

import jwt
import pytest

from tests.auth_service.helpers import (
    PASSWORD,
    AuthApp,
    bearer,
    create_user,
    create_viewer_client,
    password_login,
    unverified_claims,
    verified_claims,
)


def test_token_carries_contract_claims(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    response = password_login(auth_app.client, "rad")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == auth_app.service.settings.auth_access_token_lifetime_s
    assert body["scope"] == "search retrieve store report sign"
    assert body["refresh_token"]
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "ES256"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    claims = verified_claims(auth_app.client, body["access_token"])
    assert claims["iss"] == "http://testserver/auth"
    assert claims["aud"] == "noctis"
    assert claims["sub"] == "rad"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["jti"]
    assert claims["scope"] == "search retrieve store report sign"
    assert claims["roles"] == ["radiologist"]
    assert claims["preferred_username"] == "rad"
    assert claims["name"] == "Rad Test"
    assert "referring_physician_name" not in claims


def test_token_works_at_dicomweb_service(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "tech", ["technologist"])
    token = password_login(auth_app.client, "tech").json()["access_token"]
    assert auth_app.client.get("/dicom-web/studies", headers=bearer(token)).status_code == 200
    assert auth_app.client.get("/dicom-web/studies").status_code == 401


def test_token_ids_are_unique(auth_app: AuthApp) -> None:
    first = password_login(auth_app.client, "admin").json()["access_token"]
    second = password_login(auth_app.client, "admin").json()["access_token"]
    assert unverified_claims(first)["jti"] != unverified_claims(second)["jti"]


def test_referring_physician_token_carries_name(auth_app: AuthApp) -> None:
    create_user(
        auth_app.service,
        "refdoc",
        ["referring_physician"],
        referring_physician_name="Smith^John",
    )
    claims = unverified_claims(password_login(auth_app.client, "refdoc").json()["access_token"])
    assert claims["referring_physician_name"] == "Smith^John"
    assert claims["scope"] == "search retrieve"


def test_requested_scope_is_narrowed(auth_app: AuthApp) -> None:
    response = password_login(auth_app.client, "admin", scope="search delete")
    assert response.json()["scope"] == "search delete"
    assert unverified_claims(response.json()["access_token"])["scope"] == "search delete"


def test_scope_beyond_roles_is_left_out(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "tech", ["technologist"])
    response = password_login(auth_app.client, "tech", scope="search delete")
    assert response.json()["scope"] == "search"


def test_scope_no_role_grants_is_invalid(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "tech", ["technologist"])
    response = password_login(auth_app.client, "tech", scope="admin")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert "technologist" in response.json()["error_description"]


def test_unknown_scope_is_invalid(auth_app: AuthApp) -> None:
    response = password_login(auth_app.client, "admin", scope="search everything")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert "'everything'" in response.json()["error_description"]


def test_wrong_password_and_unknown_user_look_alike(auth_app: AuthApp) -> None:
    wrong_password = password_login(auth_app.client, "admin", "not the password")
    unknown_user = password_login(auth_app.client, "nobody", PASSWORD)
    assert wrong_password.status_code == 400
    assert unknown_user.status_code == 400
    assert wrong_password.json() == unknown_user.json()
    assert wrong_password.json()["error"] == "invalid_grant"


def test_disabled_user_cannot_log_in(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "gone", ["radiologist"])
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    auth_app.client.patch(
        "/auth/admin/users/gone", json={"disabled": True}, headers=bearer(admin_token)
    )
    response = password_login(auth_app.client, "gone")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_token_response_is_not_cached(auth_app: AuthApp) -> None:
    response = password_login(auth_app.client, "admin")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"username": "admin", "password": PASSWORD}, "invalid_request"),
        ({"grant_type": "implicit"}, "unsupported_grant_type"),
        ({"grant_type": "password", "password": PASSWORD}, "invalid_request"),
        ({"grant_type": "password", "username": "admin"}, "invalid_request"),
    ],
)
def test_malformed_token_request_is_rejected(
    auth_app: AuthApp, data: dict[str, str], error: str
) -> None:
    response = auth_app.client.post("/auth/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_repeated_parameter_is_rejected(auth_app: AuthApp) -> None:
    response = auth_app.client.post(
        "/auth/token",
        content=f"grant_type=password&username=admin&username=x&password={PASSWORD}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "'username'" in response.json()["error_description"]


def test_json_body_is_rejected(auth_app: AuthApp) -> None:
    response = auth_app.client.post(
        "/auth/token",
        json={"grant_type": "password", "username": "admin", "password": PASSWORD},
    )
    assert response.status_code == 400
    assert "application/x-www-form-urlencoded" in response.json()["error_description"]


def test_password_grant_needs_registered_client_grant(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    response = password_login(auth_app.client, "admin", client_id="viewer")
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
