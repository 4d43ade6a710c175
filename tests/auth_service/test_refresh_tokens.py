"""Refresh tokens: rotation, reuse detection, revocation and expiry (RFC 6749 6, RFC 7009)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from noctis_common.db.models import AuthRefreshToken
from tests.auth_service.helpers import (
    VIEWER_CLIENT_ID,
    AuthApp,
    Pkce,
    authorization_code,
    bearer,
    create_user,
    create_viewer_client,
    exchange_code,
    password_login,
    unverified_claims,
)


def refresh(auth_app: AuthApp, refresh_token: str, **parameters: str) -> httpx.Response:
    response: httpx.Response = auth_app.client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, **parameters},
    )
    return response


def test_refresh_rotates_token(auth_app: AuthApp) -> None:
    login = password_login(auth_app.client, "admin").json()
    response = refresh(auth_app, login["refresh_token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refresh_token"] != login["refresh_token"]
    assert body["scope"] == login["scope"]
    assert unverified_claims(body["access_token"])["sub"] == "admin"
    assert refresh(auth_app, body["refresh_token"]).status_code == 200


def test_reused_token_revokes_family(auth_app: AuthApp) -> None:
    first = password_login(auth_app.client, "admin").json()["refresh_token"]
    second = refresh(auth_app, first).json()["refresh_token"]
    reuse = refresh(auth_app, first)
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert "used before" in reuse.json()["error_description"]
    after_reuse = refresh(auth_app, second)
    assert after_reuse.status_code == 400
    assert "revoked" in after_reuse.json()["error_description"]


def test_reuse_leaves_other_logins_alone(auth_app: AuthApp) -> None:
    stolen = password_login(auth_app.client, "admin").json()["refresh_token"]
    other_login = password_login(auth_app.client, "admin").json()["refresh_token"]
    refresh(auth_app, stolen)
    refresh(auth_app, stolen)
    assert refresh(auth_app, other_login).status_code == 200


def test_refresh_may_narrow_scope(auth_app: AuthApp) -> None:
    login = password_login(auth_app.client, "admin").json()
    narrowed = refresh(auth_app, login["refresh_token"], scope="search").json()
    assert narrowed["scope"] == "search"
    widened_again = refresh(auth_app, narrowed["refresh_token"]).json()
    assert widened_again["scope"] == login["scope"]


def test_refresh_may_not_widen_scope(auth_app: AuthApp) -> None:
    login = password_login(auth_app.client, "admin", scope="search").json()
    response = refresh(auth_app, login["refresh_token"], scope="search delete")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert refresh(auth_app, login["refresh_token"]).status_code == 200


def test_refresh_follows_role_changes(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    login = password_login(auth_app.client, "rad").json()
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    auth_app.client.patch(
        "/auth/admin/users/rad", json={"roles": ["technologist"]}, headers=bearer(admin_token)
    )
    body = refresh(auth_app, login["refresh_token"]).json()
    assert body["scope"] == "search retrieve store"
    assert unverified_claims(body["access_token"])["roles"] == ["technologist"]


def test_token_of_other_client_is_rejected(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    pkce = Pkce.generate()
    code = authorization_code(auth_app.client, pkce, "rad")
    viewer_token = exchange_code(auth_app.client, code, pkce).json()["refresh_token"]
    without_client = refresh(auth_app, viewer_token)
    assert without_client.status_code == 400
    assert "another client" in without_client.json()["error_description"]
    with_client = refresh(auth_app, viewer_token, client_id=VIEWER_CLIENT_ID)
    assert with_client.status_code == 200
    assert "id_token" in with_client.json()


def test_disabled_user_cannot_refresh(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    refresh_token = password_login(auth_app.client, "rad").json()["refresh_token"]
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    auth_app.client.patch(
        "/auth/admin/users/rad", json={"disabled": True}, headers=bearer(admin_token)
    )
    assert refresh(auth_app, refresh_token).status_code == 400


def test_refresh_token_expires_with_login(auth_app: AuthApp) -> None:
    refresh_token = password_login(auth_app.client, "admin").json()["refresh_token"]
    with auth_app.context.database.write_session() as session, session.begin():
        session.execute(
            update(AuthRefreshToken).values(
                expires_at=auth_app.service.clock() - timedelta(seconds=1)
            )
        )
    response = refresh(auth_app, refresh_token)
    assert response.status_code == 400
    assert "expired" in response.json()["error_description"]


def test_rotation_keeps_login_expiry(auth_app: AuthApp) -> None:
    refresh_token = password_login(auth_app.client, "admin").json()["refresh_token"]
    refresh(auth_app, refresh_token)
    with auth_app.context.database.read_session() as session:
        expiries = set(session.scalars(select(AuthRefreshToken.expires_at)))
    assert len(expiries) == 1


def test_unknown_refresh_token_is_rejected(auth_app: AuthApp) -> None:
    response = refresh(auth_app, "no-such-token")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_revocation_ends_login(auth_app: AuthApp) -> None:
    first = password_login(auth_app.client, "admin").json()["refresh_token"]
    second = refresh(auth_app, first).json()["refresh_token"]
    response = auth_app.client.post("/auth/revoke", data={"token": second})
    assert response.status_code == 200
    assert refresh(auth_app, second).status_code == 400


def test_revoking_unknown_token_succeeds(auth_app: AuthApp) -> None:
    response = auth_app.client.post(
        "/auth/revoke", data={"token": "unknown", "token_type_hint": "access_token"}
    )
    assert response.status_code == 200


def test_revocation_by_other_client_is_ignored(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    refresh_token = password_login(auth_app.client, "admin").json()["refresh_token"]
    auth_app.client.post(
        "/auth/revoke", data={"token": refresh_token, "client_id": VIEWER_CLIENT_ID}
    )
    assert refresh(auth_app, refresh_token).status_code == 200
