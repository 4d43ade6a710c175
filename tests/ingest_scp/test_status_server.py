"""The DIMSE gateway's status port: which HTTP methods its endpoints accept."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from noctis_common.context import ArchiveContext
from noctis_common.health import Dependency, ReadinessProbe
from noctis_common.settings import Settings
from noctis_ingest_scp.status_server import StatusServer
from tests.support import free_port


@pytest.fixture
def status_url(sqlite_settings: Settings) -> Iterator[str]:
    settings = sqlite_settings.model_copy(update={"metrics_port": free_port()})
    context = ArchiveContext.create(settings)
    server = StatusServer(settings, ReadinessProbe(context, [Dependency.DATABASE]))
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        context.close()


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/metrics"])
def test_status_port_answers_get_and_head(status_url: str, path: str) -> None:
    get = httpx.get(status_url + path)
    head = httpx.head(status_url + path)

    assert get.status_code == 200
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]


@pytest.mark.parametrize("method", ["TRACE", "POST", "PUT", "DELETE", "OPTIONS"])
def test_status_port_rejects_other_methods(status_url: str, method: str) -> None:
    response = httpx.request(method, status_url + "/health/ready")

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert method in response.json()["detail"]
