"""Keeps secrets that clients put in URLs out of the HTTP access log.

uvicorn logs each request line with its query string. OpenID Connect clients send an
ID token in the ``id_token_hint`` of the logout URL, and a client may put other
credentials into a query by mistake, so the values of those parameters are replaced
before the line is written.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "client_secret",
        "code",
        "code_verifier",
        "id_token",
        "id_token_hint",
        "password",
        "refresh_token",
        "token",
    }
)
REDACTED = "REDACTED"
ACCESS_LOGGER = "uvicorn.access"


def redact_query(path: str) -> str:
    """Return ``path`` with the values of SECRET_PARAMETERS in its query replaced."""
    base, separator, query = path.partition("?")
    if not separator:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
        return path
    redacted = [
        (name, REDACTED if name.lower() in SECRET_PARAMETERS else value) for name, value in pairs
    ]
    return f"{base}?{urlencode(redacted)}"


class AccessLogRedactionFilter(logging.Filter):
    """Redacts the request path of uvicorn's access log records (client, method, path, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        arguments = record.args
        if isinstance(arguments, tuple) and len(arguments) >= 3 and isinstance(arguments[2], str):
            record.args = (*arguments[:2], redact_query(arguments[2]), *arguments[3:])
        return True


def install_access_log_redaction() -> None:
    """Add the redaction filter to uvicorn's access logger, once."""
    access_logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(item, AccessLogRedactionFilter) for item in access_logger.filters):
        access_logger.addFilter(AccessLogRedactionFilter())
