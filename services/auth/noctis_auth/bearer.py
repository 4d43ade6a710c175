"""Bearer tokens at the token service's own APIs: admin, preferences, userinfo.

Whatever NOCTIS_AUTH_MODE is set to, these APIs need a token of this service, so
user accounts are never open to changes without one, even where the archive runs with
authentication off on loopback. The admin API uses the shared scope dependency of
:mod:`noctis_common.auth` with ``token_required``, so its requests are checked and
audited like every other protected route. Preferences and userinfo, which any logged-in
user may call, check tokens here against the service's own keys. Errors follow
RFC 6750 3: 401 with ``WWW-Authenticate: Bearer`` for a missing or invalid token,
403 with ``error="insufficient_scope"`` for a token without the scope.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from sqlalchemy.orm import Session

from noctis_auth.clients import find_client
from noctis_auth.errors import NO_STORE_HEADERS
from noctis_auth.state import Auth
from noctis_auth.tokens import (
    AccessTokenClaims,
    InvalidAccessTokenError,
    resolve_issuer,
    verify_access_token,
)
from noctis_auth.users import find_user
from noctis_common.auth import Principal, require_scope
from noctis_common.roles import Scope

REALM = "noctis"
# The admin API's dependency: a verified token with the admin scope, required even
# while NOCTIS_AUTH_MODE is off.
ADMIN_SCOPE = require_scope(Scope.ADMIN, token_required=True)


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


def is_token_holder_enabled(session: Session, principal: Principal) -> bool:
    """Return whether the user or client a token was issued to exists and is enabled.

    A client credentials token has the client as its subject; every other token a user.
    """
    client_id = principal.claims.get("client_id")
    if client_id and principal.subject == client_id:
        client = find_client(session, principal.subject)
        return client is not None and not client.disabled
    user = find_user(session, principal.subject)
    return user is not None and not user.disabled


def require_admin(
    service: Auth, response: Response, principal: Annotated[Principal, Depends(ADMIN_SCOPE)]
) -> Principal:
    """Return the principal of a token with the admin scope whose holder is still enabled.

    The shared scope dependency checks the token and the scope, and notes both for the
    audit trail, as on every other protected route. Admin responses may contain a new
    client secret, so they forbid caching.
    """
    response.headers.update(NO_STORE_HEADERS)
    with service.database.read_session() as session:
        holder_enabled = is_token_holder_enabled(session, principal)
    if not holder_enabled:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"the account {principal.subject!r} of this token is disabled or deleted",
        )
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
