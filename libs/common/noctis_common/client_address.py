"""The address of the client that sent an HTTP request, behind a reverse proxy or not.

Forwarded headers (RFC 7239 ``Forwarded``, ``X-Forwarded-*``) are believed only when the
TCP peer is a trusted proxy (``NOCTIS_TRUSTED_PROXIES``), because any client can send
them. Otherwise a client that reaches the server directly would choose the address that
login throttling counts and the audit trail records.
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request

from noctis_common.settings import Settings


def _forwarded_for_entries(header: str) -> list[str]:
    """Return the ``for`` addresses of an RFC 7239 ``Forwarded`` header, in order."""
    addresses: list[str] = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.strip().lower() == "for" and value.strip():
                address = value.strip().strip('"')
                if address.startswith("["):  # an IPv6 address, maybe with a port
                    address = address[1:].split("]", 1)[0]
                addresses.append(address)
    return addresses


def is_trusted_proxy(address: str | None, settings: Settings) -> bool:
    """Return whether forwarded headers from the peer ``address`` are believed."""
    if not settings.trust_forwarded_headers or address is None:
        return False
    networks = settings.trusted_proxy_networks
    if networks is None:
        return True
    try:
        ip_address = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip_address in network for network in networks)


def forwarded_headers_trusted(request: Request, settings: Settings) -> bool:
    """Return whether ``request`` came from a trusted proxy, so its forwarded headers count."""
    return is_trusted_proxy(request.client.host if request.client else None, settings)


def request_client_address(request: Request, settings: Settings) -> str:
    """Return the address of the client that sent ``request``.

    It is the TCP peer's address unless that peer is a trusted proxy. Then it is the
    last address of ``Forwarded`` (or else ``X-Forwarded-For``) that is not a trusted
    proxy itself. Each proxy appends the address it received the request from, so
    the entries left of the first untrusted one from the right could be forged.
    """
    peer = request.client.host if request.client else None
    if peer is None:
        return "unknown"
    if not is_trusted_proxy(peer, settings):
        return peer
    forwarded = ",".join(request.headers.getlist("forwarded"))
    entries = _forwarded_for_entries(forwarded) if forwarded else []
    if not entries:
        header = ",".join(request.headers.getlist("x-forwarded-for"))
        entries = [entry.strip() for entry in header.split(",") if entry.strip()]
    address = peer
    for entry in reversed(entries):
        address = entry
        if not is_trusted_proxy(entry, settings):
            break
    return address
