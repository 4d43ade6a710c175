"""The token endpoint's grants (RFC 6749 sections 4.1.3, 4.3, 4.4 and 6).

- ``password``: a person's username and password; a client is optional, so that a
  script can log in with curl. Issues a refresh token.
- ``authorization_code``: the code from the login page with its PKCE verifier; the
  grant of browser viewers such as OHIF. Issues a refresh token, and an ID token
  when the ``openid`` scope was requested.
- ``refresh_token``: rotates the refresh token (see :mod:`noctis_auth.refresh_tokens`).
  The scopes are those of the login, narrowed to what the user's roles grant now.
- ``client_credentials``: a confidential service client acting for itself, with the
  roles registered for the client. Issues no refresh token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from noctis_auth.authorization import redeem_authorization_code
from noctis_auth.clients import (
    ClientCredentials,
    authenticate_client,
    read_client_credentials,
    require_grant_type,
)
from noctis_auth.clock import as_utc
from noctis_auth.errors import (
    OAuthError,
    invalid_client,
    invalid_grant,
    invalid_request,
    invalid_scope,
    unauthorized_client,
)
from noctis_auth.login_events import record_login
from noctis_auth.refresh_tokens import (
    delete_expired_tokens,
    issue_refresh_token,
    new_family_id,
    revoke_refresh_token,
    use_refresh_token,
)
from noctis_auth.scopes import RequestedScope, grant_scopes, parse_scope, scope_string
from noctis_auth.state import AuthService
from noctis_auth.tokens import TokenSubject, issue_access_token, issue_id_token
from noctis_auth.users import (
    LOGIN_FAILED_MESSAGE,
    LoginFailedError,
    authenticate_user,
    subject_of_user,
)
from noctis_common.db.models import AuthClient, AuthUser
from noctis_common.roles import Scope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenRequest:
    """A token endpoint request: its form parameters, credentials and origin."""

    form: Mapping[str, str]
    authorization: str | None
    issuer: str
    client_address: str


@dataclass(frozen=True)
class UserTokens:
    """The content of the tokens of a user's login."""

    user_fk: int
    subject: TokenSubject
    client_id: str
    granted: frozenset[Scope]
    requested: RequestedScope
    auth_time: datetime
    nonce: str = ""


def exchange_token(service: AuthService, request: TokenRequest) -> dict[str, Any]:
    """Run the grant that ``grant_type`` names and return the token response body.

    Raises OAuthError with the RFC 6749 5.2 error code.
    """
    grant_type = request.form.get("grant_type")
    if not grant_type:
        raise invalid_request("grant_type is missing")
    handler = GRANT_HANDLERS.get(grant_type)
    if handler is None:
        raise OAuthError(
            "unsupported_grant_type",
            f"grant_type {grant_type!r} is not supported; use one of {', '.join(GRANT_HANDLERS)}",
        )
    credentials = read_client_credentials(request.authorization, request.form)
    return handler(service, request, credentials)


def _authenticated_client(
    service: AuthService, credentials: ClientCredentials, grant_type: str
) -> AuthClient | None:
    with service.database.read_session() as session:
        client = authenticate_client(session, credentials)
    if client is not None:
        require_grant_type(client, grant_type)
    return client


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise invalid_request(f"{name} is missing")
    return value


def password_grant(
    service: AuthService, request: TokenRequest, credentials: ClientCredentials
) -> dict[str, Any]:
    client = _authenticated_client(service, credentials, "password")
    username = _required(request.form, "username")
    password = _required(request.form, "password")
    requested = parse_scope(request.form.get("scope"))
    now = service.clock()
    try:
        user = authenticate_user(service.database, service.settings, username, password, now)
    except LoginFailedError as failure:
        record_login(
            service.audit,
            username if failure.user_known else None,
            request.client_address,
            succeeded=False,
            reason=failure.reason,
            method="password grant",
        )
        raise invalid_grant(LOGIN_FAILED_MESSAGE) from None
    record_login(
        service.audit,
        user.username,
        request.client_address,
        succeeded=True,
        method="password grant",
    )
    tokens = UserTokens(
        user_fk=user.id,
        subject=user.subject,
        client_id=client.client_id if client else "",
        granted=grant_scopes(requested, user.subject.roles),
        requested=requested,
        auth_time=now,
    )
    return _login_response(service, request, tokens, family_id=new_family_id())


def authorization_code_grant(
    service: AuthService, request: TokenRequest, credentials: ClientCredentials
) -> dict[str, Any]:
    client = _authenticated_client(service, credentials, "authorization_code")
    if client is None:
        raise invalid_request("client_id is missing; the authorization code grant needs it")
    code = _required(request.form, "code")
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        row = redeem_authorization_code(
            session,
            code=code,
            client_id=client.client_id,
            redirect_uri=request.form.get("redirect_uri"),
            code_verifier=request.form.get("code_verifier"),
            now=now,
        )
        if row is not None:
            user = session.get(AuthUser, row.user_fk)
            if user is None or user.disabled:
                raise invalid_grant("the user of the authorization code is disabled")
            requested = parse_scope(row.scope)
            tokens = UserTokens(
                user_fk=user.id,
                subject=subject_of_user(user),
                client_id=client.client_id,
                granted=grant_scopes(requested, user.roles.split()),
                requested=requested,
                auth_time=as_utc(row.auth_time),
                nonce=row.nonce,
            )
            row.family_id = new_family_id()
            refresh_token = _issue_refresh_token(service, session, tokens, row.family_id, now)
    if row is None:
        raise invalid_grant(
            "the authorization code was used before; the tokens issued for it are revoked"
        )
    return _token_response(service, request, tokens, refresh_token, now)


def refresh_token_grant(
    service: AuthService, request: TokenRequest, credentials: ClientCredentials
) -> dict[str, Any]:
    client = _authenticated_client(service, credentials, "refresh_token")
    token = _required(request.form, "refresh_token")
    requested = parse_scope(request.form.get("scope"))
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        rotated = use_refresh_token(session, token, client.client_id if client else "", now)
        if rotated is not None:
            login_scope = parse_scope(rotated.scope)
            widened = requested.noctis - login_scope.noctis
            if widened:
                raise invalid_scope(
                    f"a refresh may not add scopes the login did not get: "
                    f"{' '.join(sorted(widened))}"
                )
            narrowed = RequestedScope(requested.noctis or login_scope.noctis, login_scope.oidc)
            tokens = UserTokens(
                user_fk=rotated.user.id,
                subject=subject_of_user(rotated.user),
                client_id=rotated.client_id,
                granted=grant_scopes(narrowed, rotated.user.roles.split()),
                requested=narrowed,
                auth_time=rotated.auth_time,
            )
            refresh_token = issue_refresh_token(
                session,
                user_fk=rotated.user.id,
                family_id=rotated.family_id,
                client_id=rotated.client_id,
                scope=rotated.scope,
                auth_time=rotated.auth_time,
                expires_at=rotated.expires_at,
                now=now,
            )
    if rotated is None:
        raise invalid_grant(
            "the refresh token was used before, so it may have been copied; every token "
            "of this login is revoked, log in again"
        )
    return _token_response(service, request, tokens, refresh_token, now)


def client_credentials_grant(
    service: AuthService, request: TokenRequest, credentials: ClientCredentials
) -> dict[str, Any]:
    if credentials.client_id is None:
        raise invalid_client("the client credentials grant needs the client's id and secret")
    client = _authenticated_client(service, credentials, "client_credentials")
    assert client is not None
    if client.secret_sha256 is None:
        raise unauthorized_client(
            f"client {client.client_id!r} is public; only clients with a secret may use the "
            "client credentials grant"
        )
    requested = parse_scope(request.form.get("scope"))
    roles = tuple(client.roles.split())
    granted = grant_scopes(requested, roles)
    subject = TokenSubject(
        sub=client.client_id,
        preferred_username=client.client_id,
        name=client.name,
        roles=roles,
        is_user=False,
    )
    access_token = issue_access_token(
        service.keys,
        service.settings,
        issuer=request.issuer,
        subject=subject,
        scopes=[scope.value for scope in Scope if scope in granted],
        client_id=client.client_id,
        now=service.clock(),
    )
    logger.info(
        "issued a client credentials token to %s from %s: scope %s",
        client.client_id,
        request.client_address,
        scope_string(granted, ()),
    )
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": service.settings.auth_access_token_lifetime_s,
        "scope": scope_string(granted, ()),
    }


def _issue_refresh_token(
    service: AuthService, session: Session, tokens: UserTokens, family_id: str, now: datetime
) -> str:
    delete_expired_tokens(session, now)
    lifetime = timedelta(seconds=service.settings.auth_refresh_token_lifetime_s)
    return issue_refresh_token(
        session,
        user_fk=tokens.user_fk,
        family_id=family_id,
        client_id=tokens.client_id,
        scope=scope_string(tokens.granted, tokens.requested.oidc),
        auth_time=tokens.auth_time,
        expires_at=tokens.auth_time + lifetime,
        now=now,
    )


def _login_response(
    service: AuthService, request: TokenRequest, tokens: UserTokens, family_id: str
) -> dict[str, Any]:
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        refresh_token = _issue_refresh_token(service, session, tokens, family_id, now)
    return _token_response(service, request, tokens, refresh_token, now)


def _token_response(
    service: AuthService,
    request: TokenRequest,
    tokens: UserTokens,
    refresh_token: str,
    now: datetime,
) -> dict[str, Any]:
    access_token = issue_access_token(
        service.keys,
        service.settings,
        issuer=request.issuer,
        subject=tokens.subject,
        scopes=[scope.value for scope in Scope if scope in tokens.granted],
        client_id=tokens.client_id,
        now=now,
    )
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": service.settings.auth_access_token_lifetime_s,
        "refresh_token": refresh_token,
        "scope": scope_string(tokens.granted, tokens.requested.oidc),
    }
    if tokens.requested.wants_id_token and tokens.client_id:
        body["id_token"] = issue_id_token(
            service.keys,
            service.settings,
            issuer=request.issuer,
            subject=tokens.subject,
            client_id=tokens.client_id,
            auth_time=tokens.auth_time,
            nonce=tokens.nonce,
            access_token=access_token,
            now=now,
        )
    logger.info(
        "issued tokens to %s (client %s) from %s: scope %s",
        tokens.subject.sub,
        tokens.client_id or "none",
        request.client_address,
        body["scope"],
    )
    return body


GrantHandler = Callable[[AuthService, TokenRequest, ClientCredentials], dict[str, Any]]
GRANT_HANDLERS: dict[str, GrantHandler] = {
    "authorization_code": authorization_code_grant,
    "refresh_token": refresh_token_grant,
    "password": password_grant,
    "client_credentials": client_credentials_grant,
}


def revoke_token(service: AuthService, form: Mapping[str, str], authorization: str | None) -> None:
    """Revoke a refresh token's family for the client it was issued to (RFC 7009 2.1).

    An unknown token, another client's token and an access token get the same response
    as a revoked one, as RFC 7009 2.2 specifies, so that the response reveals nothing.
    """
    token = _required(form, "token")
    with service.database.write_session() as session, session.begin():
        client = authenticate_client(session, read_client_credentials(authorization, form))
        revoked = revoke_refresh_token(
            session, token, client.client_id if client else "", service.clock()
        )
    if revoked:
        logger.info(
            "revoked a refresh token family for client %s", client.client_id if client else "none"
        )
