"""Client authentication at the token and revocation endpoints (RFC 6749 2.3).

A confidential client sends its ``client_id`` and secret either with HTTP Basic
(``client_secret_basic``) or as form parameters (``client_secret_post``). A public
client, such as a browser viewer, has no secret and sends only its ``client_id``
(``none``), so it must use PKCE for the authorization code grant.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis_auth.errors import invalid_client, invalid_request, unauthorized_client
from noctis_auth.opaque import matches_sha256
from noctis_common.db.models import AuthClient

GRANT_TYPES = ("authorization_code", "refresh_token", "password", "client_credentials")
PUBLIC_CLIENT_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})


@dataclass(frozen=True)
class ClientCredentials:
    """The client identification a request carried, before it is checked."""

    client_id: str | None
    client_secret: str | None


def _parse_basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client(
            f"unsupported authorization scheme {scheme!r} for client authentication; use "
            "Basic, or client_id and client_secret form parameters"
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("the Basic credentials are not valid base64 of UTF-8") from None
    client_id, separator, client_secret = decoded.partition(":")
    if not separator or not client_id:
        raise invalid_client("the Basic credentials have no 'client_id:client_secret' form")
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64 encoding.
    return unquote_plus(client_id), unquote_plus(client_secret)


def read_client_credentials(
    authorization: str | None, form: Mapping[str, str]
) -> ClientCredentials:
    """Return the client credentials of a request; the two methods may not be mixed."""
    form_client_id = form.get("client_id") or None
    form_secret = form.get("client_secret") or None
    if not authorization:
        if form_secret is not None and form_client_id is None:
            raise invalid_request("client_secret was sent without client_id")
        return ClientCredentials(form_client_id, form_secret)
    client_id, client_secret = _parse_basic(authorization)
    if form_secret is not None:
        raise invalid_request(
            "the client authenticated twice, with HTTP Basic and with client_secret; use one"
        )
    if form_client_id is not None and form_client_id != client_id:
        raise invalid_request("client_id differs from the client of the Basic credentials")
    return ClientCredentials(client_id, client_secret)


def find_client(session: Session, client_id: str) -> AuthClient | None:
    """Return the client ``client_id``, or None; a NUL, which PostgreSQL rejects, names none."""
    if "\x00" in client_id:
        return None
    return session.scalars(select(AuthClient).where(AuthClient.client_id == client_id)).first()


def authenticate_client(session: Session, credentials: ClientCredentials) -> AuthClient | None:
    """Return the client the credentials identify, or None when they name no client.

    Raises ``invalid_client`` for an unknown or disabled client, a wrong or missing
    secret, and a secret sent for a public client.
    """
    if credentials.client_id is None:
        return None
    client = find_client(session, credentials.client_id)
    if client is None or client.disabled:
        raise invalid_client(f"client {credentials.client_id!r} is unknown or disabled")
    if client.secret_sha256 is None:
        if credentials.client_secret is not None:
            raise invalid_client(
                f"client {client.client_id!r} is public and has no secret; send only client_id"
            )
        return client
    if credentials.client_secret is None:
        raise invalid_client(
            f"client {client.client_id!r} must authenticate with its secret (HTTP Basic or "
            "client_secret)"
        )
    if not matches_sha256(credentials.client_secret, client.secret_sha256):
        raise invalid_client(f"wrong secret for client {client.client_id!r}")
    return client


def require_grant_type(client: AuthClient, grant_type: str) -> None:
    """Raise ``unauthorized_client`` unless ``client`` is registered for ``grant_type``."""
    if grant_type not in client.grant_types.split():
        raise unauthorized_client(
            f"client {client.client_id!r} may not use the {grant_type} grant; its grant "
            f"types are: {client.grant_types or 'none'}"
        )
