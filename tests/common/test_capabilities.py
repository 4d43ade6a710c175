"""Retrieve Capabilities (OPTIONS on the DICOMweb service root) over HTTP."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from noctis_common.settings import Settings

WADL = "{http://wadl.dev.java.net/2009/02}"


def _wadl_methods(body: bytes) -> dict[str, dict[str, list[str]]]:
    """Map each resource path to its methods and their response media types."""
    root = ElementTree.fromstring(body)
    resources: dict[str, dict[str, list[str]]] = {}
    for resource in root.iter(WADL + "resource"):
        methods = resources.setdefault(resource.attrib["path"], {})
        for method in resource.iter(WADL + "method"):
            methods[method.attrib["name"]] = [
                representation.attrib["mediaType"]
                for representation in method.iterfind(f"{WADL}response/{WADL}representation")
            ]
    return resources


@pytest.mark.parametrize("path", ["/dicom-web", "/dicom-web/"])
def test_options_on_root_returns_wadl(client: TestClient, path: str) -> None:
    response = client.options(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.sun.wadl+xml"
    resources = _wadl_methods(response.content)
    assert resources["studies"].keys() == {"GET", "POST"}
    assert resources["studies"]["GET"] == ["application/dicom+json"]
    assert resources["studies/{study_instance_uid}"].keys() == {"DELETE", "GET", "POST"}
    assert resources["studies/{study_instance_uid}/metadata"]["GET"] == ["application/dicom+json"]
    instance = (
        "studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
    )
    assert resources[instance]["GET"] == ['multipart/related; type="application/dicom"']
    assert "DELETE" in resources[instance]
    assert instance + "/bulkdata/{tag_path}" in resources


def test_wadl_lists_every_served_route(client: TestClient) -> None:
    from noctis_qido.routes import router as qido_router
    from noctis_stow.delete import router as delete_router
    from noctis_stow.routes import router as stow_router
    from noctis_wado.routes import router as wado_router

    served = {
        route.path.removeprefix("/").replace(":path}", "}")
        for router in (qido_router, wado_router, stow_router, delete_router)
        for route in router.routes
        if isinstance(route, APIRoute)
    }

    response = client.options("/dicom-web")

    assert set(_wadl_methods(response.content)) == served


def test_wadl_base_is_service_root(client: TestClient) -> None:
    response = client.options("/dicom-web")

    resources = ElementTree.fromstring(response.content).find(WADL + "resources")
    assert resources is not None
    assert resources.attrib["base"] == "http://testserver/dicom-web/"


def test_options_returns_json_when_asked(client: TestClient) -> None:
    response = client.options("/dicom-web", headers={"Accept": "application/json"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    paths = {resource["path"] for resource in response.json()["resources"]}
    assert "studies/{study_instance_uid}/series/{series_instance_uid}/metadata" in paths


def test_options_unacceptable_type_is_406(client: TestClient) -> None:
    response = client.options("/dicom-web", headers={"Accept": "text/html"})

    assert response.status_code == 406
    assert "application/vnd.sun.wadl+xml" in response.json()["detail"]


def test_cors_preflight_still_answered_by_middleware(
    sqlite_settings: Settings, client: TestClient
) -> None:
    response = client.options(
        "/dicom-web/studies",
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
    )

    assert "access-control-allow-methods" in response.headers
    assert "application/vnd.sun.wadl+xml" not in response.headers.get("content-type", "")
