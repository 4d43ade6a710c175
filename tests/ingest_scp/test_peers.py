"""The peer list: parsing, validation and permission look-ups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noctis_common.settings import Settings
from noctis_ingest_scp.peers import (
    PeerConfigError,
    PeerDirectory,
    Permission,
    load_peers_file,
)


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(document))
    return path


def test_known_peer_gets_its_permissions(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "peers": [
                {
                    "ae_title": "WS01",
                    "host": "127.0.0.1",
                    "port": 11113,
                    "permissions": ["echo", "query", "retrieve"],
                }
            ]
        },
    )
    directory = PeerDirectory.from_settings(Settings(dimse_peers_file=path))

    assert directory.is_allowed("WS01", Permission.QUERY)
    assert directory.is_allowed("WS01 ", Permission.RETRIEVE)
    assert not directory.is_allowed("WS01", Permission.STORE)
    peer = directory.get("WS01")
    assert peer is not None
    assert peer.address == ("127.0.0.1", 11113)


def test_unknown_peer_may_echo_and_store() -> None:
    directory = PeerDirectory.from_settings(Settings())

    assert directory.permissions_for("ANY_MODALITY") == {Permission.ECHO, Permission.STORE}
    assert not directory.is_known("ANY_MODALITY")


def test_unknown_peers_can_be_shut_out() -> None:
    directory = PeerDirectory.from_settings(Settings(dimse_unknown_peer_permissions=""))

    assert directory.permissions_for("STRANGER") == frozenset()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"peers": [{"ae_title": ""}]}, "1 to 16 characters"),
        ({"peers": [{"ae_title": "A" * 17}]}, "1 to 16 characters"),
        ({"peers": [{"ae_title": "BAD\\AE"}]}, "without backslash"),
        ({"peers": [{"ae_title": "WS", "permissions": ["delete"]}]}, "unknown permission"),
        ({"peers": [{"ae_title": "WS", "host": "h"}]}, "both host and port"),
        ({"peers": [{"ae_title": "WS", "host": "h", "port": 0}]}, "from 1 to 65535"),
        ({"peers": [{"ae_title": "WS", "colour": "red"}]}, "unknown keys"),
        ({"peers": [{"ae_title": "WS"}, {"ae_title": "WS"}]}, "listed twice"),
        ({"hosts": []}, '"peers" list'),
    ],
)
def test_invalid_peer_list_is_rejected(tmp_path: Path, document: object, message: str) -> None:
    path = _write(tmp_path, document)

    with pytest.raises(PeerConfigError, match=message):
        PeerDirectory.from_settings(Settings(dimse_peers_file=path))


def test_peer_list_must_be_json(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_text("peers: [WS01]")

    with pytest.raises(PeerConfigError, match="not valid JSON"):
        load_peers_file(path)


def test_unknown_permission_setting_is_rejected() -> None:
    with pytest.raises(PeerConfigError, match="NOCTIS_DIMSE_UNKNOWN_PEER_PERMISSIONS"):
        PeerDirectory.from_settings(Settings(dimse_unknown_peer_permissions="echo,everything"))
