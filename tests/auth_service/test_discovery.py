"""OpenID Connect discovery, userinfo and logout."""

from __future__ import annotations

from pathlib import Path

from tests.auth_service.conftest import auth_settings, running_auth_app
from tests.auth_service.helpers import (
    VIEWER_CLIENT_ID,
    VIEWER_LOGOUT_URI,
    AuthApp,
    Pkce,
    authorization_code,
    bearer,
    create_user,
    create_viewer_client,
    exchange_code,
    password_login,
    redirect_parameters,
)


def test_discovery_names_every_endpoint(auth_app: AuthApp) -> None:
    document = auth_app.client.get("/auth/.well-known/openid-configuration").json()
    issuer = "http://testserver/auth"
    assert document["issuer"] == issuer
    assert document["authorization_endpoint"] == f"{issuer}/authorize"
    assert document["token_endpoint"] == f"{issuer}/token"
    assert document["jwks_uri"] == f"{issuer}/jwks"
    assert document["userinfo_endpoint"] == f"{issuer}/userinfo"
    assert document["revocation_endpoint"] == f"{issuer}/revoke"
    assert document["end_session_endpoint"] == f"{issuer}/logout"
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert set(document["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "password",
        "client_credentials",
    }
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]
    assert {"openid", "search", "admin"} <= set(document["scopes_supported"])


def test_discovery_endpoints_answer(auth_app: AuthApp) -> None:
    document = auth_app.client.get("/auth/.well-known/openid-configuration").json()
    jwks = auth_app.client.get(document["jwks_uri"])
    assert jwks.status_code == 200
    assert "keys" in jwks.json()


def test_configured_issuer_is_used(tmp_path: Path) -> None:
    issuer = "https://pacs.example.org/auth"
    settings = auth_settings(tmp_path / "var", auth_issuer=issuer + "/")
    for running in running_auth_app(settings):
        document = running.client.get("/auth/.well-known/openid-configuration").json()
        assert document["issuer"] == issuer
        assert document["token_endpoint"] == f"{issuer}/token"


def test_forwarded_headers_set_issuer(auth_app: AuthApp) -> None:
    document = auth_app.client.get(
        "/auth/.well-known/openid-configuration",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"},
    ).json()
    assert document["issuer"] == "https://pacs.example.org/auth"


def test_public_base_url_sets_issuer(tmp_path: Path) -> None:
    settings = auth_settings(
        tmp_path / "var", public_base_url="https://pacs.example.org/noctis/dicom-web"
    )
    for running in running_auth_app(settings):
        document = running.client.get("/auth/.well-known/openid-configuration").json()
        assert document["issuer"] == "https://pacs.example.org/noctis/auth"


def test_userinfo_returns_profile(auth_app: AuthApp) -> None:
    create_user(
        auth_app.service, "refdoc", ["referring_physician"], referring_physician_name="Smith^J"
    )
    token = password_login(auth_app.client, "refdoc").json()["access_token"]
    response = auth_app.client.get("/auth/userinfo", headers=bearer(token))
    assert response.json() == {
        "sub": "refdoc",
        "preferred_username": "refdoc",
        "name": "Refdoc Test",
        "roles": ["referring_physician"],
        "referring_physician_name": "Smith^J",
    }


def test_userinfo_needs_token(auth_app: AuthApp) -> None:
    response = auth_app.client.get("/auth/userinfo")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="noctis"'


def test_logout_returns_to_registered_uri(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    pkce = Pkce.generate()
    code = authorization_code(auth_app.client, pkce, "rad")
    id_token = exchange_code(auth_app.client, code, pkce).json()["id_token"]
    response = auth_app.client.get(
        "/auth/logout",
        params={
            "id_token_hint": id_token,
            "post_logout_redirect_uri": VIEWER_LOGOUT_URI,
            "state": "bye",
        },
        follow_redirects=False,
    )
    assert redirect_parameters(response) == {"state": "bye"}
    assert response.headers["location"].startswith(VIEWER_LOGOUT_URI)


def test_logout_rejects_unregistered_uri(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    response = auth_app.client.get(
        "/auth/logout",
        params={"client_id": VIEWER_CLIENT_ID, "post_logout_redirect_uri": "http://evil.test/"},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_logout_without_redirect_shows_page(auth_app: AuthApp) -> None:
    response = auth_app.client.get("/auth/logout")
    assert response.status_code == 200
    assert "Signed out" in response.text
