"""The admin API: only holders of the admin scope manage users, clients and keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from noctis_common.audit import AuditEventType
from noctis_common.db.models import AuditRecord
from tests.auth_service.conftest import auth_settings, running_auth_app
from tests.auth_service.helpers import (
    PASSWORD,
    AuthApp,
    bearer,
    create_client,
    create_user,
    password_login,
)

NEW_USER = {"username": "newrad", "password": PASSWORD, "roles": ["radiologist"]}
NEW_CLIENT = {"client_id": "ai", "roles": ["ai_service"], "grant_types": ["client_credentials"]}
# Every admin route, with a body that would succeed for an administrator.
ADMIN_REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/auth/admin/users", None),
    ("POST", "/auth/admin/users", NEW_USER),
    ("GET", "/auth/admin/users/admin", None),
    ("PATCH", "/auth/admin/users/admin", {"name": "Changed"}),
    ("POST", "/auth/admin/users/admin/password", {"password": "another long password"}),
    ("GET", "/auth/admin/clients", None),
    ("POST", "/auth/admin/clients", NEW_CLIENT),
    ("GET", "/auth/admin/clients/gateway", None),
    ("PATCH", "/auth/admin/clients/gateway", {"name": "Changed"}),
    ("POST", "/auth/admin/clients/gateway/secret", None),
    ("GET", "/auth/admin/keys", None),
    ("POST", "/auth/admin/keys/rotate", None),
]


@pytest.fixture
def admin_app(auth_app: AuthApp) -> AuthApp:
    create_client(
        auth_app.service, "gateway", roles=["modality_gateway"], grant_types=["client_credentials"]
    )
    return auth_app


def admin_token(auth_app: AuthApp) -> str:
    token: str = password_login(auth_app.client, "admin").json()["access_token"]
    return token


def call(auth_app: AuthApp, method: str, path: str, body: Any, token: str | None) -> Any:
    headers = bearer(token) if token else {}
    return auth_app.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
def test_administrator_may_call(
    admin_app: AuthApp, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = call(admin_app, method, path, body, admin_token(admin_app))
    assert response.status_code in {200, 201}, response.text


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
def test_missing_token_gets_401(
    admin_app: AuthApp, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = call(admin_app, method, path, body, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "role", ["radiologist", "technologist", "referring_physician", "modality_gateway"]
)
def test_other_roles_get_403(admin_app: AuthApp, role: str) -> None:
    if role == "modality_gateway":
        created = create_client(
            admin_app.service, "gw2", roles=[role], grant_types=["client_credentials"]
        )
        token = admin_app.client.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            auth=("gw2", str(created.client_secret)),
        ).json()["access_token"]
    else:
        create_user(admin_app.service, "someone", [role], referring_physician_name="Doe^A")
        token = password_login(admin_app.client, "someone").json()["access_token"]
    for method, path, body in ADMIN_REQUESTS:
        response = call(admin_app, method, path, body, token)
        assert response.status_code == 403, f"{role} {method} {path}: {response.status_code}"
        assert "'admin' scope" in response.json()["detail"]
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_admin_token_without_admin_scope_gets_403(admin_app: AuthApp) -> None:
    token = password_login(admin_app.client, "admin", scope="search").json()["access_token"]
    assert call(admin_app, "GET", "/auth/admin/users", None, token).status_code == 403


def test_invalid_token_gets_401(admin_app: AuthApp) -> None:
    token = admin_token(admin_app)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = call(admin_app, "GET", "/auth/admin/users", None, tampered)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_created_user_can_log_in(admin_app: AuthApp) -> None:
    response = call(admin_app, "POST", "/auth/admin/users", NEW_USER, admin_token(admin_app))
    assert response.status_code == 201
    assert response.json()["roles"] == ["radiologist"]
    assert PASSWORD not in response.text
    assert "password_hash" not in response.text
    assert password_login(admin_app.client, "newrad").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({**NEW_USER, "username": "admin"}, 409, "exists already"),
        ({**NEW_USER, "username": "gateway"}, 409, "is a client id"),
        ({**NEW_USER, "roles": ["surgeon"]}, 400, "unknown role 'surgeon'"),
        ({**NEW_USER, "roles": ["ai_service"]}, 400, "not for people"),
        ({**NEW_USER, "roles": ["referring_physician"]}, 400, "referring_physician_name"),
        ({**NEW_USER, "password": "short"}, 400, "use at least 12"),
        ({**NEW_USER, "password": "newrad"}, 400, "use at least"),
        ({**NEW_USER, "username": "has space"}, 422, "pattern"),
        ({**NEW_USER, "unknown_field": 1}, 422, "Extra inputs"),
    ],
)
def test_invalid_user_is_rejected(
    admin_app: AuthApp, body: dict[str, Any], status: int, message: str
) -> None:
    response = call(admin_app, "POST", "/auth/admin/users", body, admin_token(admin_app))
    assert response.status_code == status
    assert message in response.text


def test_disabling_user_revokes_refresh_tokens(admin_app: AuthApp) -> None:
    create_user(admin_app.service, "rad", ["radiologist"])
    refresh_token = password_login(admin_app.client, "rad").json()["refresh_token"]
    token = admin_token(admin_app)
    call(admin_app, "PATCH", "/auth/admin/users/rad", {"disabled": True}, token)
    call(admin_app, "PATCH", "/auth/admin/users/rad", {"disabled": False}, token)
    response = admin_app.client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )
    assert response.status_code == 400
    assert password_login(admin_app.client, "rad").status_code == 200


def test_password_reset_replaces_password(admin_app: AuthApp) -> None:
    create_user(admin_app.service, "rad", ["radiologist"])
    refresh_token = password_login(admin_app.client, "rad").json()["refresh_token"]
    response = call(
        admin_app,
        "POST",
        "/auth/admin/users/rad/password",
        {"password": "a brand new passphrase"},
        admin_token(admin_app),
    )
    assert response.status_code == 200
    assert password_login(admin_app.client, "rad").status_code == 400
    assert password_login(admin_app.client, "rad", "a brand new passphrase").status_code == 200
    refreshed = admin_app.client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )
    assert refreshed.status_code == 400


def test_last_administrator_stays(admin_app: AuthApp) -> None:
    token = admin_token(admin_app)
    disabled = call(admin_app, "PATCH", "/auth/admin/users/admin", {"disabled": True}, token)
    demoted = call(admin_app, "PATCH", "/auth/admin/users/admin", {"roles": ["radiologist"]}, token)
    assert disabled.status_code == 409
    assert demoted.status_code == 409
    assert "last enabled administrator" in disabled.json()["detail"]
    create_user(admin_app.service, "admin2", ["administrator"])
    allowed = call(admin_app, "PATCH", "/auth/admin/users/admin", {"disabled": True}, token)
    assert allowed.status_code == 200


def test_disabled_administrator_token_is_refused(admin_app: AuthApp) -> None:
    create_user(admin_app.service, "admin2", ["administrator"])
    token = admin_token(admin_app)
    other_token = password_login(admin_app.client, "admin2").json()["access_token"]
    call(admin_app, "PATCH", "/auth/admin/users/admin", {"disabled": True}, other_token)
    response = call(admin_app, "GET", "/auth/admin/users", None, token)
    assert response.status_code == 403
    assert "disabled" in response.json()["detail"]


def test_confidential_client_secret_is_shown_once(admin_app: AuthApp) -> None:
    token = admin_token(admin_app)
    created = call(admin_app, "POST", "/auth/admin/clients", NEW_CLIENT, token)
    assert created.status_code == 201
    secret = created.json()["client_secret"]
    assert len(secret) >= 43
    listed = call(admin_app, "GET", "/auth/admin/clients", None, token)
    assert secret not in listed.text
    assert "client_secret" not in listed.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**NEW_CLIENT, "public": True}, "public clients may use only"),
        ({**NEW_CLIENT, "roles": []}, "needs roles"),
        ({**NEW_CLIENT, "roles": ["administrator"]}, "not for service clients"),
        ({**NEW_CLIENT, "grant_types": ["implicit"]}, "invalid grant_types"),
        ({**NEW_CLIENT, "grant_types": ["authorization_code"]}, "needs redirect_uris"),
        (
            {**NEW_CLIENT, "grant_types": ["authorization_code"], "redirect_uris": ["/cb"]},
            "absolute http(s) URI",
        ),
        ({**NEW_CLIENT, "client_id": "noctis"}, "NOCTIS_AUTH_AUDIENCE"),
        ({**NEW_CLIENT, "client_id": "admin"}, "is a username"),
    ],
)
def test_invalid_client_is_rejected(admin_app: AuthApp, body: dict[str, Any], message: str) -> None:
    response = call(admin_app, "POST", "/auth/admin/clients", body, admin_token(admin_app))
    assert response.status_code in {400, 409}
    assert message in response.json()["detail"]


def test_admin_requests_are_audited(admin_app: AuthApp) -> None:
    create_user(admin_app.service, "rad", ["radiologist"])
    rad_token = password_login(admin_app.client, "rad").json()["access_token"]
    call(admin_app, "GET", "/auth/admin/users", None, admin_token(admin_app))
    call(admin_app, "GET", "/auth/admin/users", None, rad_token)
    audit = admin_app.context.audit
    assert audit is not None
    audit.flush()
    with admin_app.context.database.read_session() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.event_type == AuditEventType.ADMIN.value)
        ).all()
    outcomes = sorted((record.user_id, record.outcome) for record in records)
    assert outcomes == [("admin", 0), ("rad", 4)]


def test_logins_are_audited(admin_app: AuthApp) -> None:
    password_login(admin_app.client, "admin")
    password_login(admin_app.client, "admin", "not the password")
    password_login(admin_app.client, "nobody", "my secret password")
    audit = admin_app.context.audit
    assert audit is not None
    audit.flush()
    with admin_app.context.database.read_session() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.event_type == AuditEventType.LOGIN.value)
        ).all()
    outcomes = sorted((record.user_id, record.outcome) for record in records)
    assert outcomes == [("(unknown username)", 4), ("admin", 0), ("admin", 4)]
    assert all("my secret password" not in str(vars(record)) for record in records)


def test_refused_admin_request_names_missing_scope(admin_app: AuthApp) -> None:
    create_user(admin_app.service, "rad", ["radiologist"])
    rad_token = password_login(admin_app.client, "rad").json()["access_token"]
    response = call(admin_app, "GET", "/auth/admin/users", None, rad_token)
    assert response.json()["missing_scope"] == "admin"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    audit = admin_app.context.audit
    assert audit is not None
    audit.flush()
    with admin_app.context.database.read_session() as session:
        record = session.scalars(
            select(AuditRecord).where(
                AuditRecord.user_id == "rad",
                AuditRecord.event_type == AuditEventType.ADMIN.value,
            )
        ).one()
    assert record.outcome_description == "HTTP 403: missing scope admin"


def test_admin_api_needs_token_with_auth_off(tmp_path: Path) -> None:
    for running in running_auth_app(auth_settings(tmp_path / "var", auth_mode="off")):
        create_user(running.service, "admin", ["administrator"])
        assert running.client.get("/auth/admin/users").status_code == 401
        token = password_login(running.client, "admin").json()["access_token"]
        listed = running.client.get("/auth/admin/users", headers=bearer(token))
        assert listed.status_code == 200
