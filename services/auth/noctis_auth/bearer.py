"""Bearer tokens at the token service's own APIs: admin, preferences, userinfo.

These APIs check tokens themselves, against the service's own keys, whatever
NOCTIS_AUTH_MODE is set to: user accounts must never be open to changes without a token,
even where the archive runs with authentication off on loopback. Errors follow
RFC 6750 3: 401 with ``WWW-Authenticate: Bearer`` for a missing or invalid token,
403 with ``error="insufficient_scope"`` for a token without the scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from noctis_auth.clients import find_client
from noctis_auth.state import Auth
from noctis_auth.tokens import (
    AccessTokenClaims,
    InvalidAccessTokenError,
    resolve_issuer,
    verify_access_token,
)
from noctis_auth.users import find_user
from noctis_common.auth import Principal
from noctis_common.roles import Scope

REALM = "noctis"


def _challenge(error: str | None = None, description: str = "", scope: str = "") -> str:
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        # A quoted-string of RFC 9110 may not contain '"' or '\'.
        cleaned = description.replace('"', "'").replace("\\", "/")
        parts.append(f'error_description="{cleaned}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)


def authenticated(request: Request, service: Auth) -> AccessTokenClaims:
    """Return the claims of the request's bearer token; raise 401 without a valid one."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="this request needs an access token: send 'Authorization: Bearer TOKEN'",
            headers={"WWW-Authenticate": _challenge()},
        )
    issuer = resolve_issuer(request, service.settings)
    try:
        return verify_access_token(service.keys, service.settings, issuer=issuer, token=token)
    except InvalidAccessTokenError as error:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"invalid access token: {error}",
            headers={"WWW-Authenticate": _challenge("invalid_token", str(error))},
        ) from None


Bearer = Annotated[AccessTokenClaims, Depends(authenticated)]


def is_token_holder_enabled(session: Session, claims: AccessTokenClaims) -> bool:
    """Return whether the user or client a token was issued to exists and is enabled.

    A client credentials token has the client as its subject; every other token a user.
    """
    if claims.client_id and claims.sub == claims.client_id:
        client = find_client(session, claims.sub)
        return client is not None and not client.disabled
    user = find_user(session, claims.sub)
    return user is not None and not user.disabled


def _principal(claims: AccessTokenClaims, request: Request) -> Principal:
    return Principal(
        subject=claims.sub,
        username=str(claims.claims.get("preferred_username") or claims.sub),
        roles=frozenset(claims.roles),
        scopes=frozenset(scope for scope in Scope if scope.value in claims.scopes),
        client_address=request.client.host if request.client else "unknown",
        token_id=str(claims.claims.get("jti", "")),
        claims=claims.claims,
    )


def require_admin(request: Request, service: Auth) -> AccessTokenClaims:
    """Return the claims of a token with the admin scope whose holder is still enabled.

    The request state gets the scope and the principal before any check, so the audit
    trail records refused requests too (:mod:`noctis_common.audit_http`).
    """
    request.state.required_scope = Scope.ADMIN
    claims = authenticated(request, service)
    request.state.principal = _principal(claims, request)
    if Scope.ADMIN not in claims.scopes:
        granted = " ".join(sorted(claims.scopes)) or "none"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this request needs the 'admin' scope; the token's scopes are: {granted}",
            headers={
                "WWW-Authenticate": _challenge(
                    "insufficient_scope", "the admin scope is needed", Scope.ADMIN.value
                )
            },
        )
    with service.database.read_session() as session:
        holder_enabled = is_token_holder_enabled(session, claims)
    if not holder_enabled:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"the account {claims.sub!r} of this token is disabled or deleted",
        )
    return claims


AdminBearer = Annotated[AccessTokenClaims, Depends(require_admin)]
