"""The login session cookie: the login page is skipped until logout or a password change."""

from __future__ import annotations

import pytest

from noctis_auth.login_session import COOKIE_NAME
from tests.auth_service.helpers import (
    VIEWER_LOGOUT_URI,
    AuthApp,
    Pkce,
    authorization_parameters,
    bearer,
    create_user,
    create_viewer_client,
    exchange_code,
    log_in_on_page,
    password_login,
    redirect_parameters,
)


@pytest.fixture
def logged_in_app(auth_app: AuthApp) -> AuthApp:
    """A viewer client, a radiologist, and a browser that logged in on the form."""
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    redirect_parameters(log_in_on_page(auth_app.client, Pkce.generate(), "rad"))
    return auth_app


def test_session_cookie_is_protected(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    response = log_in_on_page(auth_app.client, Pkce.generate(), "admin")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "Path=/auth" in cookie
    assert "SameSite=lax" in cookie


def test_session_skips_login_form(logged_in_app: AuthApp) -> None:
    pkce = Pkce.generate()
    response = logged_in_app.client.get(
        "/auth/authorize", params=authorization_parameters(pkce), follow_redirects=False
    )
    code = redirect_parameters(response)["code"]
    tokens = exchange_code(logged_in_app.client, code, pkce)
    assert tokens.status_code == 200
    assert tokens.json()["scope"] == "openid search retrieve"


def test_prompt_login_shows_form(logged_in_app: AuthApp) -> None:
    response = logged_in_app.client.get(
        "/auth/authorize",
        params=authorization_parameters(Pkce.generate(), prompt="login"),
        follow_redirects=False,
    )
    assert response.status_code == 200
    assert 'type="password"' in response.text


def test_prompt_none_without_session_fails(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    response = auth_app.client.get(
        "/auth/authorize",
        params=authorization_parameters(Pkce.generate(), prompt="none"),
        follow_redirects=False,
    )
    assert redirect_parameters(response)["error"] == "login_required"


def test_logout_ends_session(logged_in_app: AuthApp) -> None:
    logged_in_app.client.get(
        "/auth/logout",
        params={"client_id": "viewer", "post_logout_redirect_uri": VIEWER_LOGOUT_URI},
        follow_redirects=False,
    )
    response = logged_in_app.client.get(
        "/auth/authorize",
        params=authorization_parameters(Pkce.generate()),
        follow_redirects=False,
    )
    assert response.status_code == 200
    assert 'type="password"' in response.text


def test_password_reset_ends_session(logged_in_app: AuthApp) -> None:
    admin_token = password_login(logged_in_app.client, "admin").json()["access_token"]
    logged_in_app.client.post(
        "/auth/admin/users/rad/password",
        json={"password": "a brand new passphrase"},
        headers=bearer(admin_token),
    )
    response = logged_in_app.client.get(
        "/auth/authorize",
        params=authorization_parameters(Pkce.generate()),
        follow_redirects=False,
    )
    assert response.status_code == 200


def test_disabled_user_session_is_ignored(logged_in_app: AuthApp) -> None:
    admin_token = password_login(logged_in_app.client, "admin").json()["access_token"]
    logged_in_app.client.patch(
        "/auth/admin/users/rad", json={"disabled": True}, headers=bearer(admin_token)
    )
    response = logged_in_app.client.get(
        "/auth/authorize",
        params=authorization_parameters(Pkce.generate()),
        follow_redirects=False,
    )
    assert response.status_code == 200


def test_session_cookie_is_no_access_token(logged_in_app: AuthApp) -> None:
    cookie = logged_in_app.client.cookies[COOKIE_NAME]
    response = logged_in_app.client.get("/dicom-web/studies", headers=bearer(cookie))
    assert response.status_code == 401
    assert logged_in_app.client.get("/auth/userinfo", headers=bearer(cookie)).status_code == 401
