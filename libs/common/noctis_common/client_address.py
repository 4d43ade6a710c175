"""The address of the client that sent an HTTP request, behind a reverse proxy or not."""

from __future__ import annotations

from starlette.requests import Request

from noctis_common.settings import Settings


def _forwarded_for(header: str) -> str | None:
    """Return the ``for`` address of the last element of an RFC 7239 ``Forwarded`` header."""
    last_element = header.rsplit(",", 1)[-1]
    for pair in last_element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.strip().lower() == "for" and value.strip():
            address = value.strip().strip('"')
            if address.startswith("["):  # an IPv6 address, maybe with a port
                return address[1:].split("]", 1)[0]
            return address
    return None


def request_client_address(request: Request, settings: Settings) -> str:
    """Return the address of the client that sent ``request``.

    It is the TCP peer's address unless ``NOCTIS_TRUST_FORWARDED_HEADERS`` is on. Then
    it is the address that the nearest reverse proxy appended to ``Forwarded`` or
    ``X-Forwarded-For``: their last entry, because earlier entries come from the
    client and could be forged. A client that reaches the server without a proxy can
    choose that address, so turn the setting off where no proxy is in front.
    """
    if settings.trust_forwarded_headers:
        forwarded = ",".join(request.headers.getlist("forwarded"))
        address = _forwarded_for(forwarded) if forwarded else None
        if address is None:
            entries = ",".join(request.headers.getlist("x-forwarded-for")).split(",")
            address = entries[-1].strip() or None
        if address is not None:
            return address
    return request.client.host if request.client else "unknown"
