"""Fixtures for the change feed tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_events.routes import router


@pytest.fixture
def feed_client(context: ArchiveContext) -> Iterator[TestClient]:
    """A client of the change feed over ``context``, whose relay runs only when called."""
    app = create_app("Noctis change feed test", [router], context.settings, context)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def sqlite_feed_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    """A change feed client over a SQLite index, for request checks that no index decides."""
    context = ArchiveContext.create(sqlite_settings)
    app = create_app("Noctis change feed test", [router], context.settings, context)
    try:
        with TestClient(app) as test_client:
            yield test_client
    finally:
        context.close()
