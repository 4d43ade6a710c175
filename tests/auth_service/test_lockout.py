"""Account lockout after repeated failed logins."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from noctis_auth.clock import as_utc
from noctis_common.db.models import AuthUser
from tests.auth_service.conftest import LOCKOUT_THRESHOLD
from tests.auth_service.helpers import (
    AuthApp,
    Pkce,
    bearer,
    create_user,
    create_viewer_client,
    log_in_on_page,
    password_login,
)


def fail_logins(auth_app: AuthApp, username: str, count: int) -> None:
    for _ in range(count):
        response = password_login(auth_app.client, username, "not the password")
        assert response.status_code == 400


def stored_user(auth_app: AuthApp, username: str) -> AuthUser:
    with auth_app.context.database.read_session() as session:
        user = session.scalars(select(AuthUser).where(AuthUser.username == username)).one()
    return user


def test_threshold_failures_lock_account(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD)
    response = password_login(auth_app.client, "rad")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert stored_user(auth_app, "rad").locked_until is not None


def test_fewer_failures_do_not_lock(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD - 1)
    assert password_login(auth_app.client, "rad").status_code == 200


def test_success_resets_failure_count(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD - 1)
    assert password_login(auth_app.client, "rad").status_code == 200
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD - 1)
    assert password_login(auth_app.client, "rad").status_code == 200
    assert stored_user(auth_app, "rad").failed_logins == 0


def test_lock_ends_after_lockout_time(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD)
    locked_until = stored_user(auth_app, "rad").locked_until
    assert locked_until is not None
    minutes = auth_app.service.settings.auth_lockout_minutes
    lock_start = auth_app.service.clock()
    assert as_utc(locked_until) > lock_start + timedelta(minutes=minutes - 1)
    with auth_app.context.database.write_session() as session, session.begin():
        session.execute(
            update(AuthUser)
            .where(AuthUser.username == "rad")
            .values(locked_until=lock_start - timedelta(seconds=1))
        )
    assert password_login(auth_app.client, "rad").status_code == 200


def test_login_page_counts_failures_too(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    for _ in range(LOCKOUT_THRESHOLD):
        log_in_on_page(auth_app.client, Pkce.generate(), "rad", "not the password")
    response = log_in_on_page(auth_app.client, Pkce.generate(), "rad")
    assert response.status_code == 200
    assert "locked after too many failed logins" in response.text


def test_administrator_can_unlock(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD)
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    response = auth_app.client.patch(
        "/auth/admin/users/rad", json={"unlock": True}, headers=bearer(admin_token)
    )
    assert response.status_code == 200
    assert response.json()["locked_until"] is None
    assert password_login(auth_app.client, "rad").status_code == 200


def test_locked_owner_gets_same_answer_as_guesser(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    create_user(auth_app.service, "tech", ["technologist"])
    wrong_password = password_login(auth_app.client, "tech", "not the password")
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD)
    locked_owner = password_login(auth_app.client, "rad")
    assert locked_owner.status_code == wrong_password.status_code
    assert locked_owner.json() == wrong_password.json()
    assert locked_owner.headers.get("retry-after") is None


def alert_of(page: str) -> str:
    start = page.index('role="alert">')
    return page[start : page.index("</p>", start)]


def test_locked_owner_sees_same_login_page(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    create_user(auth_app.service, "tech", ["technologist"])
    wrong_password = log_in_on_page(auth_app.client, Pkce.generate(), "tech", "not the password")
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD)
    locked_owner = log_in_on_page(auth_app.client, Pkce.generate(), "rad")
    assert locked_owner.status_code == wrong_password.status_code
    assert alert_of(locked_owner.text) == alert_of(wrong_password.text)


def test_unlocked_owner_logs_in_on_page(auth_app: AuthApp) -> None:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    fail_logins(auth_app, "rad", LOCKOUT_THRESHOLD)
    admin_token = password_login(auth_app.client, "admin").json()["access_token"]
    unlocked = auth_app.client.patch(
        "/auth/admin/users/rad", json={"unlock": True}, headers=bearer(admin_token)
    )
    assert unlocked.status_code == 200
    assert log_in_on_page(auth_app.client, Pkce.generate(), "rad").status_code == 303
