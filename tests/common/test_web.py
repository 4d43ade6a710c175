"""Shared web behaviour: CORS headers on every response, errors included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app

ORIGIN = "http://viewer.example"

failing_router = APIRouter()


@failing_router.get("/broken")
def broken() -> None:
    raise RuntimeError("bug in a handler")


@pytest.fixture
def web_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    context = ArchiveContext.create(sqlite_settings)
    app = create_app("test", [failing_router], sqlite_settings, context)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    context.close()


def test_cors_header_on_not_found(web_client: TestClient) -> None:
    response = web_client.get("/dicom-web/nothing-here", headers={"Origin": ORIGIN})

    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == "*"


def test_cors_header_on_unhandled_error(web_client: TestClient) -> None:
    response = web_client.get("/dicom-web/broken", headers={"Origin": ORIGIN})

    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == "*"
    assert "internal server error" in response.json()["detail"]


def test_cors_preflight_allows_stow(web_client: TestClient) -> None:
    response = web_client.options(
        "/dicom-web/studies",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )

    assert response.status_code == 200
    assert "POST" in response.headers["access-control-allow-methods"]


def test_health_answers_ok(web_client: TestClient) -> None:
    assert web_client.get("/health").json() == {"status": "ok"}
