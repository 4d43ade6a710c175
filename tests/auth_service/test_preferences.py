"""Per-user viewer and worklist preferences."""

from __future__ import annotations

from tests.auth_service.helpers import AuthApp, bearer, create_client, create_user, password_login

PREFERENCES = {"worklist": {"columns": ["PatientName", "StudyDate"]}, "viewer": {"cine_fps": 20}}


def user_token(auth_app: AuthApp, username: str = "admin") -> str:
    token: str = password_login(auth_app.client, username).json()["access_token"]
    return token


def test_preferences_start_empty(auth_app: AuthApp) -> None:
    response = auth_app.client.get("/auth/preferences", headers=bearer(user_token(auth_app)))
    assert response.status_code == 200
    assert response.json() == {}


def test_preferences_round_trip(auth_app: AuthApp) -> None:
    headers = bearer(user_token(auth_app))
    stored = auth_app.client.put("/auth/preferences", json=PREFERENCES, headers=headers)
    assert stored.status_code == 200
    assert auth_app.client.get("/auth/preferences", headers=headers).json() == PREFERENCES
    replaced = auth_app.client.put("/auth/preferences", json={"viewer": {}}, headers=headers)
    assert replaced.json() == {"viewer": {}}
    assert auth_app.client.get("/auth/preferences", headers=headers).json() == {"viewer": {}}


def test_preferences_are_per_user(auth_app: AuthApp) -> None:
    create_user(auth_app.service, "rad", ["radiologist"])
    auth_app.client.put("/auth/preferences", json=PREFERENCES, headers=bearer(user_token(auth_app)))
    response = auth_app.client.get("/auth/preferences", headers=bearer(user_token(auth_app, "rad")))
    assert response.json() == {}


def test_preferences_must_be_object(auth_app: AuthApp) -> None:
    response = auth_app.client.put(
        "/auth/preferences", json=[1, 2], headers=bearer(user_token(auth_app))
    )
    assert response.status_code == 400
    assert "JSON object" in response.json()["detail"]


def test_large_preferences_are_rejected(auth_app: AuthApp) -> None:
    response = auth_app.client.put(
        "/auth/preferences", json={"blob": "x" * 70_000}, headers=bearer(user_token(auth_app))
    )
    assert response.status_code == 413


def test_preferences_need_token(auth_app: AuthApp) -> None:
    assert auth_app.client.get("/auth/preferences").status_code == 401
    assert auth_app.client.put("/auth/preferences", json={}).status_code == 401


def test_client_token_has_no_preferences(auth_app: AuthApp) -> None:
    created = create_client(
        auth_app.service, "ai", roles=["ai_service"], grant_types=["client_credentials"]
    )
    token = auth_app.client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        auth=("ai", str(created.client_secret)),
    ).json()["access_token"]
    response = auth_app.client.get("/auth/preferences", headers=bearer(token))
    assert response.status_code == 403
    assert "user accounts" in response.json()["detail"]


def test_cors_allows_preferences_put(auth_app: AuthApp) -> None:
    response = auth_app.client.options(
        "/auth/preferences",
        headers={
            "Origin": "http://127.0.0.1:3000",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert "PUT" in response.headers["access-control-allow-methods"]
