"""Users, clients, logins and PKCE values for the token service tests."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from fastapi.testclient import TestClient

from noctis_auth import admin
from noctis_auth.schemas import ClientCreate, ClientCreated, UserCreate
from noctis_auth.state import AuthService
from noctis_common.context import ArchiveContext

PASSWORD = "correct horse battery staple"
VIEWER_CLIENT_ID = "viewer"
VIEWER_REDIRECT_URI = "http://127.0.0.1:3000/callback"
VIEWER_LOGOUT_URI = "http://127.0.0.1:3000/"


@dataclass
class AuthApp:
    """The token service mounted with QIDO-RS, its test client, service and context."""

    client: TestClient
    service: AuthService
    context: ArchiveContext


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_user(
    service: AuthService,
    username: str,
    roles: list[str],
    *,
    password: str = PASSWORD,
    referring_physician_name: str = "",
) -> None:
    admin.create_user(
        service,
        UserCreate(
            username=username,
            password=password,
            roles=roles,
            name=f"{username.title()} Test",
            referring_physician_name=referring_physician_name,
        ),
        actor="test",
    )


def create_client(service: AuthService, client_id: str, **fields: Any) -> ClientCreated:
    return admin.create_client(service, ClientCreate(client_id=client_id, **fields), actor="test")


def create_viewer_client(service: AuthService) -> ClientCreated:
    return create_client(
        service,
        VIEWER_CLIENT_ID,
        name="Test viewer",
        public=True,
        grant_types=["authorization_code", "refresh_token"],
        redirect_uris=[VIEWER_REDIRECT_URI],
        post_logout_redirect_uris=[VIEWER_LOGOUT_URI],
    )


def password_login(
    client: TestClient, username: str, password: str = PASSWORD, **parameters: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": password, **parameters},
    )
    return response


def access_token(client: TestClient, username: str, **parameters: str) -> str:
    response = password_login(client, username, **parameters)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def verified_claims(client: TestClient, token: str, audience: str = "noctis") -> dict[str, Any]:
    """Verify ``token`` with PyJWT against the service's JWKS, as a resource server would."""
    keys = {jwk["kid"]: jwk for jwk in client.get("/auth/jwks").json()["keys"]}
    header = jwt.get_unverified_header(token)
    jwk = keys[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer="http://testserver/auth",
    )
    return claims


@dataclass(frozen=True)
class Pkce:
    code_verifier: str
    code_challenge: str

    @classmethod
    def generate(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def authorization_parameters(pkce: Pkce, **overrides: str) -> dict[str, str]:
    parameters = {
        "response_type": "code",
        "client_id": VIEWER_CLIENT_ID,
        "redirect_uri": VIEWER_REDIRECT_URI,
        "scope": "openid search retrieve",
        "state": "state-1234",
        "nonce": "nonce-5678",
        "code_challenge": pkce.code_challenge,
        "code_challenge_method": "S256",
    }
    parameters.update(overrides)
    return parameters


def redirect_parameters(response: httpx.Response) -> dict[str, str]:
    """Return the query parameters of a redirect response's Location."""
    assert response.status_code == 303, f"{response.status_code}: {response.text[:300]}"
    location = response.headers["location"]
    query = parse_qs(urlsplit(location).query)
    return {name: values[0] for name, values in query.items()}


CSRF_FIELD_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token_of(page: httpx.Response) -> str:
    """Return the CSRF token in the hidden field of a login form page."""
    match = CSRF_FIELD_PATTERN.search(page.text)
    assert match is not None, f"no csrf_token field in: {page.text[:300]}"
    return html.unescape(match.group(1))


def open_login_form(client: TestClient, pkce: Pkce, **overrides: str) -> str:
    """GET the login form as a browser does; return its CSRF token (the client keeps the cookie)."""
    page = client.get("/auth/authorize", params=authorization_parameters(pkce, **overrides))
    assert page.status_code == 200, f"{page.status_code}: {page.text[:300]}"
    return csrf_token_of(page)


def log_in_on_page(
    client: TestClient, pkce: Pkce, username: str, password: str = PASSWORD, **overrides: str
) -> httpx.Response:
    """Open the login form of the authorization endpoint, submit it, return the response."""
    # prompt=login shows the form even to a browser with a login session.
    overrides = {"prompt": "login", **overrides}
    csrf_token = open_login_form(client, pkce, **overrides)
    response: httpx.Response = client.post(
        "/auth/authorize",
        data={
            **authorization_parameters(pkce, **overrides),
            "csrf_token": csrf_token,
            "username": username,
            "password": password,
        },
        follow_redirects=False,
    )
    return response


def authorization_code(client: TestClient, pkce: Pkce, username: str, **overrides: str) -> str:
    return redirect_parameters(log_in_on_page(client, pkce, username, **overrides))["code"]


def exchange_code(client: TestClient, code: str, pkce: Pkce, **overrides: str) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": VIEWER_CLIENT_ID,
        "redirect_uri": VIEWER_REDIRECT_URI,
        "code_verifier": pkce.code_verifier,
    }
    data.update(overrides)
    response: httpx.Response = client.post("/auth/token", data=data)
    return response
