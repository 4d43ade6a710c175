"""The gateway's routing: every route of every HTTP component reaches that component.

The gateway is nginx, which no test here runs. Its routing is one ``map`` from
"<method> <path>" to a component, whose regular expressions are tried in order and the
first match wins (nginx's rule for a map with only regular expressions). The tests apply
those expressions with Python's ``re``, which reads this subset of PCRE the same way, to
a request for every route the components' FastAPI routers declare.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from noctis_auth.routes import router as auth_router
from noctis_common.audit_api import router as audit_router
from noctis_common.capabilities import router as capabilities_router
from noctis_events.routes import router as events_router
from noctis_qido.routes import router as qido_router
from noctis_stow.delete import router as delete_router
from noctis_stow.routes import router as stow_router
from noctis_wado.routes import router as wado_router
from noctis_wado.wado_uri import router as wado_uri_router
from tests.deploy.manifests import K8S_DIR, chart_objects

DICOMWEB_PREFIX = "/dicom-web"
# (router, path prefix it is served under, component that serves it). "*" marks
# routers that every component serves.
ROUTERS: list[tuple[APIRouter, str, str]] = [
    (qido_router, DICOMWEB_PREFIX, "qido"),
    (wado_router, DICOMWEB_PREFIX, "wado"),
    (wado_uri_router, "", "wado"),
    (stow_router, DICOMWEB_PREFIX, "stow"),
    (delete_router, DICOMWEB_PREFIX, "stow"),
    (events_router, DICOMWEB_PREFIX, "events"),
    (auth_router, "", "auth"),
    (capabilities_router, DICOMWEB_PREFIX, "*"),
    (audit_router, "", "*"),
]
COMPONENTS = {"qido", "wado", "stow", "events", "auth"}
SAMPLE_PARAMETERS = {
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
    "sop_instance_uid": "1.2.826.0.1.3680043.8.498.3",
    "frame_list": "1,2",
    "tag_path": "7FE00010",
}
MAP_LINE = re.compile(r'^\s*"~(?P<regex>[^"]+)"\s+(?P<component>[a-z-]+);\s*$')
UPSTREAM_SERVER = re.compile(r"upstream (?P<component>[a-z-]+) \{\s*server (?P<server>[^;\s]+);")


def gateway_map(nginx_conf: str) -> list[tuple[re.Pattern[str], str]]:
    """Return the (regular expression, component) pairs of the $noctis_upstream map."""
    block = nginx_conf.split('map "$request_method $uri" $noctis_upstream {', 1)[1]
    block = block.split("}", 1)[0]
    return [
        (re.compile(match["regex"]), match["component"])
        for line in block.splitlines()
        if (match := MAP_LINE.match(line))
    ]


def route_request(routes: list[tuple[re.Pattern[str], str]], method: str, path: str) -> str:
    """Return the component the gateway sends ``method path`` to, or "" for its own 404."""
    request = f"{method} {path}"
    for regex, component in routes:
        if regex.search(request):
            return component
    return ""


def sample_path(template: str) -> str:
    """Fill a route template's {parameters} with sample values."""

    def fill(match: re.Match[str]) -> str:
        # Parameters other than UIDs, frames and tags (user names, record ids) are words.
        return SAMPLE_PARAMETERS.get(match.group(1), "sample-value")

    return re.sub(r"\{([a-z_]+)(?::[a-z]+)?\}", fill, template)


def component_requests() -> Iterator[tuple[str, str, str]]:
    """Yield (method, path, component) for every method of every declared route."""
    for router, prefix, component in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in sorted(route.methods or ()):
                yield method, sample_path(prefix + route.path), component


def chart_nginx_conf(values: dict[str, Any] | None = None) -> str:
    (config,) = [
        document
        for document in chart_objects(values)
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "noctis-gateway"
    ]
    text: str = config["data"]["nginx.conf"]
    return text


NGINX_CONFS = {
    "chart": chart_nginx_conf,
    "kustomize": lambda: (K8S_DIR / "base" / "nginx.conf").read_text(),
}


@pytest.fixture(params=sorted(NGINX_CONFS), scope="module")
def nginx_conf(request: pytest.FixtureRequest) -> str:
    text: str = NGINX_CONFS[request.param]()
    return text


def test_every_route_reaches_its_component(nginx_conf: str) -> None:
    routes = gateway_map(nginx_conf)
    checked = 0
    for method, path, component in component_requests():
        routed = route_request(routes, method, path)
        if component == "*":
            assert routed in COMPONENTS, f"{method} {path}"
        else:
            assert routed == component, f"{method} {path}"
        checked += 1
    assert checked > 40


def test_cors_preflight_reaches_component(nginx_conf: str) -> None:
    # Browsers send OPTIONS before a cross-origin STOW-RS POST or a DELETE; every
    # component's CORS middleware responds to it, so any component will do.
    routes = gateway_map(nginx_conf)
    for _, path, _ in component_requests():
        assert route_request(routes, "OPTIONS", path) in COMPONENTS, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/health/ready"),
        ("GET", "/docs"),
        ("PUT", "/dicom-web/studies"),
        ("POST", "/dicom-web/series"),
        ("DELETE", "/dicom-web/studies"),
        ("GET", "/dicom-web-old/studies"),
        ("POST", "/audit/records"),
    ],
)
def test_unknown_requests_get_404(nginx_conf: str, method: str, path: str) -> None:
    # No component route: the gateway returns 404 itself, and /metrics and the health
    # endpoints stay inside the cluster.
    assert route_request(gateway_map(nginx_conf), method, path) == ""


@pytest.mark.parametrize(
    ("method", "path", "component"),
    [
        ("GET", "/dicom-web/studies", "qido"),
        ("POST", "/dicom-web/studies", "stow"),
        ("GET", "/dicom-web/studies/1.2.3", "wado"),
        ("POST", "/dicom-web/studies/1.2.3", "stow"),
        ("DELETE", "/dicom-web/studies/1.2.3", "stow"),
        ("GET", "/dicom-web/studies/1.2.3/series", "qido"),
        ("GET", "/dicom-web/studies/1.2.3/series/4.5", "wado"),
        ("GET", "/dicom-web/studies/1.2.3/series/4.5/instances", "qido"),
        ("GET", "/dicom-web/studies/1.2.3/series/4.5/instances/6.7", "wado"),
        ("GET", "/dicom-web/studies/", "qido"),
        ("HEAD", "/dicom-web/studies/1.2.3/metadata", "wado"),
    ],
)
def test_shared_paths_split_by_method(
    nginx_conf: str, method: str, path: str, component: str
) -> None:
    assert route_request(gateway_map(nginx_conf), method, path) == component


def test_upstreams_point_at_component_services(nginx_conf: str) -> None:
    upstreams = {
        match["component"]: match["server"] for match in UPSTREAM_SERVER.finditer(nginx_conf)
    }
    used = {component for _, component in gateway_map(nginx_conf)}
    assert used == set(upstreams)
    for component, server in upstreams.items():
        assert server == f"noctis-{component}:8080"


def test_upstreams_name_rendered_services() -> None:
    objects = chart_objects()
    services = {
        document["metadata"]["name"]: {port["port"] for port in document["spec"]["ports"]}
        for document in objects
        if document["kind"] == "Service"
    }
    for match in UPSTREAM_SERVER.finditer(chart_nginx_conf()):
        name, port = match["server"].split(":")
        assert int(port) in services[name], match["server"]


def test_disabled_component_gets_no_route() -> None:
    nginx_conf = chart_nginx_conf(
        {
            "authService": {"enabled": False},
            "auth": {"jwksUrl": "https://keycloak.example.org/realms/pacs/certs"},
        }
    )
    routes = gateway_map(nginx_conf)
    assert route_request(routes, "POST", "/auth/token") == ""
    assert "upstream auth" not in nginx_conf


def test_access_log_leaves_out_query() -> None:
    # QIDO-RS query strings carry patient names and IDs: the log has $uri, not $request.
    log_format = chart_nginx_conf().split("log_format noctis", 1)[1].split(";", 1)[0]
    assert "$uri" in log_format
    assert "$request " not in log_format
    assert "$request_uri" not in log_format
    assert "$args" not in log_format
