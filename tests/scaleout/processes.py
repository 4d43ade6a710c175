"""Noctis services started as separate processes, the way a scale-out deployment runs them.

Each :class:`ServiceProcess` is one ``python -m <module>`` with its own data folder
(its receive spool), HTTP port and log file. What the services share (index, object
store, broker) comes in through the environment, as in production.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import free_port, wait_for_port

LOG_TAIL_CHARS = 6000


class ServiceStartError(RuntimeError):
    """A service process exited or did not become ready."""


def run_migration_job(environment: dict[str, str], log_dir: Path) -> None:
    """Run ``python -m noctis_common.db upgrade``, the deployment's migration job."""
    result = subprocess.run(
        [sys.executable, "-m", "noctis_common.db", "upgrade"],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    (log_dir / "migration-job.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise ServiceStartError(
            f"the migration job exited with status {result.returncode}:\n{result.stderr}"
        )


@dataclass
class ServiceProcess:
    """``python -m <module>`` in a subprocess on free loopback ports.

    ``http_port`` serves the service's HTTP API, or for the DIMSE gateway its metrics
    and health endpoints; ``dimse_port`` is set for the DIMSE gateway only.
    """

    name: str
    module: str
    environment: dict[str, str]
    work_dir: Path
    http_port: int = field(default_factory=free_port)
    dimse_port: int | None = None
    ae_title: str = "NOCTIS"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.name}.log"

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def full_environment(self) -> dict[str, str]:
        environment = {
            **os.environ,
            "NOCTIS_DATA_DIR": str(self.work_dir / self.name),
            "NOCTIS_HTTP_PORT": str(self.http_port),
            "NOCTIS_AE_TITLE": self.ae_title,
            **self.environment,
        }
        if self.dimse_port is not None:
            environment["NOCTIS_DIMSE_PORT"] = str(self.dimse_port)
        return environment

    def start(self, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        """Start the process; with ``wait``, return once ``/health/ready`` returns 200."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.full_environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_until_ready(timeout_s)

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise ServiceStartError(
                    f"{self.name} exited with status {self.returncode} while starting; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                response = httpx.get(f"{self.url}/health/ready", timeout=5)
                if response.status_code == 200:
                    if self.dimse_port is not None:
                        wait_for_port(self.dimse_port, max(1.0, deadline - time.monotonic()))
                    return
                last_problem = f"readiness returned {response.status_code}: {response.text}"
            except httpx.HTTPError as error:
                last_problem = f"readiness request failed: {error}"
            time.sleep(0.1)
        raise ServiceStartError(
            f"{self.name} was not ready after {timeout_s} s ({last_problem}); "
            f"log:\n{self.log_tail()}"
        )

    def wait_for_exit(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """Send SIGTERM and return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_for_exit(timeout_s)

    def kill(self) -> None:
        """End the process with SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)

    def close(self) -> None:
        """Stop the process if it still runs: SIGTERM, then SIGKILL after a while."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.terminate(timeout_s=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def dimse_gateway(
    name: str, environment: dict[str, str], work_dir: Path, ae_title: str = "NOCTIS"
) -> ServiceProcess:
    """Return an unstarted ``python -m noctis_ingest_scp`` on free ports."""
    return ServiceProcess(
        name,
        "noctis_ingest_scp",
        environment,
        work_dir,
        dimse_port=free_port(),
        ae_title=ae_title,
    )


def wait_until_refused(port: int, timeout_s: float = 30.0) -> bool:
    """Return ``True`` once nothing accepts connections on ``port`` any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False
