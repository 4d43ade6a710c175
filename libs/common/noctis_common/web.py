"""FastAPI pieces shared by the DICOMweb services: app factory, CORS, errors, context."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noctis_common.audit_api import router as audit_router
from noctis_common.audit_http import AuditMiddleware
from noctis_common.auth import install_access_control
from noctis_common.capabilities import router as capabilities_router
from noctis_common.client_address import forwarded_headers_trusted
from noctis_common.context import ArchiveContext
from noctis_common.health import (
    STORE_SERVICE_OPTIONAL,
    STORE_SERVICE_REQUIRED,
    Dependency,
    ReadinessProbe,
)
from noctis_common.health import router as health_router
from noctis_common.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

DICOMWEB_PREFIX = "/dicom-web"
# Response headers a browser viewer must be allowed to read across origins.
EXPOSED_HEADERS = [
    "Warning",
    "Content-Type",
    "Content-Length",
    "Content-Location",
    "Content-Range",
    "ETag",
]


# Seconds a client should wait before retrying a request refused with 503 because the
# index database failed.
DATABASE_RETRY_AFTER_S = 5


class UnhandledErrorMiddleware:
    """Turns an unhandled exception into a JSON 500 inside the CORS middleware.

    A failure to reach the index database (``OperationalError``) becomes 503 with
    ``Retry-After`` instead, since the request can succeed once the database is back.

    Starlette handles unhandled errors in its outermost layer, outside CORS, so a
    browser would see a CORS failure instead of the error. This middleware sits inside
    CORS so that the 500 carries CORS headers too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except OperationalError as error:
            # An unreachable index database is temporary, so the client may retry. One line
            # without the message, which may quote data, instead of a traceback per request.
            logger.error(
                "the index database failed on %s %s: %s",
                scope.get("method"),
                scope.get("path"),
                type(error).__name__,
            )
            if response_started:
                raise
            response = JSONResponse(
                {"detail": f"the index database failed ({type(error).__name__}); retry later"},
                status_code=503,
                headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
            )
            await response(scope, receive, send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if response_started:
                raise
            response = JSONResponse(
                {"detail": "internal server error; the server log has the details"},
                status_code=500,
            )
            await response(scope, receive, send)


# Route label of requests that matched no route (404s, probes of random paths).
UNMATCHED_ROUTE = "(unmatched)"
# Methods counted by name; any other method a client sends is counted as "other".
COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts and times each HTTP request by method, route template and status code.

    The route label is the template the router matched (``/dicom-web/studies/{...}``),
    never the requested path, so UIDs in paths do not create new label values. It is
    the outermost middleware, so CORS preflights and 500s are counted too.

    ``route_templates`` maps ``id(route)`` of each route of an included router to its
    full template. FastAPI 0.165 puts the router's own route, whose path lacks the
    include prefix, in ``scope["route"]``; routes not in the map use their own path.
    """

    def __init__(self, app: ASGIApp, route_templates: Mapping[int, str]) -> None:
        self.app = app
        self.route_templates = route_templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500  # what the client sees when the app raises before responding

        async def recording_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            method = str(scope.get("method", ""))
            labels = {
                "method": method if method in COUNTED_METHODS else "other",
                "route": self._route_template(scope.get("route")),
                "status": str(status_code),
            }
            HTTP_REQUESTS.labels(**labels).inc()
            HTTP_REQUEST_DURATION.labels(**labels).observe(time.perf_counter() - started)

    def _route_template(self, route: object) -> str:
        if route is None:
            return UNMATCHED_ROUTE
        return self.route_templates.get(id(route)) or str(getattr(route, "path", UNMATCHED_ROUTE))


def _is_probe(scope: MutableMapping[str, Any]) -> bool:
    """Return whether a request is a scrape or health probe, which is not traced."""
    path = str(scope.get("path", ""))
    return path in {"/metrics", "/health"} or path.startswith("/health/")


def create_app(
    title: str,
    routers: Sequence[APIRouter],
    settings: Settings,
    context: ArchiveContext | None = None,
    *,
    required_dependencies: Collection[Dependency] = STORE_SERVICE_REQUIRED,
    optional_dependencies: Collection[Dependency] = STORE_SERVICE_OPTIONAL,
) -> FastAPI:
    """Build an app serving ``routers`` under ``/dicom-web``.

    Without ``context`` the app opens its own at start-up and closes it at shutdown.
    ``/health/ready`` checks the dependencies named in ``required_dependencies`` and
    ``optional_dependencies`` (see :mod:`noctis_common.health`).
    """

    def readiness_probe(app_context: ArchiveContext) -> ReadinessProbe:
        return ReadinessProbe(app_context, required_dependencies, optional_dependencies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = context is None
        app.state.context = context or ArchiveContext.create(settings)
        app.state.readiness = readiness_probe(app.state.context)
        # Fails start-up when tokens cannot be verified, rather than every request.
        app.state.authenticator.check_configuration()
        if owned:
            app.state.context.start()
        try:
            yield
        finally:
            if owned:
                app.state.context.close()

    # FastAPI's own OpenTelemetry support traces each request in a server span named by
    # its route template, once tracing.configure_tracing has installed the SDK. The
    # request metrics are Prometheus's, so FastAPI's are off.
    telemetry: TelemetryConfig = {
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": _is_probe,
    }
    app = FastAPI(title=title, lifespan=lifespan, telemetry=telemetry)
    app.state.settings = settings
    if context is not None:
        app.state.context = context
        app.state.readiness = readiness_probe(context)
    # Every route that needs a scope checks the bearer token (noctis_common.auth). These
    # need none: /health/*, /metrics, OPTIONS on /dicom-web (capabilities) and CORS
    # preflights, because they carry no patient data and probes and browsers send them
    # without tokens.
    install_access_control(
        app,
        settings,
        lambda request: dicomweb_base_url(request, settings).removesuffix(DICOMWEB_PREFIX),
    )
    app.add_middleware(
        AuditMiddleware,
        trail_of_app=lambda: getattr(getattr(app.state, "context", None), "audit", None),
    )
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        # PUT: viewers save user preferences at /auth/preferences.
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )
    route_templates: dict[int, str] = {}
    app.add_middleware(RequestMetricsMiddleware, route_templates=route_templates)
    for router in routers:
        app.include_router(router, prefix=DICOMWEB_PREFIX)
    app.include_router(capabilities_router, prefix=DICOMWEB_PREFIX)
    for router in [*routers, capabilities_router]:
        for route in router.routes:
            route_path = getattr(route, "path", None)
            if route_path is not None:
                route_templates[id(route)] = DICOMWEB_PREFIX + route_path

    app.include_router(health_router)
    app.include_router(audit_router)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Return the process's metrics in the Prometheus text exposition format."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def get_context(request: Request) -> ArchiveContext:
    context: ArchiveContext = request.app.state.context
    return context


Context = Annotated[ArchiveContext, Depends(get_context)]


def _forwarded_pairs(header: str) -> dict[str, str]:
    """Return the parameters of the first element of an RFC 7239 ``Forwarded`` header."""
    first_element = header.split(",", 1)[0]
    pairs: dict[str, str] = {}
    for pair in first_element.split(";"):
        name, _, value = pair.strip().partition("=")
        if name and value:
            pairs[name.strip().lower()] = value.strip().strip('"')
    return pairs


def _first_value(header: str | None) -> str | None:
    """Return the first entry of a comma-separated proxy header (the client-facing hop)."""
    if not header:
        return None
    value = header.split(",", 1)[0].strip()
    return value or None


def dicomweb_base_url(request: Request, settings: Settings) -> str:
    """Return the DICOMweb base URL for links in responses, without a trailing slash.

    ``NOCTIS_PUBLIC_BASE_URL`` wins when set. Otherwise, when the request comes from a
    trusted proxy (``NOCTIS_TRUSTED_PROXIES``), the host, scheme and path prefix that it
    reports (``Forwarded``, ``X-Forwarded-Host``, ``X-Forwarded-Proto``,
    ``X-Forwarded-Prefix``) replace those of the request.
    """
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    scheme = request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    prefix = ""
    if forwarded_headers_trusted(request, settings):
        forwarded = _forwarded_pairs(request.headers.get("forwarded", ""))
        scheme = (
            forwarded.get("proto")
            or _first_value(request.headers.get("x-forwarded-proto"))
            or scheme
        )
        host = (
            forwarded.get("host") or _first_value(request.headers.get("x-forwarded-host")) or host
        )
        prefix = (_first_value(request.headers.get("x-forwarded-prefix")) or "").rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
    root_path = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{scheme}://{host}{prefix}{root_path}{DICOMWEB_PREFIX}"


def study_url(base_url: str, study_instance_uid: str) -> str:
    return f"{base_url}/studies/{study_instance_uid}"


def series_url(base_url: str, study_instance_uid: str, series_instance_uid: str) -> str:
    return f"{study_url(base_url, study_instance_uid)}/series/{series_instance_uid}"


def instance_url(
    base_url: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
) -> str:
    return (
        f"{series_url(base_url, study_instance_uid, series_instance_uid)}"
        f"/instances/{sop_instance_uid}"
    )
