"""Access tokens and ID tokens: JWTs signed with the current signing key.

Access tokens follow the JWT profile of RFC 9068 (header ``typ`` ``at+jwt``) with the
claims every Noctis service reads: ``iss``, ``aud`` (NOCTIS_AUTH_AUDIENCE), ``sub``,
``exp``, ``iat``, ``jti``, ``scope``, ``roles``, ``preferred_username``, ``name``,
``client_id`` and, for referring physicians, ``referring_physician_name``. ID tokens
follow OpenID Connect Core 1.0 section 2: their audience is the client.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from fastapi import Request

from noctis_auth.clock import epoch_seconds
from noctis_auth.keys import SigningKeyStore
from noctis_common.roles import Role
from noctis_common.settings import Settings
from noctis_common.web import DICOMWEB_PREFIX, dicomweb_base_url

# The JWT "typ" header of access tokens (RFC 9068 2.1), no secret.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105
AUTH_PREFIX = "/auth"


class InvalidAccessTokenError(ValueError):
    """A bearer token that is not a valid, unexpired access token of this service."""


@dataclass(frozen=True)
class TokenSubject:
    """The holder of a token: a user, or a service client acting for itself."""

    sub: str
    preferred_username: str
    name: str
    roles: tuple[str, ...]
    referring_physician_name: str = ""
    is_user: bool = True


@dataclass(frozen=True)
class AccessTokenClaims:
    """The claims of a verified access token that the token service itself reads."""

    sub: str
    scopes: frozenset[str]
    roles: tuple[str, ...]
    client_id: str
    claims: dict[str, Any] = field(default_factory=dict)


def resolve_issuer(request: Request, settings: Settings) -> str:
    """Return the ``iss`` of tokens: NOCTIS_AUTH_ISSUER, else the public base URL + /auth.

    The public base URL is NOCTIS_PUBLIC_BASE_URL without its ``/dicom-web`` suffix, or
    the base URL of the request as a reverse proxy reports it.
    """
    if settings.auth_issuer:
        return settings.auth_issuer.rstrip("/")
    base_url = dicomweb_base_url(request, settings)
    base_url = base_url.removesuffix(DICOMWEB_PREFIX)
    return base_url + AUTH_PREFIX


def new_token_id() -> str:
    return secrets.token_urlsafe(16)


def sign_jwt(keys: SigningKeyStore, claims: dict[str, Any], token_type: str) -> str:
    """Return ``claims`` signed with the current signing key, with ``kid`` and ``typ``."""
    signing_key = keys.signing_key()
    return jwt.encode(
        claims,
        signing_key.private_key,
        algorithm=signing_key.algorithm,
        headers={"kid": signing_key.kid, "typ": token_type},
    )


def issue_access_token(
    keys: SigningKeyStore,
    settings: Settings,
    *,
    issuer: str,
    subject: TokenSubject,
    scopes: Iterable[str],
    client_id: str,
    now: datetime,
) -> str:
    """Return a signed access token for ``subject`` with the granted ``scopes``."""
    issued_at = epoch_seconds(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": settings.auth_audience,
        "sub": subject.sub,
        "iat": issued_at,
        "exp": issued_at + settings.auth_access_token_lifetime_s,
        "jti": new_token_id(),
        "scope": " ".join(scopes),
        "roles": list(subject.roles),
        "preferred_username": subject.preferred_username,
        "name": subject.name,
        "client_id": client_id,
    }
    if Role.REFERRING_PHYSICIAN in subject.roles:
        claims["referring_physician_name"] = subject.referring_physician_name
    return sign_jwt(keys, claims, ACCESS_TOKEN_TYPE)


def _left_half_hash(value: str) -> str:
    """Return ``at_hash`` of OpenID Connect Core 3.1.3.6 for a SHA-256-based algorithm."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def issue_id_token(
    keys: SigningKeyStore,
    settings: Settings,
    *,
    issuer: str,
    subject: TokenSubject,
    client_id: str,
    auth_time: datetime,
    nonce: str,
    access_token: str,
    now: datetime,
) -> str:
    """Return a signed ID token for ``client_id`` (OpenID Connect Core 1.0, 2)."""
    issued_at = epoch_seconds(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "azp": client_id,
        "sub": subject.sub,
        "iat": issued_at,
        "exp": issued_at + settings.auth_access_token_lifetime_s,
        "auth_time": epoch_seconds(auth_time),
        "at_hash": _left_half_hash(access_token),
        "preferred_username": subject.preferred_username,
        "name": subject.name,
        "roles": list(subject.roles),
    }
    if nonce:
        claims["nonce"] = nonce
    return sign_jwt(keys, claims, "JWT")


def verify_access_token(
    keys: SigningKeyStore, settings: Settings, *, issuer: str, token: str
) -> AccessTokenClaims:
    """Verify an access token of this service against the published keys.

    Raises InvalidAccessTokenError with the reason: a bad signature, an unknown or
    retired key, another issuer or audience, expiry, or a token that is no access
    token (an ID token, for example).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as error:
        raise InvalidAccessTokenError(f"the token is not a valid JWT: {error}") from error
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        raise InvalidAccessTokenError(
            "the token is not an access token: its typ header is not at+jwt; send the "
            "access_token of the token response"
        )
    published = {jwk["kid"]: jwk for jwk in keys.published_jwks()}
    jwk = published.get(str(header.get("kid")))
    if jwk is None:
        raise InvalidAccessTokenError("the token's signing key is unknown or retired")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            jwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            audience=settings.auth_audience,
            issuer=issuer,
            leeway=settings.auth_clock_skew_s,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.InvalidTokenError as error:
        raise InvalidAccessTokenError(str(error)) from error
    return AccessTokenClaims(
        sub=str(claims["sub"]),
        scopes=frozenset(str(claims.get("scope", "")).split()),
        roles=tuple(str(role) for role in claims.get("roles", [])),
        client_id=str(claims.get("client_id", "")),
        claims=claims,
    )


def decode_id_token_hint(keys: SigningKeyStore, token: str) -> dict[str, Any] | None:
    """Return the claims of an ID token this service signed, even if expired, else None.

    The logout endpoint uses it only to learn the client (``aud``) that sent the user.
    """
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None
    published = {jwk["kid"]: jwk for jwk in keys.published_jwks()}
    jwk = published.get(str(kid))
    if jwk is None:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            jwt.PyJWK(jwk).key,
            algorithms=[jwk["alg"]],
            options={"verify_exp": False, "verify_aud": False},
        )
    except jwt.InvalidTokenError:
        return None
    return claims


def jwks_document(keys: SigningKeyStore) -> dict[str, Any]:
    """Return the JSON Web Key Set of the published keys (RFC 7517 section 5)."""
    return {"keys": keys.published_jwks()}
