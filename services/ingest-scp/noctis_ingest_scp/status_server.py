"""The HTTP port of the standalone DIMSE gateway: metrics, liveness and readiness.

``python -m noctis_ingest_scp`` has no DICOMweb app, so this small WSGI server serves
``/metrics`` (Prometheus text format), ``/health``, ``/health/live`` and
``/health/ready`` on ``NOCTIS_METRICS_PORT``, or on ``NOCTIS_HTTP_PORT`` when that is 0.
The responses are those of the HTTP services (:mod:`noctis_common.health`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import make_wsgi_app

from noctis_common.health import ReadinessProbe
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

# Probes and Prometheus only read; other methods (TRACE among them) get 405.
ALLOWED_METHODS = ("GET", "HEAD")


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """Serves each request in its own thread, so a slow readiness check blocks no scrape."""

    daemon_threads = True


class _QuietRequestHandler(WSGIRequestHandler):
    """Logs requests at DEBUG instead of writing every probe to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class StatusApp:
    """The WSGI application: metrics and health endpoints, 404 for any other path."""

    def __init__(self, probe: ReadinessProbe) -> None:
        self.probe = probe
        self.metrics_app = make_wsgi_app()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ALLOWED_METHODS:
            return _json_response(
                start_response,
                405,
                {"detail": f"method {method} is not allowed on this port; use GET or HEAD"},
                extra_headers=[("Allow", ", ".join(ALLOWED_METHODS))],
            )
        if method == "HEAD":
            # prometheus_client's WSGI app rejects HEAD with 405, so it gets a GET request.
            as_get = {**environ, "REQUEST_METHOD": "GET"}
            return _without_body(self._respond(path, as_get, start_response))
        return self._respond(path, environ, start_response)

    def _respond(
        self, path: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if path == "/metrics":
            metrics: Iterable[bytes] = self.metrics_app(environ, start_response)
            return metrics
        if path == "/health":
            return _json_response(start_response, 200, {"status": "ok"})
        if path == "/health/live":
            return _json_response(start_response, 200, {"status": "alive"})
        if path == "/health/ready":
            report = self.probe.check()
            return _json_response(start_response, report.status_code, report.to_json())
        return _json_response(
            start_response,
            404,
            {"detail": f"{path} not found; this port serves /metrics and /health/*"},
        )


def _without_body(body: Iterable[bytes]) -> list[bytes]:
    """Drop the body of a HEAD response; its headers (Content-Length too) stay as for GET."""
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return []


def _json_response(
    start_response: StartResponse,
    status_code: int,
    body: dict[str, Any],
    extra_headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    reasons = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    content = json.dumps(body).encode()
    # wsgiref adds headers to the list it is given, so each response gets its own list.
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
    headers.extend(extra_headers or [])
    start_response(f"{status_code} {reasons[status_code]}", headers)
    return [content]


class StatusServer:
    """The status HTTP server, serving in a daemon thread until :meth:`stop`."""

    def __init__(self, settings: Settings, probe: ReadinessProbe) -> None:
        self.host = settings.http_host
        self.port = settings.metrics_port or settings.http_port
        self.app = StatusApp(probe)
        self._server: WSGIServer | None = None

    def start(self) -> None:
        """Bind the port and serve; raises :class:`OSError` when the port is taken."""
        self._server = make_server(
            self.host,
            self.port,
            self.app,
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietRequestHandler,
        )
        threading.Thread(
            target=self._server.serve_forever, name="status-server", daemon=True
        ).start()
        logger.info(
            "metrics and health served on http://%s:%d (/metrics, /health/live, /health/ready)",
            self.host,
            self.port,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
