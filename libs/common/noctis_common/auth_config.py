"""Checks of the access control settings, run when :class:`Settings` is built.

The secure default: with ``NOCTIS_AUTH_MODE=off`` the HTTP listener must bind a
loopback address, so an archive without authentication is reachable from this machine
only. A process configured otherwise fails at start-up, before it binds anything, with
a message naming the settings that configure authentication.

The rule covers the HTTP listener (DICOMweb, WADO-URI, the admin APIs, and the metrics
port, which shares ``http_host``). The DIMSE listener does not use tokens: its peer list
decides what each calling AE title may do, whatever the auth mode.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from noctis_common.roles import ROLE_NAMES

if TYPE_CHECKING:
    from noctis_common.settings import Settings

LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class InsecureConfigurationError(ValueError):
    """The settings would expose patient data without authentication, or cannot work."""


def is_loopback_host(host: str) -> bool:
    """Return whether ``host`` (an address or host name) is on the loopback interface.

    Host names other than ``localhost`` count as not loopback, because they can
    resolve to any address.
    """
    name = host.strip().strip("[]").lower()
    if name in LOCALHOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_trusted_proxies(text: str) -> list[IPv4Network | IPv6Network] | None:
    """Parse comma-separated addresses and CIDR networks; return ``None`` for '*'.

    Raises :class:`InsecureConfigurationError` naming an entry that is neither.
    """
    entries = [item.strip() for item in text.split(",") if item.strip()]
    if entries == ["*"]:
        return None
    networks: list[IPv4Network | IPv6Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as error:
            raise InsecureConfigurationError(
                f"invalid NOCTIS_TRUSTED_PROXIES entry {entry!r}: {error}; write IP "
                "addresses or CIDR networks separated by commas, such as "
                "'127.0.0.1,10.0.0.0/8', or '*' alone to trust every peer"
            ) from error
    return networks


def parse_role_mapping(text: str) -> dict[str, str]:
    """Parse ``provider_role=noctis_role`` pairs separated by commas.

    Raises :class:`InsecureConfigurationError` naming a pair without ``=`` or a Noctis
    role that does not exist.
    """
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        provider_role, separator, noctis_role = item.partition("=")
        provider_role, noctis_role = provider_role.strip(), noctis_role.strip()
        if not separator or not provider_role or not noctis_role:
            raise InsecureConfigurationError(
                f"invalid NOCTIS_AUTH_ROLE_MAPPING entry {item.strip()!r}: write "
                "provider_role=noctis_role pairs separated by commas, such as "
                "'pacs-radiologist=radiologist'"
            )
        if noctis_role not in ROLE_NAMES:
            raise InsecureConfigurationError(
                f"invalid NOCTIS_AUTH_ROLE_MAPPING entry {item.strip()!r}: {noctis_role!r} "
                f"is no Noctis role; use one of {', '.join(sorted(ROLE_NAMES))}"
            )
        mapping[provider_role] = noctis_role
    return mapping


def check_auth_settings(settings: Settings) -> None:
    """Raise :class:`InsecureConfigurationError` for unsafe or incomplete auth settings."""
    if settings.auth_mode == "off" and not is_loopback_host(settings.http_host):
        raise InsecureConfigurationError(
            f"refusing to start: NOCTIS_AUTH_MODE=off serves patient data without "
            f"authentication, and NOCTIS_HTTP_HOST={settings.http_host} is not a loopback "
            "address. Either set NOCTIS_AUTH_MODE=internal and create the first "
            "administrator with `python -m noctis_auth create-admin`, or set "
            "NOCTIS_AUTH_MODE=oidc with NOCTIS_AUTH_ISSUER (and NOCTIS_AUTH_JWKS_URL) of "
            "your OpenID Connect provider, or bind NOCTIS_HTTP_HOST=127.0.0.1"
        )
    if (
        settings.auth_mode == "internal"
        and not is_loopback_host(settings.http_host)
        and not settings.auth_issuer
        and not settings.public_base_url
    ):
        raise InsecureConfigurationError(
            f"refusing to start: with NOCTIS_AUTH_MODE=internal and "
            f"NOCTIS_HTTP_HOST={settings.http_host}, which is not a loopback address, the "
            "token issuer would come from each request's Host header, which clients "
            "choose. Set NOCTIS_PUBLIC_BASE_URL to the DICOMweb base URL that clients use "
            "(such as https://pacs.example.org/dicom-web), or NOCTIS_AUTH_ISSUER to the "
            "token service's URL (such as https://pacs.example.org/auth)"
        )
    if settings.auth_mode == "oidc" and not settings.auth_issuer:
        raise InsecureConfigurationError(
            "NOCTIS_AUTH_MODE=oidc needs NOCTIS_AUTH_ISSUER, the issuer URL of the OpenID "
            "Connect provider (for Keycloak: https://HOST/realms/REALM)"
        )
    parse_role_mapping(settings.auth_role_mapping)
    parse_trusted_proxies(settings.trusted_proxies)
