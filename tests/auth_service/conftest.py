"""The token service mounted with QIDO-RS in one app, with auth mode internal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from noctis_auth import passwords
from noctis_auth.app import mount_token_service
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_qido.routes import router as qido_router
from tests.auth_service.helpers import AuthApp, create_user

LOCKOUT_THRESHOLD = 3


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2id at a low cost, so that tests spend no seconds hashing.

    test_passwords.py checks the parameters that the service uses.
    """
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def auth_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "auth_mode": "internal",
        "auth_lockout_threshold": LOCKOUT_THRESHOLD,
        # TestClient's peer, "testclient", stands for the reverse proxy, whose
        # forwarded headers the tests send.
        "trusted_proxies": "*",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def running_auth_app(settings: Settings) -> Iterator[AuthApp]:
    context = ArchiveContext.create(settings)
    try:
        app = create_app("Noctis auth test", [qido_router], settings, context)
        service = mount_token_service(app, context)
        with TestClient(app) as client:
            yield AuthApp(client, service, context)
    finally:
        context.close()


@pytest.fixture
def auth_app(tmp_path: Path) -> Iterator[AuthApp]:
    """The token service over a SQLite index, with an administrator ``admin``."""
    for running in running_auth_app(auth_settings(tmp_path / "var")):
        create_user(running.service, "admin", ["administrator"])
        yield running
