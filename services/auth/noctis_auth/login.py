"""The authorization endpoint: show the login form, check the login, redirect with a code."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from noctis_auth.authorization import (
    REQUEST_PARAMETERS,
    AuthorizationPageError,
    AuthorizationRequest,
    check_authorization_request,
    error_redirect,
    issue_authorization_code,
    redirect_uri_with,
)
from noctis_auth.clients import find_client
from noctis_auth.clock import as_utc
from noctis_auth.errors import OAuthError
from noctis_auth.login_csrf import FIELD_NAME as CSRF_FIELD_NAME
from noctis_auth.login_csrf import (
    INVALID_FORM_MESSAGE,
    InvalidLoginFormError,
    browser_value,
    check_form_token,
    form_token,
    set_csrf_cookie,
)
from noctis_auth.login_events import record_login
from noctis_auth.login_page import (
    error_page,
    forbidden_form_page,
    login_page,
    too_many_attempts_page,
)
from noctis_auth.login_session import read_session, session_user, set_session_cookie
from noctis_auth.state import AuthService
from noctis_auth.throttle import retry_after_message
from noctis_auth.users import LOGIN_FAILED_MESSAGE, LoginFailedError, authenticate_user

logger = logging.getLogger(__name__)


def _checked_request(
    service: AuthService, parameters: Mapping[str, str]
) -> AuthorizationRequest | Response:
    """Return the checked request, or the page or redirect that reports its error."""
    try:
        with service.database.read_session() as session:
            request, error = check_authorization_request(session, parameters)
    except AuthorizationPageError as page_error:
        return error_page(str(page_error))
    if error is not None:
        return RedirectResponse(error_redirect(request.redirect_uri, error, request.state), 303)
    return request


def _client_name(service: AuthService, client_id: str) -> str:
    with service.database.read_session() as session:
        client = find_client(session, client_id)
    return (client.name if client is not None else "") or client_id


def _carried_parameters(parameters: Mapping[str, str]) -> dict[str, str]:
    return {name: parameters[name] for name in REQUEST_PARAMETERS if name in parameters}


def _redirect_with_code(
    service: AuthService,
    request: AuthorizationRequest,
    *,
    user_fk: int,
    auth_time: datetime,
    now: datetime,
) -> RedirectResponse:
    """Return the redirect to the client with a new code (RFC 6749 4.1.2)."""
    with service.database.write_session() as session, session.begin():
        code = issue_authorization_code(
            session,
            request,
            user_fk=user_fk,
            auth_time=auth_time,
            lifetime_s=service.settings.auth_authorization_code_lifetime_s,
            now=now,
        )
    response_parameters = {"code": code}
    if request.state:
        response_parameters["state"] = request.state
    return RedirectResponse(redirect_uri_with(request.redirect_uri, response_parameters), 303)


def show_login_form(
    service: AuthService, http_request: Request, issuer: str, client_address: str
) -> Response:
    """Return the login form for a GET on the authorization endpoint (RFC 6749 4.1.1).

    With a valid login session the response is the redirect with a code instead.
    """
    parameters = dict(http_request.query_params)
    checked = _checked_request(service, parameters)
    if isinstance(checked, Response):
        return checked
    prompts = parameters.get("prompt", "").split()
    if "login" not in prompts:
        login_session = read_session(http_request, service.keys, service.settings, issuer)
        if login_session is not None:
            with service.database.read_session() as session:
                user = session_user(session, login_session)
                user_fk = user.id if user is not None else None
            if user_fk is not None:
                logger.info(
                    "authorized %s for client %s from %s by their login session",
                    login_session.username,
                    checked.client_id,
                    client_address,
                )
                return _redirect_with_code(
                    service,
                    checked,
                    user_fk=user_fk,
                    auth_time=login_session.auth_time,
                    now=service.clock(),
                )
    if "none" in prompts:
        error = OAuthError(
            "login_required", "the user must log in; send the request without prompt=none"
        )
        return RedirectResponse(error_redirect(checked.redirect_uri, error, checked.state), 303)
    return _login_form(
        service,
        browser_value(http_request),
        issuer,
        _carried_parameters(parameters),
        checked.client_id,
    )


def _login_form(
    service: AuthService,
    browser: str,
    issuer: str,
    parameters: Mapping[str, str],
    client_id: str,
    *,
    username: str = "",
    error: str = "",
) -> Response:
    """Return the login form with a CSRF token bound to ``browser`` and ``parameters``."""
    csrf_token = form_token(
        service.keys,
        issuer=issuer,
        browser=browser,
        request_parameters=parameters,
        now=service.clock(),
    )
    page = login_page(
        parameters,
        client_name=_client_name(service, client_id),
        csrf_token=csrf_token,
        username=username,
        error=error,
    )
    set_csrf_cookie(page, browser, issuer)
    return page


def submit_login_form(
    service: AuthService,
    form: Mapping[str, str],
    issuer: str,
    client_address: str,
    csrf_cookie: str | None,
) -> Response:
    """Check the login form's POST and redirect with a code (RFC 6749 4.1.2).

    A successful login also starts a login session (:mod:`noctis_auth.login_session`).
    A failed one returns the form again, with one message for every reason. A post
    without a valid CSRF token gets a 403 page. A post from a client address that failed
    too often gets a 429 page (:mod:`noctis_auth.throttle`). Neither checks the password.
    """
    parameters = _carried_parameters(form)
    checked = _checked_request(service, parameters)
    if isinstance(checked, Response):
        return checked
    try:
        check_form_token(
            service.keys,
            issuer=issuer,
            cookie_value=csrf_cookie,
            token=form.get(CSRF_FIELD_NAME),
            request_parameters=parameters,
            now=service.clock(),
        )
    except InvalidLoginFormError as rejection:
        logger.warning(
            "rejected a login form of client %s from %s: %s",
            checked.client_id,
            client_address,
            rejection,
        )
        return forbidden_form_page(INVALID_FORM_MESSAGE)
    assert csrf_cookie is not None  # check_form_token rejects a missing cookie
    retry_after_s = service.throttle.retry_after_s(client_address)
    if retry_after_s is not None:
        return too_many_attempts_page(
            retry_after_message(client_address, retry_after_s), retry_after_s
        )
    username = form.get("username", "")
    method = f"login page of client {checked.client_id}"
    now = service.clock()
    try:
        user = authenticate_user(
            service.database, service.settings, username, form.get("password", ""), now
        )
    except LoginFailedError as failure:
        service.throttle.record_failure(client_address)
        record_login(
            service.audit,
            username if failure.user_known else None,
            client_address,
            succeeded=False,
            reason=failure.reason,
            method=method,
        )
        return _login_form(
            service,
            csrf_cookie,
            issuer,
            parameters,
            checked.client_id,
            username=username,
            error=LOGIN_FAILED_MESSAGE,
        )
    record_login(service.audit, user.username, client_address, succeeded=True, method=method)
    response = _redirect_with_code(service, checked, user_fk=user.id, auth_time=now, now=now)
    set_session_cookie(
        response,
        service.keys,
        service.settings,
        issuer=issuer,
        username=user.username,
        password_changed_at=as_utc(user.password_changed_at),
        auth_time=now,
        now=now,
    )
    return response
