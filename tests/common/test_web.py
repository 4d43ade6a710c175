"""Shared web behaviour: CORS headers on every response, errors included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app, dicomweb_base_url

ORIGIN = "http://viewer.example"

failing_router = APIRouter()


@failing_router.get("/broken")
def broken() -> None:
    raise RuntimeError("bug in a handler")


@failing_router.get("/index-down")
def index_down() -> None:
    raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


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


def test_database_outage_gives_503_with_retry_after(web_client: TestClient) -> None:
    response = web_client.get("/dicom-web/index-down", headers={"Origin": ORIGIN})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["access-control-allow-origin"] == "*"
    assert "index database failed (OperationalError); retry later" in response.json()["detail"]


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


PROXY_CASES = [
    ({}, "http://testserver/dicom-web"),
    ({"x-forwarded-host": "pacs.example.org"}, "http://pacs.example.org/dicom-web"),
    (
        {
            "x-forwarded-host": "pacs.example.org:8443, internal:80",
            "x-forwarded-proto": "https",
            "x-forwarded-prefix": "/archive/",
        },
        "https://pacs.example.org:8443/archive/dicom-web",
    ),
    (
        {"forwarded": 'for=10.0.0.1;proto=https;host="viewer.example.org", for=10.0.0.2'},
        "https://viewer.example.org/dicom-web",
    ),
    ({"x-forwarded-prefix": "noctis"}, "http://testserver/noctis/dicom-web"),
]


@pytest.mark.parametrize(("headers", "expected"), PROXY_CASES)
def test_base_url_follows_proxy_headers(
    sqlite_settings: Settings, headers: dict[str, str], expected: str
) -> None:
    # TestClient's peer, "testclient", stands for the reverse proxy.
    settings = sqlite_settings.model_copy(update={"trusted_proxies": "*"})

    assert _base_url_for(settings, headers) == expected


def test_base_url_ignores_proxy_headers_when_untrusted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", trust_forwarded_headers=False)

    assert _base_url_for(settings, {"x-forwarded-host": "evil.example"}) == (
        "http://testserver/dicom-web"
    )


def test_base_url_ignores_proxy_headers_of_untrusted_peer(sqlite_settings: Settings) -> None:
    # The default trusts loopback proxies only, and TestClient's peer is "testclient".
    assert _base_url_for(sqlite_settings, {"x-forwarded-host": "evil.example"}) == (
        "http://testserver/dicom-web"
    )


def test_public_base_url_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", public_base_url="https://pacs.example/dw/")

    assert _base_url_for(settings, {"x-forwarded-host": "other"}) == "https://pacs.example/dw"


def _base_url_for(settings: Settings, headers: dict[str, str]) -> str:
    router = APIRouter()

    @router.get("/base")
    def base(request: Request) -> dict[str, str]:
        return {"base": dicomweb_base_url(request, settings)}

    context = ArchiveContext.create(settings)
    try:
        with TestClient(create_app("test", [router], settings, context)) as client:
            return str(client.get("/dicom-web/base", headers=headers).json()["base"])
    finally:
        context.close()
