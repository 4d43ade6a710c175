"""Every route of the token service, under ``/auth``.

OAuth 2.0 and OpenID Connect:

- ``GET /auth/.well-known/openid-configuration``: discovery (OpenID Connect Discovery 1.0)
- ``GET /auth/jwks``: the public signing keys (RFC 7517)
- ``GET|POST /auth/authorize``: login form of the authorization code grant (RFC 6749 4.1)
- ``POST /auth/token``: the token endpoint (RFC 6749 3.2)
- ``POST /auth/revoke``: refresh token revocation (RFC 7009)
- ``GET|POST /auth/userinfo``: the token holder's claims (OpenID Connect Core 5.3)
- ``GET /auth/logout``: RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)

For logged-in users: ``GET|PUT /auth/preferences``. For holders of the ``admin``
scope: ``/auth/admin/users``, ``/auth/admin/clients`` and ``/auth/admin/keys``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse

from noctis_auth import admin
from noctis_auth.authorization import redirect_uri_with
from noctis_auth.bearer import AdminPrincipal, Bearer
from noctis_auth.clients import find_client
from noctis_auth.discovery import openid_configuration
from noctis_auth.errors import (
    CREDENTIAL_ERRORS,
    NO_STORE_HEADERS,
    OAuthError,
    invalid_request,
    oauth_error_response,
    throttled_response,
)
from noctis_auth.grants import TokenRequest, exchange_token, revoke_token
from noctis_auth.keys import SigningKeyError, is_published
from noctis_auth.login import show_login_form, submit_login_form
from noctis_auth.login_csrf import COOKIE_NAME as CSRF_COOKIE_NAME
from noctis_auth.login_page import error_page, signed_out_page
from noctis_auth.login_session import clear_session_cookie
from noctis_auth.preferences import read_preferences, write_preferences
from noctis_auth.schemas import (
    ClientCreate,
    ClientCreated,
    ClientPublic,
    ClientSecret,
    ClientUpdate,
    PasswordReset,
    SigningKeyPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from noctis_auth.state import Auth, AuthService
from noctis_auth.throttle import retry_after_message
from noctis_auth.tokens import decode_id_token_hint, jwks_document, resolve_issuer
from noctis_common.client_address import request_client_address

router = APIRouter(prefix="/auth", tags=["Auth"])

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# Larger form bodies are rejected before parsing; OAuth requests take a few hundred bytes.
MAX_FORM_BYTES = 64 * 1024
# Clients may cache the JWKS this long; a verifier that meets an unknown kid fetches again.
JWKS_MAX_AGE_S = 300


def _client_address(request: Request, service: AuthService) -> str:
    return request_client_address(request, service.settings)


async def read_form(request: Request) -> dict[str, str]:
    """Return the parameters of an ``application/x-www-form-urlencoded`` body.

    Raises OAuthError ``invalid_request`` for another media type, a body over
    MAX_FORM_BYTES, a parameter sent twice (RFC 6749 3.1 and 3.2), and a NUL character.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise invalid_request(f"send the parameters as {FORM_MEDIA_TYPE}, not {media_type!r}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise invalid_request(f"the request body is larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise invalid_request("the request body is not UTF-8") from None
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            raise invalid_request(f"parameter {name!r} is sent more than once")
        # No valid value contains NUL, and PostgreSQL rejects it in a query.
        if "\x00" in name or "\x00" in value:
            raise invalid_request(f"parameter {name!r} contains a NUL character")
        parameters[name] = value
    return parameters


@router.get("/.well-known/openid-configuration")
def get_openid_configuration(request: Request, service: Auth) -> JSONResponse:
    """Return the OpenID Connect discovery document."""
    issuer = resolve_issuer(request, service.settings)
    return JSONResponse(openid_configuration(issuer, service.settings))


@router.get("/jwks")
def get_jwks(service: Auth) -> JSONResponse:
    """Return the public keys that verify tokens of this service (JWKS)."""
    return JSONResponse(
        jwks_document(service.keys),
        headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"},
    )


@router.get("/authorize")
def get_authorize(request: Request, service: Auth) -> Response:
    """Show the login form of the authorization code grant, or skip it for a session."""
    issuer = resolve_issuer(request, service.settings)
    return show_login_form(service, request, issuer, _client_address(request, service))


@router.post("/authorize")
async def post_authorize(request: Request, service: Auth) -> Response:
    """Log the user in and redirect to the client with an authorization code."""
    try:
        form = await read_form(request)
    except OAuthError as error:
        return error_page(error.description)
    issuer = resolve_issuer(request, service.settings)
    return await run_in_threadpool(
        submit_login_form,
        service,
        form,
        issuer,
        _client_address(request, service),
        request.cookies.get(CSRF_COOKIE_NAME),
    )


@router.post("/token")
async def post_token(request: Request, service: Auth) -> JSONResponse:
    """Issue tokens for one of the four grants (RFC 6749 3.2).

    A client address that has used up its failed logins gets 429 with ``Retry-After``
    before any credential is checked (:mod:`noctis_auth.throttle`).
    """
    client_address = _client_address(request, service)
    retry_after_s = service.throttle.retry_after_s(client_address)
    if retry_after_s is not None:
        return throttled_response(retry_after_message(client_address, retry_after_s), retry_after_s)
    try:
        form = await read_form(request)
        token_request = TokenRequest(
            form=form,
            authorization=request.headers.get("authorization"),
            issuer=resolve_issuer(request, service.settings),
            client_address=client_address,
        )
        body = await run_in_threadpool(exchange_token, service, token_request)
    except OAuthError as error:
        if error.error in CREDENTIAL_ERRORS:
            service.throttle.record_failure(client_address)
        return oauth_error_response(error)
    return JSONResponse(body, headers=NO_STORE_HEADERS)


@router.post("/revoke")
async def post_revoke(request: Request, service: Auth) -> Response:
    """Revoke a refresh token and its family (RFC 7009).

    Access tokens cannot be revoked. The response is 200 all the same, as RFC 7009 2.2
    specifies for tokens the server does not revoke, and they expire after
    NOCTIS_AUTH_ACCESS_TOKEN_LIFETIME_S.
    """
    try:
        form = await read_form(request)
        await run_in_threadpool(revoke_token, service, form, request.headers.get("authorization"))
    except OAuthError as error:
        return oauth_error_response(error)
    return Response(status_code=200, headers=NO_STORE_HEADERS)


@router.api_route("/userinfo", methods=["GET", "POST"])
def get_userinfo(claims: Bearer) -> JSONResponse:
    """Return the claims about the token holder (OpenID Connect Core 5.3)."""
    names = ("sub", "preferred_username", "name", "roles", "referring_physician_name")
    return JSONResponse(
        {name: claims.claims[name] for name in names if name in claims.claims},
        headers=NO_STORE_HEADERS,
    )


@router.get("/logout")
def get_logout(request: Request, service: Auth) -> Response:
    """End the login session and go back to a registered URI (RP-Initiated Logout 1.0).

    Clients revoke their refresh token at ``/auth/revoke``; access tokens stay valid
    until they expire.
    """
    issuer = resolve_issuer(request, service.settings)
    parameters = request.query_params
    redirect_uri = parameters.get("post_logout_redirect_uri")
    response: Response
    if not redirect_uri:
        response = signed_out_page()
    else:
        client_id = parameters.get("client_id")
        hint = parameters.get("id_token_hint")
        if not client_id and hint:
            claims = decode_id_token_hint(service.keys, hint)
            client_id = str(claims.get("aud", "")) if claims else None
        with service.database.read_session() as session:
            client = find_client(session, client_id) if client_id else None
            registered = client.post_logout_redirect_uris.split() if client else []
        if redirect_uri not in registered:
            return error_page(
                f"post_logout_redirect_uri {redirect_uri!r} is not registered for client "
                f"{client_id!r}; send client_id or id_token_hint with a registered URI"
            )
        state = parameters.get("state")
        target = redirect_uri_with(redirect_uri, {"state": state}) if state else redirect_uri
        response = RedirectResponse(target, status_code=303)
    clear_session_cookie(response, issuer)
    return response


@router.get("/preferences")
def get_preferences(claims: Bearer, service: Auth) -> dict[str, Any]:
    """Return the viewer and worklist preferences of the logged-in user."""
    return read_preferences(service, claims)


@router.put("/preferences")
def put_preferences(
    claims: Bearer, service: Auth, preferences: Annotated[Any, Body()]
) -> dict[str, Any]:
    """Replace the viewer and worklist preferences of the logged-in user."""
    return write_preferences(service, claims, preferences)


@router.get("/admin/users")
def get_users(principal: AdminPrincipal, service: Auth) -> list[UserPublic]:
    return admin.list_users(service)


@router.post("/admin/users", status_code=status.HTTP_201_CREATED)
def post_user(principal: AdminPrincipal, service: Auth, body: UserCreate) -> UserPublic:
    return admin.create_user(service, body, actor=principal.subject)


@router.get("/admin/users/{username}")
def get_user(principal: AdminPrincipal, service: Auth, username: str) -> UserPublic:
    return admin.get_user(service, username)


@router.patch("/admin/users/{username}")
def patch_user(
    principal: AdminPrincipal, service: Auth, username: str, body: UserUpdate
) -> UserPublic:
    return admin.update_user(service, username, body, actor=principal.subject)


@router.post("/admin/users/{username}/password")
def post_user_password(
    principal: AdminPrincipal, service: Auth, username: str, body: PasswordReset
) -> UserPublic:
    return admin.reset_password(service, username, body, actor=principal.subject)


@router.get("/admin/clients")
def get_clients(principal: AdminPrincipal, service: Auth) -> list[ClientPublic]:
    return admin.list_clients(service)


@router.post("/admin/clients", status_code=status.HTTP_201_CREATED)
def post_client(principal: AdminPrincipal, service: Auth, body: ClientCreate) -> ClientCreated:
    return admin.create_client(service, body, actor=principal.subject)


@router.get("/admin/clients/{client_id}")
def get_client(principal: AdminPrincipal, service: Auth, client_id: str) -> ClientPublic:
    return admin.get_client(service, client_id)


@router.patch("/admin/clients/{client_id}")
def patch_client(
    principal: AdminPrincipal, service: Auth, client_id: str, body: ClientUpdate
) -> ClientPublic:
    return admin.update_client(service, client_id, body, actor=principal.subject)


@router.post("/admin/clients/{client_id}/secret")
def post_client_secret(principal: AdminPrincipal, service: Auth, client_id: str) -> ClientSecret:
    return admin.new_client_secret(service, client_id, actor=principal.subject)


@router.get("/admin/keys")
def get_keys(principal: AdminPrincipal, service: Auth) -> list[SigningKeyPublic]:
    now = service.clock()
    rows = service.keys.list_keys()
    return [
        SigningKeyPublic(
            kid=row.kid,
            algorithm=row.algorithm,
            encrypted=row.encrypted,
            signing=row.rotated_at is None,
            published=is_published(row, now),
            created_at=row.created_at,
            rotated_at=row.rotated_at,
            retired_at=row.retired_at,
        )
        for row in rows
    ]


@router.post("/admin/keys/rotate", status_code=status.HTTP_201_CREATED)
def post_key_rotation(principal: AdminPrincipal, service: Auth) -> dict[str, str]:
    """Create a new signing key; the replaced one stays published for the overlap."""
    return {"kid": service.keys.rotate()}


@router.post("/admin/keys/{kid}/retire", status_code=status.HTTP_204_NO_CONTENT)
def post_key_retirement(principal: AdminPrincipal, service: Auth, kid: str) -> None:
    """Remove a replaced key from the JWKS now; tokens it signed stop verifying."""
    try:
        service.keys.retire(kid)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no signing key {kid!r}") from None
    except SigningKeyError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
