"""The login form's CSRF protection: a signed field bound to a cookie and one login attempt."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from noctis_auth.login_csrf import COOKIE_NAME, INVALID_FORM_MESSAGE
from noctis_common.db.models import AuthUser
from tests.auth_service.helpers import (
    PASSWORD,
    AuthApp,
    Pkce,
    authorization_parameters,
    create_user,
    create_viewer_client,
    csrf_token_of,
    open_login_form,
    redirect_parameters,
)


@pytest.fixture
def viewer_app(auth_app: AuthApp) -> AuthApp:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    return auth_app


def post_form(
    client: TestClient, pkce: Pkce, csrf_token: str | None, password: str = PASSWORD
) -> httpx.Response:
    data = {**authorization_parameters(pkce), "username": "rad", "password": password}
    if csrf_token is not None:
        data["csrf_token"] = csrf_token
    response: httpx.Response = client.post("/auth/authorize", data=data, follow_redirects=False)
    return response


def failed_logins(auth_app: AuthApp, username: str) -> int:
    with auth_app.context.database.read_session() as session:
        user = session.scalars(select(AuthUser).where(AuthUser.username == username)).one()
        return user.failed_logins


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert "Login form rejected" in response.text
    assert "start the login again" in response.text
    assert "location" not in response.headers


def test_form_with_its_token_logs_in(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    csrf_token = open_login_form(viewer_app.client, pkce)
    parameters = redirect_parameters(post_form(viewer_app.client, pkce, csrf_token))
    assert "code" in parameters


def test_post_without_token_is_rejected(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    open_login_form(viewer_app.client, pkce)
    response = post_form(viewer_app.client, pkce, None, password="wrong password")
    assert_rejected(response)
    assert failed_logins(viewer_app, "rad") == 0


def test_post_without_cookie_is_rejected(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    csrf_token = open_login_form(viewer_app.client, pkce)
    viewer_app.client.cookies.clear()
    assert_rejected(post_form(viewer_app.client, pkce, csrf_token))


def test_token_of_other_browser_is_rejected(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    attacker_token = open_login_form(viewer_app.client, pkce)
    viewer_app.client.cookies.clear()
    open_login_form(viewer_app.client, pkce)  # the victim's browser gets its own cookie
    assert_rejected(post_form(viewer_app.client, pkce, attacker_token))


def test_token_of_other_request_is_rejected(viewer_app: AuthApp) -> None:
    csrf_token = open_login_form(viewer_app.client, Pkce.generate())
    assert_rejected(post_form(viewer_app.client, Pkce.generate(), csrf_token))


def test_expired_form_is_rejected(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    csrf_token = open_login_form(viewer_app.client, pkce)
    shown_at = viewer_app.service.clock()
    viewer_app.service.clock = lambda: shown_at + timedelta(hours=1)
    assert_rejected(post_form(viewer_app.client, pkce, csrf_token))


def test_rejection_page_explains_the_fix(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    response = post_form(viewer_app.client, pkce, "not a token")
    assert INVALID_FORM_MESSAGE.split(":")[0] in response.text
    assert response.headers["cache-control"] == "no-store"


def test_cookie_is_strict_and_http_only(viewer_app: AuthApp) -> None:
    page = viewer_app.client.get(
        "/auth/authorize", params=authorization_parameters(Pkce.generate())
    )
    set_cookie = page.headers["set-cookie"].lower()
    assert set_cookie.startswith(COOKIE_NAME)
    assert "httponly" in set_cookie
    assert "samesite=strict" in set_cookie
    assert "path=/auth" in set_cookie


def test_second_tab_keeps_first_form_valid(viewer_app: AuthApp) -> None:
    first = Pkce.generate()
    first_token = open_login_form(viewer_app.client, first)
    open_login_form(viewer_app.client, Pkce.generate())
    assert "code" in redirect_parameters(post_form(viewer_app.client, first, first_token))


def test_failed_login_form_has_fresh_token(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    csrf_token = open_login_form(viewer_app.client, pkce)
    failed = post_form(viewer_app.client, pkce, csrf_token, password="wrong password")
    assert failed.status_code == 200
    retried = post_form(viewer_app.client, pkce, csrf_token_of(failed))
    assert "code" in redirect_parameters(retried)
