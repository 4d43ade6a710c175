"""Secure defaults: no unauthenticated archive on a network address, tokens kept out of logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from noctis_common.auth import AccessTokenLogFilter
from noctis_common.auth_config import is_loopback_host
from noctis_common.settings import Settings
from tests.support import free_port


def test_auth_off_on_network_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="NOCTIS_AUTH_MODE=internal"):
        Settings(data_dir=tmp_path, auth_mode="off", http_host="0.0.0.0")


def test_auth_off_on_loopback_is_allowed(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert Settings(data_dir=tmp_path, auth_mode="off", http_host=host).auth_mode == "off"


def test_auth_on_network_address_is_allowed(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth_mode="internal",
        http_host="0.0.0.0",
        public_base_url="https://pacs.example.org/dicom-web",
    )
    assert settings.http_host == "0.0.0.0"


def test_internal_issuer_from_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="Set NOCTIS_PUBLIC_BASE_URL") as raised:
        Settings(data_dir=tmp_path, auth_mode="internal", http_host="0.0.0.0")
    assert "or NOCTIS_AUTH_ISSUER" in str(raised.value)


def test_internal_with_issuer_on_network_is_allowed(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth_mode="internal",
        http_host="0.0.0.0",
        auth_issuer="https://pacs.example.org/auth",
    )
    assert settings.auth_issuer == "https://pacs.example.org/auth"


def test_oidc_without_issuer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="NOCTIS_AUTH_ISSUER"):
        Settings(data_dir=tmp_path, auth_mode="oidc")


def test_unknown_mapped_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'chief' is no Noctis role"):
        Settings(data_dir=tmp_path, auth_role_mapping="pacs-chief=chief")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("pacs", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_archive_refuses_to_start_unauthenticated_on_network(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "NOCTIS_DATA_DIR": str(tmp_path / "var"),
        "NOCTIS_AUTH_MODE": "off",
        "NOCTIS_HTTP_HOST": "0.0.0.0",  # refused before anything binds
        "NOCTIS_HTTP_PORT": str(free_port()),
        "NOCTIS_DIMSE_PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "noctis_archive"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr
    assert "NOCTIS_AUTH_MODE=internal" in result.stderr
    assert not (tmp_path / "var").exists()


def test_access_token_is_redacted_in_access_log() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/wado?studyUID=1.2&access_token=eyJsecret", "1.1", 200),
        None,
    )
    assert AccessTokenLogFilter().filter(record)
    assert "eyJsecret" not in record.getMessage()
    assert "access_token=<redacted>" in record.getMessage()
