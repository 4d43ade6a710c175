"""Fixtures for the QIDO-RS tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_qido.routes import router


@pytest.fixture
def sqlite_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    """A QIDO-RS client over a SQLite index, for request checks that no index decides."""
    context = ArchiveContext.create(sqlite_settings)
    app = create_app("Noctis QIDO-RS test", [router], context.settings, context)
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        context.close()
