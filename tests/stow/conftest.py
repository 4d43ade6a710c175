"""Fixtures for the STOW-RS tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.web import create_app
from noctis_stow.routes import router as stow_router

SMALL_MAX_REQUEST_BYTES = 4096


@pytest.fixture
def small_limit_client(context: ArchiveContext) -> Iterator[TestClient]:
    """A STOW-RS test client over ``context`` whose maximum request size is 4096 bytes."""
    settings = context.settings.model_copy(
        update={"stow_max_request_bytes": SMALL_MAX_REQUEST_BYTES}
    )
    limited = dataclasses.replace(context, settings=settings)
    app = create_app("Noctis STOW-RS test", [stow_router], settings, limited)
    with TestClient(app) as test_client:
        yield test_client
