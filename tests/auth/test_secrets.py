"""Secrets in settings: SecretStr values, ``*_FILE`` variants, never in logs or errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from noctis_common.settings import SECRET_FILE_SETTINGS, Settings
from tests.support import free_port

SECRET_VALUES = {
    "s3_secret_key": "s3-secret-3f9a",
    "kafka_sasl_password": "kafka-secret-71c2",
    "auth_key_passphrase": "passphrase-secret-d04e",
}


def secret_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        auth_mode="off",
        s3_secret_key=SecretStr(SECRET_VALUES["s3_secret_key"]),
        kafka_sasl_password=SecretStr(SECRET_VALUES["kafka_sasl_password"]),
        auth_key_passphrase=SecretStr(SECRET_VALUES["auth_key_passphrase"]),
    )


@pytest.mark.parametrize("name", sorted(SECRET_VALUES))
def test_secret_settings_are_secret_str(tmp_path: Path, name: str) -> None:
    value = getattr(secret_settings(tmp_path), name)
    assert isinstance(value, SecretStr)
    assert value.get_secret_value() == SECRET_VALUES[name]


@pytest.mark.parametrize("name", sorted(SECRET_VALUES))
def test_secret_hidden_in_settings_dumps(tmp_path: Path, name: str) -> None:
    settings = secret_settings(tmp_path)
    secret = SECRET_VALUES[name]
    assert secret not in repr(settings)
    assert secret not in str(settings.model_dump())
    assert secret not in settings.model_dump_json()


@pytest.mark.parametrize("name", sorted(SECRET_FILE_SETTINGS))
def test_secret_file_is_read(tmp_path: Path, name: str) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("sqlite:///from-a-file\n")
    overrides = {SECRET_FILE_SETTINGS[name]: secret_file}
    settings = Settings(auth_mode="off", **overrides)  # type: ignore[arg-type]
    value = getattr(settings, name)
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    assert text == "sqlite:///from-a-file"


def test_secret_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "s3-secret-key"
    secret_file.write_text(SECRET_VALUES["s3_secret_key"])
    monkeypatch.setenv("NOCTIS_S3_SECRET_KEY_FILE", str(secret_file))
    settings = Settings(auth_mode="off")
    assert settings.s3_secret_key.get_secret_value() == SECRET_VALUES["s3_secret_key"]


def test_secret_and_its_file_conflict(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from the file")
    with pytest.raises(ValidationError) as raised:
        Settings(
            auth_mode="off",
            s3_secret_key=SecretStr("given directly"),
            s3_secret_key_file=secret_file,
        )
    message = str(raised.value)
    assert "NOCTIS_S3_SECRET_KEY and NOCTIS_S3_SECRET_KEY_FILE are set" in message
    assert "given directly" not in message
    assert "from the file" not in message


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    with pytest.raises(ValidationError, match="cannot read NOCTIS_KAFKA_SASL_PASSWORD_FILE"):
        Settings(auth_mode="off", kafka_sasl_password_file=missing)


def test_validation_error_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOCTIS_KAFKA_SASL_PASSWORD", SECRET_VALUES["kafka_sasl_password"])
    monkeypatch.setenv("NOCTIS_DATABASE_URL", "postgresql://noctis:db-secret-9b1e@db/noctis")
    with pytest.raises(ValidationError) as raised:
        Settings(auth_mode="oidc")  # without the issuer that oidc needs
    message = str(raised.value)
    assert "NOCTIS_AUTH_ISSUER" in message
    assert SECRET_VALUES["kafka_sasl_password"] not in message
    assert "db-secret-9b1e" not in message


@pytest.mark.slow
def test_database_password_stays_out_of_startup_error(tmp_path: Path) -> None:
    url_file = tmp_path / "database-url"
    # Nothing listens on the port, so opening the index fails at once.
    url_file.write_text(f"postgresql+psycopg://noctis:db-secret-5c7d@127.0.0.1:{free_port()}/x\n")
    environment = {
        **os.environ,
        "NOCTIS_DATA_DIR": str(tmp_path / "var"),
        "NOCTIS_DATABASE_URL_FILE": str(url_file),
        "NOCTIS_S3_SECRET_KEY": SECRET_VALUES["s3_secret_key"],
        "NOCTIS_KAFKA_SASL_PASSWORD": SECRET_VALUES["kafka_sasl_password"],
        "NOCTIS_HTTP_PORT": str(free_port()),
        "NOCTIS_DIMSE_PORT": str(free_port()),
        "NOCTIS_LOG_LEVEL": "DEBUG",
        "NOCTIS_DB_CONNECT_TIMEOUT_S": "2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "noctis_archive"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "opening the index database" in output
    assert "noctis:***@127.0.0.1" in output
    assert "db-secret-5c7d" not in output
    for secret in SECRET_VALUES.values():
        assert secret not in output
