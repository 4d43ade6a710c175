"""OAuth 2.0 error responses (RFC 6749 5.2) and the headers every token response carries."""

from __future__ import annotations

from fastapi.responses import JSONResponse

# RFC 6749 5.1: responses with tokens or credentials must not be cached.
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Errors of wrong credentials: a password, a client secret, a code or a refresh token.
# Each counts as a failed login of the client address (noctis_auth.throttle).
CREDENTIAL_ERRORS = frozenset({"invalid_grant", "invalid_client"})


class OAuthError(Exception):
    """An OAuth 2.0 error: ``error`` is the RFC 6749 code, ``description`` the reason.

    ``description`` is shown to the client, so it never contains a secret.
    """

    def __init__(self, error: str, description: str, status_code: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status_code = status_code


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, status_code=401)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)


def unauthorized_client(description: str) -> OAuthError:
    return OAuthError("unauthorized_client", description)


def oauth_error_response(error: OAuthError) -> JSONResponse:
    """Return the JSON error response of the token or revocation endpoint.

    ``invalid_client`` is a 401 with the HTTP Basic challenge of client authentication
    (RFC 6749 5.2), every other error a 400.
    """
    headers = dict(NO_STORE_HEADERS)
    if error.status_code == 401:
        headers["WWW-Authenticate"] = 'Basic realm="noctis"'
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status_code,
        headers=headers,
    )


def throttled_response(description: str, retry_after_s: int) -> JSONResponse:
    """Return the 429 of a client address that failed to log in too often.

    RFC 6749 defines no error code for it; ``temporarily_unavailable`` is the code
    that OAuth clients already treat as "try again later".
    """
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": description},
        status_code=429,
        headers={**NO_STORE_HEADERS, "Retry-After": str(retry_after_s)},
    )
