"""``python -m noctis_auth`` commands, and the archive process serving /auth.

The archive runs as a subprocess with auth mode internal, with DEBUG logging, and
every secret the flows produce is looked for in its log afterwards.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from noctis_auth.__main__ import main
from noctis_auth.clock import utc_now
from noctis_auth.users import authenticate_user
from noctis_common.db import Database
from noctis_common.settings import Settings
from tests.auth_service.helpers import PASSWORD, VIEWER_REDIRECT_URI, Pkce, csrf_token_of
from tests.support import ArchiveProcess, running_archive

pytestmark = pytest.mark.slow

UNUSED_SECRETS = {
    "NOCTIS_S3_SECRET_KEY": "s3-secret-of-the-log-test",
    "NOCTIS_KAFKA_SASL_PASSWORD_FILE": "kafka-password-of-the-log-test",
}


def run_auth_command(
    data_dir: Path, *arguments: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noctis_auth", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "NOCTIS_DATA_DIR": str(data_dir), "NOCTIS_AUTH_MODE": "internal"},
        timeout=60,
        check=False,
    )


def can_log_in(data_dir: Path, username: str, password: str) -> bool:
    settings = Settings(data_dir=data_dir, auth_mode="internal")
    database = Database(settings.resolved_database_url)
    try:
        authenticate_user(database, settings, username, password, utc_now())
    except Exception:
        return False
    finally:
        database.dispose()
    return True


def test_create_admin_reads_standard_input(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    completed = run_auth_command(
        data_dir, "create-admin", "--username", "boss", stdin=PASSWORD + "\n"
    )
    assert completed.returncode == 0, completed.stderr
    assert "created administrator boss" in completed.stdout
    assert PASSWORD not in completed.stdout + completed.stderr
    assert can_log_in(data_dir, "boss", PASSWORD)


def run_in_process(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, *arguments: str, stdin: str = ""
) -> str:
    """Run a command in this process; return what it wrote to stderr on exit, or ""."""
    monkeypatch.setenv("NOCTIS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("NOCTIS_AUTH_MODE", "internal")
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        main(list(arguments))
    except SystemExit as exit_:
        return str(exit_.code)
    return ""


def test_create_admin_reads_password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    arguments = ["create-admin", "--username", "boss", "--password-file", str(password_file)]
    assert run_in_process(monkeypatch, tmp_path / "var", *arguments) == ""
    assert can_log_in(tmp_path / "var", "boss", PASSWORD)


def test_create_admin_rejects_weak_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = ["create-admin", "--username", "boss"]
    message = run_in_process(monkeypatch, tmp_path / "var", *arguments, stdin="short\n")
    assert "use at least 12" in message


def test_create_admin_rejects_existing_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = ["create-admin", "--username", "boss"]
    assert run_in_process(monkeypatch, tmp_path / "var", *arguments, stdin=PASSWORD) == ""
    message = run_in_process(monkeypatch, tmp_path / "var", *arguments, stdin=PASSWORD)
    assert "exists already" in message


def test_password_option_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["create-admin", "--username", "boss", "--password", PASSWORD]
    assert run_in_process(monkeypatch, tmp_path / "var", *arguments) == "2"
    assert "unrecognized arguments" in capsys.readouterr().err


def test_create_client_prints_secret_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [
        "create-client",
        "--client-id",
        "gateway",
        "--grant-type",
        "client_credentials",
        "--role",
        "modality_gateway",
    ]
    assert run_in_process(monkeypatch, tmp_path / "var", *arguments) == ""
    created = json.loads(capsys.readouterr().out)
    assert created["roles"] == ["modality_gateway"]
    assert len(created["client_secret"]) >= 43


@pytest.fixture
def auth_archive(tmp_path: Path) -> Iterator[ArchiveProcess]:
    data_dir = tmp_path / "var"
    created = run_auth_command(data_dir, "create-admin", "--username", "boss", stdin=PASSWORD)
    assert created.returncode == 0, created.stderr
    # Secrets of backends this archive does not use, given as operators give them, so
    # that the log check below covers them too.
    kafka_password_file = tmp_path / "kafka-password"
    kafka_password_file.write_text(UNUSED_SECRETS["NOCTIS_KAFKA_SASL_PASSWORD_FILE"] + "\n")
    yield from running_archive(
        data_dir,
        extra_env={
            "NOCTIS_AUTH_MODE": "internal",
            "NOCTIS_LOG_LEVEL": "DEBUG",
            "NOCTIS_S3_SECRET_KEY": UNUSED_SECRETS["NOCTIS_S3_SECRET_KEY"],
            "NOCTIS_KAFKA_SASL_PASSWORD_FILE": str(kafka_password_file),
        },
    )


def run_every_flow(archive: ArchiveProcess) -> list[str]:
    """Run each grant, logout and revocation against ``archive``; return the secrets seen."""
    auth_url = f"{archive.http_url}/auth"
    client = httpx.Client(timeout=30)
    secrets = [PASSWORD]
    login = client.post(
        f"{auth_url}/token",
        data={"grant_type": "password", "username": "boss", "password": PASSWORD},
    ).json()
    secrets += [login["access_token"], login["refresh_token"]]
    headers = {"Authorization": f"Bearer {login['access_token']}"}
    assert client.get(f"{archive.dicomweb_url}/studies", headers=headers).status_code == 200
    refreshed = client.post(
        f"{auth_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
    ).json()
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    # A password typed into the username field by mistake.
    client.post(
        f"{auth_url}/token",
        data={"grant_type": "password", "username": PASSWORD, "password": "boss"},
    )

    viewer = client.post(
        f"{auth_url}/admin/clients",
        json={
            "client_id": "viewer",
            "public": True,
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [VIEWER_REDIRECT_URI],
            "post_logout_redirect_uris": ["http://127.0.0.1:3000/"],
        },
        headers=headers,
    )
    assert viewer.status_code == 201, viewer.text
    gateway = client.post(
        f"{auth_url}/admin/clients",
        json={
            "client_id": "gw",
            "roles": ["modality_gateway"],
            "grant_types": ["client_credentials"],
        },
        headers=headers,
    ).json()
    secrets.append(gateway["client_secret"])
    gateway_token = client.post(
        f"{auth_url}/token",
        data={"grant_type": "client_credentials"},
        auth=("gw", gateway["client_secret"]),
    ).json()
    secrets.append(gateway_token["access_token"])

    pkce = Pkce.generate()
    secrets.append(pkce.code_verifier)
    parameters = {
        "response_type": "code",
        "client_id": "viewer",
        "redirect_uri": VIEWER_REDIRECT_URI,
        "scope": "openid search",
        "state": "s",
        "code_challenge": pkce.code_challenge,
        "code_challenge_method": "S256",
    }
    form = client.get(f"{auth_url}/authorize", params=parameters)
    assert form.status_code == 200
    csrf_token = csrf_token_of(form)
    secrets.append(csrf_token)
    redirect = client.post(
        f"{auth_url}/authorize",
        data={**parameters, "csrf_token": csrf_token, "username": "boss", "password": PASSWORD},
    )
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
    secrets.append(code)
    tokens = client.post(
        f"{auth_url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": "viewer",
            "redirect_uri": VIEWER_REDIRECT_URI,
            "code_verifier": pkce.code_verifier,
        },
    ).json()
    secrets += [tokens["access_token"], tokens["refresh_token"], tokens["id_token"]]
    logout = client.get(
        f"{auth_url}/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1:3000/",
        },
    )
    assert logout.status_code == 303
    client.post(
        f"{auth_url}/revoke", data={"token": tokens["refresh_token"], "client_id": "viewer"}
    )
    client.close()
    return secrets


def test_no_secret_reaches_the_log(auth_archive: ArchiveProcess) -> None:
    secrets = run_every_flow(auth_archive) + list(UNUSED_SECRETS.values())
    auth_archive.stop()
    assert auth_archive.log_path is not None
    log = auth_archive.log_path.read_text(errors="replace")
    assert "login of boss" in log
    assert "GET /auth/logout?id_token_hint=REDACTED" in log
    for secret in secrets:
        assert secret not in log, f"a secret of {len(secret)} characters is in the log"
