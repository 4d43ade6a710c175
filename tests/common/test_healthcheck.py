"""``python -m noctis_common.healthcheck``, the containers' HEALTHCHECK command, against a
real HTTP server on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from noctis_common.healthcheck import main
from tests.support import free_port

STATUS_BY_PATH = {"/health/live": 200, "/health/ready": 503}


class HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = STATUS_BY_PATH.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "test"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_live_endpoint_passes(health_port: int) -> None:
    assert main(["--port", str(health_port)]) == 0


def test_unready_endpoint_fails(health_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", str(health_port), "--path", "/health/ready"]) == 1
    assert "returned HTTP 503" in capsys.readouterr().err


def test_closed_port_fails(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["--port", str(port), "--timeout", "2"]) == 1
    assert f"GET http://127.0.0.1:{port}/health/live failed" in capsys.readouterr().err


def test_port_comes_from_setting(health_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOCTIS_METRICS_PORT", str(health_port))
    monkeypatch.setenv("NOCTIS_HTTP_PORT", str(free_port()))
    assert main(["--port-setting", "metrics_port"]) == 0
    assert main([]) == 1


def test_port_setting_off_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOCTIS_METRICS_PORT", "0")
    assert main(["--port-setting", "metrics_port"]) == 1
    assert "NOCTIS_METRICS_PORT is 0" in capsys.readouterr().err


def test_module_exit_status(health_port: int) -> None:
    command = [sys.executable, "-m", "noctis_common.healthcheck", "--port", str(health_port)]
    live = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    ready = subprocess.run(
        [*command, "--path", "/health/ready"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert live.returncode == 0
    assert ready.returncode == 1
    assert "503" in ready.stderr
