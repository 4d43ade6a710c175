"""Cross-site request forgery (CSRF) protection of the login form.

Without it, another site could post a login form of its own to ``/auth/authorize``.
The browser would then be logged in to the attacker's account (login CSRF), and what
the user does next in the viewer would run under that account.

The protection is a signed double-submit cookie, which pairs two values:

- a random value in the cookie ``noctis_login_csrf``: HttpOnly, SameSite=Strict, so
  that browsers send it only with requests that come from the token service's own
  pages, limited to the issuer's path and Secure when the issuer is an https URL;
- a hidden ``csrf_token`` field in the form: a JWT that the current signing key signs.
  It contains the SHA-256 of that cookie value and of the authorization request's
  parameters (client, redirect URI, PKCE challenge, state, ...), and it expires
  LOGIN_FORM_LIFETIME_S after the form was shown.

A post is accepted only when the field verifies, names this browser's cookie and the
parameters posted with it. A form is thus bound to one login attempt in one browser.
The browser keeps its cookie value across attempts, so several login tabs work side by
side.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from fastapi import Request, Response

from noctis_auth.clock import epoch_seconds
from noctis_auth.keys import SigningKeyStore
from noctis_auth.tokens import sign_jwt

COOKIE_NAME = "noctis_login_csrf"
FIELD_NAME = "csrf_token"
# The audience of form tokens; no service accepts it for access tokens.
FORM_AUDIENCE = "noctis-login-form"
# The JWT "typ" header of form tokens, no secret.
FORM_TOKEN_TYPE = "login-form+jwt"  # noqa: S105
# Seconds a shown login form can be posted; after that the user starts the login again.
LOGIN_FORM_LIFETIME_S = 1800
# Lifetime of the cookie; a new form renews it.
COOKIE_MAX_AGE_S = 24 * 3600
# A cookie value as :func:`secrets.token_urlsafe` makes it; others are replaced.
COOKIE_VALUE_LENGTH = 43

INVALID_FORM_MESSAGE = (
    "the login form was not accepted: it expired, it was not sent from this browser's "
    "Noctis login page, or the browser blocks cookies of this site. Go back to the "
    "application, start the login again, and allow cookies for this site."
)


class InvalidLoginFormError(Exception):
    """A posted login form without a valid CSRF token; the message is for the log."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _request_digest(request_parameters: Mapping[str, str]) -> str:
    return _sha256(urlencode(sorted(request_parameters.items())))


def _cookie_path(issuer: str) -> str:
    return urlsplit(issuer).path or "/"


def browser_value(request: Request) -> str:
    """Return the browser's CSRF cookie value, or a new one when it has none."""
    value = request.cookies.get(COOKIE_NAME, "")
    if len(value) == COOKIE_VALUE_LENGTH:
        return value
    return secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, value: str, issuer: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=COOKIE_MAX_AGE_S,
        path=_cookie_path(issuer),
        secure=issuer.startswith("https://"),
        httponly=True,
        samesite="strict",
    )


def form_token(
    keys: SigningKeyStore,
    *,
    issuer: str,
    browser: str,
    request_parameters: Mapping[str, str],
    now: datetime,
) -> str:
    """Return the ``csrf_token`` of a login form for one browser and authorization request."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": FORM_AUDIENCE,
        "iat": epoch_seconds(now),
        "exp": epoch_seconds(now) + LOGIN_FORM_LIFETIME_S,
        "browser": _sha256(browser),
        "request": _request_digest(request_parameters),
    }
    return sign_jwt(keys, claims, FORM_TOKEN_TYPE)


def check_form_token(
    keys: SigningKeyStore,
    *,
    issuer: str,
    cookie_value: str | None,
    token: str | None,
    request_parameters: Mapping[str, str],
    now: datetime,
) -> None:
    """Raise InvalidLoginFormError unless ``token`` was issued for this cookie and request."""
    if not cookie_value:
        raise InvalidLoginFormError("the login CSRF cookie is missing")
    if not token:
        raise InvalidLoginFormError(f"the {FIELD_NAME} field is missing")
    published = {jwk["kid"]: jwk for jwk in keys.published_jwks()}
    try:
        header = jwt.get_unverified_header(token)
        jwk = published.get(str(header.get("kid")))
        if jwk is None or header.get("typ") != FORM_TOKEN_TYPE:
            raise InvalidLoginFormError("the CSRF token is not a login form token of this service")
        claims = jwt.decode(
            token,
            jwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            audience=FORM_AUDIENCE,
            issuer=issuer,
            # Expiry is checked below against the service's clock.
            options={"require": ["exp", "browser", "request"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as error:
        raise InvalidLoginFormError(f"the CSRF token is invalid: {error}") from None
    if int(claims["exp"]) <= epoch_seconds(now):
        raise InvalidLoginFormError("the login form expired")
    if claims["browser"] != _sha256(cookie_value):
        raise InvalidLoginFormError("the CSRF token was issued to another browser")
    if claims["request"] != _request_digest(request_parameters):
        raise InvalidLoginFormError("the CSRF token was issued for another authorization request")
