"""The authorization code grant with PKCE (RFC 6749 4.1, RFC 7636) and its login page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from noctis_common.db.models import AuthAuthorizationCode
from tests.auth_service.helpers import (
    VIEWER_CLIENT_ID,
    VIEWER_REDIRECT_URI,
    AuthApp,
    Pkce,
    authorization_code,
    authorization_parameters,
    create_client,
    create_user,
    create_viewer_client,
    csrf_token_of,
    exchange_code,
    log_in_on_page,
    redirect_parameters,
    unverified_claims,
    verified_claims,
)


@pytest.fixture
def viewer_app(auth_app: AuthApp) -> AuthApp:
    create_viewer_client(auth_app.service)
    create_user(auth_app.service, "rad", ["radiologist"])
    return auth_app


def test_login_page_is_a_form(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    response = viewer_app.client.get("/auth/authorize", params=authorization_parameters(pkce))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'name="username"' in response.text
    assert 'type="password"' in response.text
    assert f'value="{pkce.code_challenge}"' in response.text
    assert "Test viewer" in response.text


def test_login_page_cannot_be_framed(viewer_app: AuthApp) -> None:
    response = viewer_app.client.get(
        "/auth/authorize", params=authorization_parameters(Pkce.generate())
    )
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_code_flow_issues_tokens(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    login = log_in_on_page(viewer_app.client, pkce, "rad")
    parameters = redirect_parameters(login)
    assert login.headers["location"].startswith(VIEWER_REDIRECT_URI + "?")
    assert parameters["state"] == "state-1234"
    response = exchange_code(viewer_app.client, parameters["code"], pkce)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "openid search retrieve"
    assert body["refresh_token"]
    access = verified_claims(viewer_app.client, body["access_token"])
    assert access["sub"] == "rad"
    assert access["client_id"] == VIEWER_CLIENT_ID
    assert access["scope"] == "search retrieve"
    id_token = verified_claims(viewer_app.client, body["id_token"], audience=VIEWER_CLIENT_ID)
    assert id_token["nonce"] == "nonce-5678"
    assert id_token["sub"] == "rad"
    assert id_token["azp"] == VIEWER_CLIENT_ID
    assert id_token["at_hash"]
    assert id_token["auth_time"] <= id_token["iat"]


def test_id_token_is_no_access_token(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    id_token = exchange_code(viewer_app.client, code, pkce).json()["id_token"]
    response = viewer_app.client.get(
        "/dicom-web/studies", headers={"Authorization": f"Bearer {id_token}"}
    )
    assert response.status_code == 401


def test_code_works_once(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    first = exchange_code(viewer_app.client, code, pkce)
    second = exchange_code(viewer_app.client, code, pkce)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"


def test_code_reuse_revokes_issued_tokens(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    refresh_token = exchange_code(viewer_app.client, code, pkce).json()["refresh_token"]
    exchange_code(viewer_app.client, code, pkce)
    response = viewer_app.client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": VIEWER_CLIENT_ID,
        },
    )
    assert response.status_code == 400
    assert "revoked" in response.json()["error_description"]


def test_wrong_code_verifier_is_rejected(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    response = exchange_code(
        viewer_app.client, code, pkce, code_verifier=Pkce.generate().code_verifier
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "code_challenge" in response.json()["error_description"]


@pytest.mark.parametrize("code_verifier", ["", "too-short", "x" * 129, "has space" + "y" * 40])
def test_missing_or_malformed_verifier_is_rejected(viewer_app: AuthApp, code_verifier: str) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    response = exchange_code(viewer_app.client, code, pkce, code_verifier=code_verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"code_challenge": ""}, "code_challenge is missing"),
        ({"code_challenge_method": "plain"}, "'plain' is not supported"),
        ({"code_challenge_method": ""}, "is not supported"),
        ({"code_challenge": "not-base64url!"}, "no S256 challenge"),
        ({"response_type": "token"}, "response_type 'token'"),
        ({"scope": "openid everything"}, "unknown scope"),
    ],
)
def test_invalid_request_redirects_with_error(
    viewer_app: AuthApp, overrides: dict[str, str], description: str
) -> None:
    parameters = authorization_parameters(Pkce.generate(), **overrides)
    if overrides.get("code_challenge_method") == "":
        del parameters["code_challenge_method"]
    response = viewer_app.client.get("/auth/authorize", params=parameters, follow_redirects=False)
    redirected = redirect_parameters(response)
    assert response.headers["location"].startswith(VIEWER_REDIRECT_URI + "?")
    assert redirected["error"] in {"invalid_request", "unsupported_response_type", "invalid_scope"}
    assert description in redirected["error_description"]
    assert redirected["state"] == "state-1234"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redirect_uri": "http://127.0.0.1:3000/elsewhere"}, "is not registered"),
        ({"client_id": "unknown"}, "unknown or disabled"),
        ({"client_id": ""}, "has no client_id"),
    ],
)
def test_unsafe_redirect_shows_error_page(
    viewer_app: AuthApp, overrides: dict[str, str], message: str
) -> None:
    response = viewer_app.client.get(
        "/auth/authorize",
        params=authorization_parameters(Pkce.generate(), **overrides),
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert message in response.text


def test_omitted_redirect_uri_uses_only_registered(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    parameters = authorization_parameters(pkce)
    del parameters["redirect_uri"]
    csrf_token = csrf_token_of(viewer_app.client.get("/auth/authorize", params=parameters))
    response = viewer_app.client.post(
        "/auth/authorize",
        data={
            **parameters,
            "csrf_token": csrf_token,
            "username": "rad",
            "password": "correct horse battery staple",
        },
        follow_redirects=False,
    )
    code = redirect_parameters(response)["code"]
    assert response.headers["location"].startswith(VIEWER_REDIRECT_URI)
    exchanged = exchange_code(viewer_app.client, code, pkce, redirect_uri="")
    assert exchanged.status_code == 200, exchanged.text


def test_redirect_uri_must_match_at_exchange(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    response = exchange_code(
        viewer_app.client, code, pkce, redirect_uri="http://127.0.0.1:3000/other"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_expired_code_is_rejected(viewer_app: AuthApp) -> None:
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    with viewer_app.context.database.write_session() as session, session.begin():
        session.execute(
            update(AuthAuthorizationCode).values(
                expires_at=viewer_app.service.clock() - timedelta(seconds=1)
            )
        )
    response = exchange_code(viewer_app.client, code, pkce)
    assert response.status_code == 400
    assert "expired" in response.json()["error_description"]


def test_code_of_other_client_is_rejected(viewer_app: AuthApp) -> None:
    create_client(
        viewer_app.service,
        "other-viewer",
        public=True,
        grant_types=["authorization_code"],
        redirect_uris=[VIEWER_REDIRECT_URI],
    )
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad")
    response = exchange_code(viewer_app.client, code, pkce, client_id="other-viewer")
    assert response.status_code == 400
    assert "another client" in response.json()["error_description"]


def test_failed_login_shows_form_again(viewer_app: AuthApp) -> None:
    response = log_in_on_page(viewer_app.client, Pkce.generate(), "rad", "wrong password")
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "the username or password is wrong" in response.text
    assert 'value="rad"' in response.text
    assert "wrong password" not in response.text


def test_confidential_client_must_send_secret(viewer_app: AuthApp) -> None:
    created = create_client(
        viewer_app.service,
        "portal",
        grant_types=["authorization_code"],
        redirect_uris=[VIEWER_REDIRECT_URI],
    )
    pkce = Pkce.generate()
    code = authorization_code(viewer_app.client, pkce, "rad", client_id="portal")
    without_secret = exchange_code(viewer_app.client, code, pkce, client_id="portal")
    assert without_secret.status_code == 401
    assert without_secret.json()["error"] == "invalid_client"
    with_secret = exchange_code(
        viewer_app.client,
        code,
        pkce,
        client_id="portal",
        client_secret=str(created.client_secret),
    )
    assert with_secret.status_code == 200, with_secret.text
    assert unverified_claims(with_secret.json()["access_token"])["client_id"] == "portal"
