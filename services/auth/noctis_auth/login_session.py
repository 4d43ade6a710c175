"""The login session: a signed cookie that lets the authorization endpoint skip the form.

A successful login on the form gives the browser a cookie holding a JWT that the
current signing key signs: the username, the login time, the time the password was
last set, and an expiry NOCTIS_AUTH_REFRESH_TOKEN_LIFETIME_S after the login. While the
cookie is valid, an authorization request gets its code at once, as identity providers
do with their single sign-on session, so a viewer that reloads its page does not ask
for the password again.

The session ends when it expires, at logout (``/auth/logout`` deletes the cookie), when
the user is disabled, when their password is set anew, and when its signing key is
retired. ``prompt=login`` shows the form all the same; ``prompt=none`` gets the error
``login_required`` instead of the form (OpenID Connect Core 3.1.2.1).

The cookie is HttpOnly, limited to the issuer's path, SameSite=Lax (sent on the
top-level redirect from a viewer) and Secure when the issuer is an https URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
from fastapi import Request, Response
from sqlalchemy.orm import Session

from noctis_auth.clock import epoch_microseconds, epoch_seconds
from noctis_auth.keys import SigningKeyStore
from noctis_auth.tokens import new_token_id, sign_jwt
from noctis_auth.users import find_user
from noctis_common.db.models import AuthUser
from noctis_common.settings import Settings

COOKIE_NAME = "noctis_login_session"
# The audience of session JWTs; no service accepts it for access tokens.
SESSION_AUDIENCE = "noctis-login-session"
# The JWT "typ" header of session cookies, no secret.
SESSION_TOKEN_TYPE = "login-session+jwt"  # noqa: S105


@dataclass(frozen=True)
class LoginSession:
    """The verified content of a login session cookie."""

    username: str
    auth_time: datetime
    # When the password was set, in microseconds since 1970: a new password ends the session.
    password_set_at: int


def _cookie_path(issuer: str) -> str:
    return urlsplit(issuer).path or "/"


def set_session_cookie(
    response: Response,
    keys: SigningKeyStore,
    settings: Settings,
    *,
    issuer: str,
    username: str,
    password_changed_at: datetime,
    auth_time: datetime,
    now: datetime,
) -> None:
    """Start a login session for ``username`` in the browser that gets ``response``."""
    expires = epoch_seconds(auth_time) + settings.auth_refresh_token_lifetime_s
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": SESSION_AUDIENCE,
        "sub": username,
        "iat": epoch_seconds(now),
        "exp": expires,
        "jti": new_token_id(),
        "auth_time": epoch_seconds(auth_time),
        "pwd_set": epoch_microseconds(password_changed_at),
    }
    response.set_cookie(
        COOKIE_NAME,
        sign_jwt(keys, claims, SESSION_TOKEN_TYPE),
        max_age=max(0, expires - epoch_seconds(now)),
        path=_cookie_path(issuer),
        secure=issuer.startswith("https://"),
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, issuer: str) -> None:
    response.delete_cookie(
        COOKIE_NAME,
        path=_cookie_path(issuer),
        secure=issuer.startswith("https://"),
        httponly=True,
        samesite="lax",
    )


def read_session(
    request: Request, keys: SigningKeyStore, settings: Settings, issuer: str
) -> LoginSession | None:
    """Return the request's valid login session, or None."""
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    published = {jwk["kid"]: jwk for jwk in keys.published_jwks()}
    try:
        header = jwt.get_unverified_header(token)
        jwk = published.get(str(header.get("kid")))
        if jwk is None or header.get("typ") != SESSION_TOKEN_TYPE:
            return None
        claims = jwt.decode(
            token,
            jwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            audience=SESSION_AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "sub", "auth_time", "pwd_set"]},
        )
    except jwt.InvalidTokenError:
        return None
    return LoginSession(
        username=str(claims["sub"]),
        auth_time=datetime.fromtimestamp(int(claims["auth_time"]), tz=UTC),
        password_set_at=int(claims["pwd_set"]),
    )


def session_user(session: Session, login_session: LoginSession) -> AuthUser | None:
    """Return the enabled user of a login session whose password is still the same."""
    user = find_user(session, login_session.username)
    if user is None or user.disabled:
        return None
    if epoch_microseconds(user.password_changed_at) != login_session.password_set_at:
        return None
    return user
