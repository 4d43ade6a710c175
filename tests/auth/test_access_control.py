"""Each role against every route of every service: allowed, or 403 naming the scope."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from noctis_common.auth import ScopeRequirement
from noctis_common.roles import ROLE_SCOPES, Role, Scope
from noctis_common.settings import Settings
from tests.auth.conftest import StoredStudy
from tests.auth.support import SigningKey, bearer, make_token

# Routes that carry no patient data and are reached without a token: probes, metrics,
# the capabilities description and FastAPI's API description.
OPEN_PATHS = {
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/dicom-web",
    "/dicom-web/",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
}
# Routes that refuse restricted principals although they hold the scope: the change
# feed cannot filter events by referring physician (noctis_events.routes).
REFUSED_TO_REFERRING_PHYSICIANS = {"/dicom-web/changefeed"}
PARAMETER = re.compile(r"\{(\w+)(?::path)?\}")


def all_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Yield (full path, route) of every API route, in included routers too.

    FastAPI 0.165 keeps an included router as one entry of ``app.routes`` that refers to
    the router and its include prefix.
    """
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):
            yield from all_routes(
                route.original_router.routes, prefix + route.include_context.prefix
            )


def _scope_requirements(route: APIRoute) -> list[ScopeRequirement]:
    return [
        dependency.call
        for dependency in route.dependant.dependencies
        if isinstance(dependency.call, ScopeRequirement)
    ]


def protected_routes(app: FastAPI) -> list[tuple[str, str, Scope]]:
    """Return (method, path template, scope) of every route that needs a scope."""
    routes = []
    for path, route in all_routes(app.routes):
        if path in OPEN_PATHS:
            continue
        requirements = _scope_requirements(route)
        assert len(requirements) == 1, f"{path} has no single scope requirement"
        for method in sorted(route.methods or ()):
            routes.append((method, path, requirements[0].scope))
    return routes


def _request_path(template: str, method: str, study: StoredStudy) -> str:
    values = {
        "study_instance_uid": study.study_instance_uid,
        "series_instance_uid": study.series_instance_uid,
        "sop_instance_uid": study.sop_instance_uid,
        "frame_list": "1",
        "tag_path": "7FE00010",
        "record_id": "1",
    }
    if method == "DELETE":  # never delete the study the other requests read
        values = {name: generate_uid() for name in values}
    return PARAMETER.sub(lambda match: values[match.group(1)], template)


def test_every_route_needs_a_scope_or_is_open(auth_client: TestClient) -> None:
    app = auth_client.app
    assert isinstance(app, FastAPI)
    routes = protected_routes(app)
    scopes = {scope for _, _, scope in routes}
    assert scopes == {Scope.SEARCH, Scope.RETRIEVE, Scope.STORE, Scope.DELETE, Scope.ADMIN}
    for path, route in all_routes(app.routes):
        if path in OPEN_PATHS:
            assert _scope_requirements(route) == [], path


def test_routes_without_token_get_401(auth_client: TestClient, stored_study: StoredStudy) -> None:
    app = auth_client.app
    assert isinstance(app, FastAPI)
    for method, template, _ in protected_routes(app):
        response = auth_client.request(method, _request_path(template, method, stored_study))
        assert response.status_code == 401, f"{method} {template}"


def test_open_routes_need_no_token(auth_client: TestClient) -> None:
    assert auth_client.get("/health/live").status_code == 200
    assert auth_client.get("/metrics").status_code == 200
    assert auth_client.options("/dicom-web").status_code == 200
    preflight = auth_client.options(
        "/dicom-web/studies",
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200


@pytest.mark.parametrize("role", list(Role))
def test_role_is_allowed_or_refused_per_scope(
    role: Role, auth_client: TestClient, signing_key: SigningKey, stored_study: StoredStudy
) -> None:
    app = auth_client.app
    assert isinstance(app, FastAPI)
    token = make_token(
        signing_key, roles=(role,), referring_physician_name="Nobody^Known", username=role.value
    )
    for method, template, scope in protected_routes(app):
        path = _request_path(template, method, stored_study)
        headers = bearer(token)
        if method == "POST":
            headers["Content-Type"] = 'multipart/related; type="application/dicom"; boundary=x'
        response = auth_client.request(method, path, headers=headers, content=b"--x--\r\n")
        where = f"{role.value}: {method} {template}"
        if role is Role.REFERRING_PHYSICIAN and template in REFUSED_TO_REFERRING_PHYSICIANS:
            assert response.status_code == 403, where
        elif scope in ROLE_SCOPES[role]:
            assert response.status_code not in {401, 403}, where
        else:
            assert response.status_code == 403, where
            assert response.json()["missing_scope"] == scope.value, where
            challenge = response.headers["www-authenticate"]
            assert f'error="insufficient_scope", scope="{scope.value}"' in challenge, where


def test_refused_scope_names_the_role_fix(auth_client: TestClient, signing_key: SigningKey) -> None:
    token = make_token(signing_key, roles=(Role.MODALITY_GATEWAY,))
    response = auth_client.get("/dicom-web/studies", headers=bearer(token))
    assert response.status_code == 403
    assert "'search'" in response.json()["detail"]
    assert "ask an administrator" in response.json()["detail"]


def test_default_auth_mode_is_internal() -> None:
    assert Settings.model_fields["auth_mode"].default == "internal"


def test_internal_mode_without_key_source_fails_start_up(tmp_path: Path) -> None:
    from noctis_common.auth import AuthConfigurationError
    from noctis_common.context import ArchiveContext
    from tests.auth.conftest import archive_app

    context = ArchiveContext.create(Settings(data_dir=tmp_path / "var", auth_mode="internal"))
    try:
        with (
            pytest.raises(AuthConfigurationError, match="NOCTIS_AUTH_JWKS_URL"),
            TestClient(archive_app(context)),
        ):
            pass
    finally:
        context.close()
