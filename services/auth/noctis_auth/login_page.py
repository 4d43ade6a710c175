"""The plain HTML pages of the authorization endpoint: login form, errors, signed out.

The pages load nothing else and run no script. Their headers forbid caching and
framing (against clickjacking) and send no Referer to the next page.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from fastapi.responses import HTMLResponse

from noctis_auth.login_csrf import FIELD_NAME as CSRF_FIELD_NAME

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

STYLE = """
body { font-family: sans-serif; background: #10141c; color: #e8ecf2; margin: 0; }
main { max-width: 22rem; margin: 12vh auto; padding: 2rem; background: #1b2230;
       border-radius: 8px; }
h1 { font-size: 1.3rem; margin-top: 0; }
label { display: block; margin: 1rem 0 0.3rem; }
input[type=text], input[type=password] { width: 100%; box-sizing: border-box;
       padding: 0.5rem; font-size: 1rem; }
button { margin-top: 1.5rem; width: 100%; padding: 0.6rem; font-size: 1rem; }
.error { background: #5c1f24; padding: 0.6rem; border-radius: 4px; }
.client { color: #9aa7bd; font-size: 0.9rem; }
"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def login_page(
    request_parameters: Mapping[str, str],
    *,
    client_name: str,
    csrf_token: str,
    username: str = "",
    error: str = "",
) -> HTMLResponse:
    """Return the login form, which posts back to the authorization endpoint.

    Hidden fields carry the parameters of the authorization request along, and the
    form's CSRF token (:mod:`noctis_auth.login_csrf`).
    """
    hidden_fields = {**request_parameters, CSRF_FIELD_NAME: csrf_token}
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in hidden_fields.items()
    )
    error_html = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        "<h1>Noctis login</h1>"
        f'<p class="client">to continue to {escape(client_name)}</p>'
        f"{error_html}"
        '<form method="post" action="authorize">'
        f"{hidden}"
        '<label for="username">Username</label>'
        f'<input id="username" name="username" type="text" value="{escape(username)}" '
        'autocomplete="username" autocapitalize="none" required autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Log in</button>'
        "</form>"
    )
    return _page("Noctis login", body)


def error_page(message: str, status_code: int = 400) -> HTMLResponse:
    """Return a page for an authorization request that cannot go back to its client."""
    body = (
        "<h1>Login request rejected</h1>"
        f'<p class="error" role="alert">{escape(message)}</p>'
        "<p>Go back to the application and start again, or ask an administrator to check "
        "its client registration.</p>"
    )
    return _page("Login request rejected", body, status_code)


def forbidden_form_page(message: str) -> HTMLResponse:
    """Return the 403 page for a login form posted without a valid CSRF token."""
    body = f'<h1>Login form rejected</h1><p class="error" role="alert">{escape(message)}</p>'
    return _page("Login form rejected", body, 403)


def too_many_attempts_page(message: str, retry_after_s: int) -> HTMLResponse:
    """Return the 429 page of a client address that failed to log in too often."""
    body = (
        "<h1>Too many failed logins</h1>"
        f'<p class="error" role="alert">{escape(message)}</p>'
        "<p>Go back to the application and log in again after that time.</p>"
    )
    response = _page("Too many failed logins", body, 429)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def signed_out_page() -> HTMLResponse:
    return _page("Signed out", "<h1>Signed out</h1><p>You can close this window.</p>")
