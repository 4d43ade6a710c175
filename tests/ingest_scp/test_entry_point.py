"""``python -m noctis_ingest_scp`` serves C-ECHO and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ingest_scp.helpers import run_dcmtk
from tests.support import free_port, wait_for_port

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]


def test_module_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    environment = {
        **os.environ,
        "NOCTIS_DATA_DIR": str(tmp_path / "var"),
        "NOCTIS_DIMSE_PORT": str(port),
        "NOCTIS_HTTP_PORT": str(free_port()),
        "NOCTIS_AE_TITLE": "GATEWAY",
    }
    log_path = tmp_path / "scp.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "noctis_ingest_scp"], env=environment, stdout=log, stderr=log
        )
    try:
        wait_for_port(port)
        echo = run_dcmtk("echoscu", "-aec", "GATEWAY", "127.0.0.1", port)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    log_text = log_path.read_text(errors="replace")
    assert echo.returncode == 0, echo.stdout
    assert returncode == 0, log_text
    assert "DIMSE gateway GATEWAY listening on 127.0.0.1" in log_text
    assert "DIMSE gateway stopped" in log_text
