"""The authorization code grant with PKCE (RFC 6749 4.1, RFC 7636).

The authorization endpoint checks the request, shows the login form and, once the user
has logged in, redirects to the client's ``redirect_uri`` with a one-time code. The
client exchanges the code and its ``code_verifier`` at the token endpoint.

Rules, stricter than RFC 6749 where OAuth 2.0 Security Best Current Practice (RFC 9700)
recommends it:

- ``redirect_uri`` must equal one of the client's registered URIs, character for
  character; it may be left out only when the client registered exactly one.
- Every request carries a PKCE ``code_challenge`` with ``code_challenge_method=S256``;
  the ``plain`` method is rejected.
- A code is valid for NOCTIS_AUTH_AUTHORIZATION_CODE_LIFETIME_S and for one exchange;
  a second exchange also revokes the refresh tokens issued for the first (RFC 6749
  4.1.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from noctis_auth.clients import find_client
from noctis_auth.clock import as_utc
from noctis_auth.errors import OAuthError, invalid_grant, invalid_request
from noctis_auth.opaque import new_opaque_value, sha256_hex
from noctis_auth.refresh_tokens import revoke_family
from noctis_auth.scopes import parse_scope
from noctis_common.db.models import AuthAuthorizationCode, AuthClient

# RFC 7636 4.1: 43 to 128 characters of the unreserved set.
CODE_VERIFIER_PATTERN = re.compile(r"[A-Za-z0-9._~-]{43,128}")
# BASE64URL of a SHA-256 digest, without padding.
S256_CHALLENGE_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_STATE_LENGTH = 1024
MAX_NONCE_LENGTH = 255
# Parameters of an authorization request that the login form carries along.
REQUEST_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "prompt",
)


class AuthorizationPageError(Exception):
    """An authorization request that cannot be redirected back to its client.

    RFC 6749 4.1.2.1: with an unknown client or an unregistered redirect URI the user
    sees the error instead of being redirected.
    """


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked authorization request."""

    client_id: str
    # The URI the user is sent back to: the request's redirect_uri, or the client's only one.
    redirect_uri: str
    # The redirect_uri parameter as sent, empty when it was left out; the token request
    # must repeat it (RFC 6749 4.1.3).
    requested_redirect_uri: str
    scope: str
    state: str
    nonce: str
    code_challenge: str


def redirect_uri_with(redirect_uri: str, parameters: Mapping[str, str]) -> str:
    """Return ``redirect_uri`` with ``parameters`` added to its query."""
    parts = urlsplit(redirect_uri)
    query = urlencode(parameters)
    query = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def error_redirect(redirect_uri: str, error: OAuthError, state: str) -> str:
    """Return the redirect that reports ``error`` to the client (RFC 6749 4.1.2.1)."""
    parameters = {"error": error.error, "error_description": error.description}
    if state:
        parameters["state"] = state
    return redirect_uri_with(redirect_uri, parameters)


def _registered_redirect_uri(client: AuthClient, redirect_uri: str | None) -> str:
    registered = client.redirect_uris.split()
    if redirect_uri is None:
        if len(registered) == 1:
            return registered[0]
        raise AuthorizationPageError(
            f"the request has no redirect_uri, and client {client.client_id!r} registered "
            f"{len(registered)} redirect URIs; send one of them"
        )
    if redirect_uri not in registered:
        raise AuthorizationPageError(
            f"redirect_uri {redirect_uri!r} is not registered for client "
            f"{client.client_id!r}; an administrator can add it to the client"
        )
    return redirect_uri


def check_authorization_request(
    session: Session, parameters: Mapping[str, str]
) -> tuple[AuthorizationRequest, OAuthError | None]:
    """Check an authorization request.

    Raises AuthorizationPageError when no redirect is allowed. Returns the request and
    None when it is valid, or the request and the error to redirect with.
    """
    client_id = parameters.get("client_id")
    if not client_id:
        raise AuthorizationPageError("the request has no client_id")
    client = find_client(session, client_id)
    if client is None or client.disabled:
        raise AuthorizationPageError(f"client {client_id!r} is unknown or disabled")
    redirect_uri = _registered_redirect_uri(client, parameters.get("redirect_uri"))
    state = parameters.get("state", "")
    request = AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        requested_redirect_uri=parameters.get("redirect_uri", ""),
        scope=parameters.get("scope", ""),
        state=state[:MAX_STATE_LENGTH],
        nonce=parameters.get("nonce", ""),
        code_challenge=parameters.get("code_challenge", ""),
    )
    return request, _request_error(client, parameters, state)


def _request_error(
    client: AuthClient, parameters: Mapping[str, str], state: str
) -> OAuthError | None:
    response_type = parameters.get("response_type")
    if response_type != "code":
        return OAuthError(
            "unsupported_response_type",
            f"response_type {response_type!r} is not supported; use 'code'",
        )
    if "authorization_code" not in client.grant_types.split():
        return OAuthError(
            "unauthorized_client",
            f"client {client.client_id!r} may not use the authorization code grant",
        )

    if parameters.get("response_mode", "query") != "query":
        return invalid_request("only response_mode 'query' is supported")
    if len(state) > MAX_STATE_LENGTH:
        return invalid_request(f"state is longer than {MAX_STATE_LENGTH} characters")
    if len(parameters.get("nonce", "")) > MAX_NONCE_LENGTH:
        return invalid_request(f"nonce is longer than {MAX_NONCE_LENGTH} characters")

    challenge = parameters.get("code_challenge")
    if not challenge:
        return invalid_request(
            "code_challenge is missing; every client must use PKCE with the S256 method"
        )
    method = parameters.get("code_challenge_method", "plain")
    if method != "S256":
        return invalid_request(
            f"code_challenge_method {method!r} is not supported; use S256 (RFC 7636 4.2)"
        )
    if not S256_CHALLENGE_PATTERN.fullmatch(challenge):
        return invalid_request(
            "code_challenge is no S256 challenge: send BASE64URL(SHA256(code_verifier)), "
            "43 characters without padding"
        )

    try:
        parse_scope(parameters.get("scope"))
    except OAuthError as error:
        return error
    return None


def issue_authorization_code(
    session: Session,
    request: AuthorizationRequest,
    *,
    user_fk: int,
    auth_time: datetime,
    lifetime_s: int,
    now: datetime,
) -> str:
    """Add a one-time code for ``request`` to ``session`` and return it."""
    session.execute(
        delete(AuthAuthorizationCode).where(
            AuthAuthorizationCode.expires_at < now - timedelta(days=1)
        )
    )
    code = new_opaque_value()
    session.add(
        AuthAuthorizationCode(
            code_sha256=sha256_hex(code),
            client_id=request.client_id,
            user_fk=user_fk,
            redirect_uri=request.requested_redirect_uri,
            scope=request.scope,
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            auth_time=auth_time,
            expires_at=now + timedelta(seconds=lifetime_s),
        )
    )
    return code


def s256_challenge(code_verifier: str) -> str:
    """Return BASE64URL(SHA256(ASCII(code_verifier))) (RFC 7636 4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def redeem_authorization_code(
    session: Session,
    *,
    code: str,
    client_id: str,
    redirect_uri: str | None,
    code_verifier: str | None,
    now: datetime,
) -> AuthAuthorizationCode | None:
    """Mark ``code`` used and return its row, after every check of RFC 6749 4.1.3.

    Returns None after revoking the refresh tokens issued for the code when it was
    used before; the caller commits that and rejects the request. Raises
    ``invalid_request`` for a missing or malformed ``code_verifier`` and
    ``invalid_grant`` for every other failed check.
    """
    if not code_verifier:
        raise invalid_request("code_verifier is missing; send the PKCE verifier of the code")
    if not CODE_VERIFIER_PATTERN.fullmatch(code_verifier):
        raise invalid_request(
            "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~'"
        )
    row = session.scalars(
        select(AuthAuthorizationCode)
        .where(AuthAuthorizationCode.code_sha256 == sha256_hex(code))
        .with_for_update()
    ).first()
    if row is None:
        raise invalid_grant("the authorization code is unknown")
    if row.client_id != client_id:
        raise invalid_grant("the authorization code was issued to another client")
    if row.used_at is not None:
        if row.family_id:
            revoke_family(session, row.family_id, now)
        return None
    if as_utc(row.expires_at) <= now:
        raise invalid_grant("the authorization code expired; start the login again")
    if (redirect_uri or "") != row.redirect_uri:
        raise invalid_grant("redirect_uri differs from the one of the authorization request")
    if not hmac.compare_digest(s256_challenge(code_verifier), row.code_challenge):
        raise invalid_grant("code_verifier does not match the code_challenge (PKCE S256)")
    row.used_at = now
    return row
