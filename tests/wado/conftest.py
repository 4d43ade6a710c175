"""Fixtures of the WADO-RS tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.routes import router


@pytest.fixture
def sqlite_context(sqlite_settings: Settings) -> Iterator[ArchiveContext]:
    """An archive context over SQLite only, for tests whose subject is not the index."""
    archive_context = ArchiveContext.create(sqlite_settings)
    try:
        yield archive_context
    finally:
        archive_context.close()


@pytest.fixture
def sqlite_client(sqlite_context: ArchiveContext) -> Iterator[TestClient]:
    """A test client for WADO-RS over ``sqlite_context``."""
    app = create_app("Noctis WADO-RS test", [router], sqlite_context.settings, sqlite_context)
    with TestClient(app) as test_client:
        yield test_client
