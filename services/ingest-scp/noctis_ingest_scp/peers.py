"""Known remote application entities and what each may do.

The peer list is a JSON file named by ``NOCTIS_DIMSE_PEERS_FILE``::

    {
      "peers": [
        {"ae_title": "CT01", "permissions": ["echo", "store"]},
        {"ae_title": "WS01", "host": "10.1.2.3", "port": 104, "tls": false,
         "permissions": ["echo", "store", "query", "retrieve", "commit"]}
      ]
    }

``host`` and ``port`` are needed for a peer that Noctis connects to: a C-MOVE
destination, or a Storage Commitment requestor that gets its N-EVENT-REPORT on a new
association. A calling AE title that is not in the list gets the permissions of
``NOCTIS_DIMSE_UNKNOWN_PEER_PERMISSIONS`` (default ``echo,store``, so modalities can
send without being configured while queries and retrievals need an entry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from noctis_common.settings import Settings

AE_TITLE_MAX_LENGTH = 16


class Permission(StrEnum):
    """An operation a remote AE may request."""

    ECHO = "echo"
    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    COMMIT = "commit"


class PeerConfigError(ValueError):
    """The peer list or the unknown-peer permissions are invalid."""


def normalize_ae_title(value: object, where: str) -> str:
    """Return an AE title without its insignificant leading and trailing spaces.

    Raises :class:`PeerConfigError` naming ``where`` when the value is not a valid AE
    title (PS3.5 table 6.2-1: 1 to 16 characters, no backslash, no control characters).
    """
    if not isinstance(value, str):
        raise PeerConfigError(f"{where}: the AE title must be a string, not {value!r}")
    title = value.strip(" ")
    if not title or len(title) > AE_TITLE_MAX_LENGTH:
        raise PeerConfigError(
            f"{where}: invalid AE title {value!r}; it must have 1 to "
            f"{AE_TITLE_MAX_LENGTH} characters"
        )
    if "\\" in title or any(ord(character) < 0x20 or ord(character) > 0x7E for character in title):
        raise PeerConfigError(
            f"{where}: invalid AE title {value!r}; use printable ASCII without backslash"
        )
    return title


def parse_permissions(values: object, where: str) -> frozenset[Permission]:
    """Parse a list of permission names (or a comma-separated string of them)."""
    if isinstance(values, str):
        names = [name.strip() for name in values.split(",") if name.strip()]
    elif isinstance(values, list) and all(isinstance(name, str) for name in values):
        names = [name.strip() for name in values]
    else:
        raise PeerConfigError(f"{where}: permissions must be a list of names, not {values!r}")
    permissions = set()
    for name in names:
        try:
            permissions.add(Permission(name.lower()))
        except ValueError:
            allowed = ", ".join(permission.value for permission in Permission)
            raise PeerConfigError(
                f"{where}: unknown permission {name!r}; use any of {allowed}"
            ) from None
    return frozenset(permissions)


@dataclass(frozen=True)
class PeerAE:
    """A known remote application entity."""

    ae_title: str
    permissions: frozenset[Permission]
    host: str | None = None
    port: int | None = None
    tls: bool = False

    @property
    def address(self) -> tuple[str, int] | None:
        """Return ``(host, port)`` when Noctis can connect to this peer."""
        if self.host is None or self.port is None:
            return None
        return self.host, self.port


def _parse_peer(entry: object, where: str) -> PeerAE:
    if not isinstance(entry, dict):
        raise PeerConfigError(f"{where}: each peer must be a JSON object, not {entry!r}")
    unknown_keys = set(entry) - {"ae_title", "permissions", "host", "port", "tls"}
    if unknown_keys:
        raise PeerConfigError(f"{where}: unknown keys {sorted(unknown_keys)}")
    ae_title = normalize_ae_title(entry.get("ae_title"), where)
    host: Any = entry.get("host")
    port: Any = entry.get("port")
    tls: Any = entry.get("tls", False)
    if host is not None and (not isinstance(host, str) or not host):
        raise PeerConfigError(f"{where} ({ae_title}): host must be a non-empty string")
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535
    ):
        raise PeerConfigError(f"{where} ({ae_title}): port must be an integer from 1 to 65535")
    if (host is None) != (port is None):
        raise PeerConfigError(f"{where} ({ae_title}): give both host and port, or neither")
    if not isinstance(tls, bool):
        raise PeerConfigError(f"{where} ({ae_title}): tls must be true or false")
    return PeerAE(
        ae_title=ae_title,
        permissions=parse_permissions(entry.get("permissions", []), f"{where} ({ae_title})"),
        host=host,
        port=port,
        tls=tls,
    )


class PeerDirectory:
    """Looks up known peers and decides what a calling AE title may do."""

    def __init__(
        self, peers: list[PeerAE], unknown_peer_permissions: frozenset[Permission]
    ) -> None:
        self._peers: dict[str, PeerAE] = {}
        for peer in peers:
            if peer.ae_title in self._peers:
                raise PeerConfigError(f"AE title {peer.ae_title!r} is listed twice")
            self._peers[peer.ae_title] = peer
        self.unknown_peer_permissions = unknown_peer_permissions

    @classmethod
    def from_settings(cls, settings: Settings) -> PeerDirectory:
        """Load the peer list from ``NOCTIS_DIMSE_PEERS_FILE``, when it is set."""
        unknown = parse_permissions(
            settings.dimse_unknown_peer_permissions, "NOCTIS_DIMSE_UNKNOWN_PEER_PERMISSIONS"
        )
        if settings.dimse_peers_file is None:
            return cls([], unknown)
        return cls(load_peers_file(settings.dimse_peers_file), unknown)

    def get(self, ae_title: str) -> PeerAE | None:
        return self._peers.get(ae_title.strip(" "))

    def permissions_for(self, calling_ae_title: str) -> frozenset[Permission]:
        peer = self.get(calling_ae_title)
        return peer.permissions if peer is not None else self.unknown_peer_permissions

    def is_allowed(self, calling_ae_title: str, permission: Permission) -> bool:
        return permission in self.permissions_for(calling_ae_title)

    def is_known(self, calling_ae_title: str) -> bool:
        return self.get(calling_ae_title) is not None


def load_peers_file(path: Path) -> list[PeerAE]:
    """Read and check a peer list file; raise :class:`PeerConfigError` on any mistake."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PeerConfigError(f"cannot read the peer list {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise PeerConfigError(f"the peer list {path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("peers"), list):
        raise PeerConfigError(f'the peer list {path} must be an object with a "peers" list')
    return [
        _parse_peer(entry, f"{path}: peer {index + 1}")
        for index, entry in enumerate(document["peers"])
    ]
