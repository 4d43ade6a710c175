"""The benchmark targets, each started on free loopback ports in its own folder.

Every target is a set of server processes; the measures read their CPU time and peak
resident memory from ``/proc`` through psutil. dcmtk, and Orthanc built on it, leaves
Nagle's algorithm on for DIMSE unless ``TCP_NODELAY=1`` is in the environment, so every
process starts with it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

from noctis_common.db import Database

SERVER_ENVIRONMENT = {**os.environ, "TCP_NODELAY": "1"}
START_TIMEOUT_S = 60.0
ORTHANC_PLUGIN_PATTERNS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)


class TargetUnavailableError(RuntimeError):
    """A target's program is not installed or did not start."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TargetUnavailableError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TargetUnavailableError(f"nothing listened on port {port} after {timeout_s} s")


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TargetUnavailableError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TargetUnavailableError(f"{url} did not respond with 200 within {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop one process this suite started: SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def start_process(
    command: list[str], log_path: Path, environment: dict[str, str]
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, env=environment, stdout=log, stderr=log)


@dataclass
class ResourceSample:
    """CPU seconds used so far and the peak resident set, summed over a target's processes."""

    cpu_s: float
    peak_rss_bytes: int


def sample_processes(pids: list[int], cpu_only_pids: list[int] | None = None) -> ResourceSample:
    """Return the CPU time and the peak RSS (VmHWM) of ``pids`` and their children.

    The processes of ``cpu_only_pids`` and their children count for CPU time only.
    """
    cpu_s = 0.0
    peak_rss = 0
    cpu_only = set(cpu_only_pids or [])
    for pid in [*pids, *cpu_only]:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
                cpu_s += times.user + times.system
                if pid not in cpu_only:
                    peak_rss += _peak_rss(process.pid)
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                continue
    return ResourceSample(cpu_s, peak_rss)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Target:
    """One server under test: where to send, and which processes to measure."""

    name: str
    work_dir: Path
    ae_title: str = "BENCH"
    dimse_ports: list[int] = field(default_factory=list)
    dicomweb_url: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Processes whose CPU time counts for this target but which it did not start, such
    # as the PostgreSQL server of a scale-out deployment. Their memory does not count:
    # every PostgreSQL process maps the shared buffers, so summed RSS would overstate it.
    cpu_only_pids: list[int] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)
        self.processes.clear()

    def sample(self) -> ResourceSample:
        return sample_processes(self.pids, self.cpu_only_pids)

    def current_rss_bytes(self) -> int:
        """Return the summed resident set of the target's own processes now."""
        total = 0
        for pid in self.pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total


@dataclass
class Storescp(Target):
    """dcmtk's storescp writing every received object into a folder, nothing else."""

    def start(self) -> None:
        binary = shutil.which("storescp")
        if binary is None:
            raise TargetUnavailableError("storescp is not installed (Debian package dcmtk)")
        port = free_port()
        received = self.work_dir / "received"
        received.mkdir(parents=True, exist_ok=True)
        process = start_process(
            [binary, "-aet", self.ae_title, "-od", str(received), "+xa", str(port)],
            self.work_dir / "storescp.log",
            SERVER_ENVIRONMENT,
        )
        self.processes.append(process)
        wait_for_port(port, process, START_TIMEOUT_S)
        self.dimse_ports = [port]


@dataclass
class BarePynetdicom(Target):
    """``bench.pynetdicom_scp``: pynetdicom keeping what it receives, nothing else.

    With ``event_driven``, its reactor threads wait as Noctis's do.
    """

    event_driven: bool = False

    def start(self) -> None:
        port = free_port()
        received = self.work_dir / "received"
        received.mkdir(parents=True, exist_ok=True)
        flags = ["--event-driven"] if self.event_driven else []
        process = start_process(
            [sys.executable, "-m", "bench.pynetdicom_scp", str(port), str(received), *flags],
            self.work_dir / "pynetdicom.log",
            SERVER_ENVIRONMENT,
        )
        self.processes.append(process)
        wait_for_port(port, process, START_TIMEOUT_S)
        self.dimse_ports = [port]


def find_orthanc() -> tuple[str, str]:
    """Return the Orthanc binary and its DICOMweb plugin, or raise when either is absent."""
    binary = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None
    )
    plugins = [path for pattern in ORTHANC_PLUGIN_PATTERNS for path in glob.glob(pattern)]
    if binary is None or not plugins:
        raise TargetUnavailableError(
            "Orthanc or its DICOMweb plugin is not installed; run tests/interop/setup_orthanc.sh"
        )
    return binary, plugins[0]


def orthanc_version() -> str:
    try:
        binary, _plugin = find_orthanc()
    except TargetUnavailableError:
        return "not installed"
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"


@dataclass
class Orthanc(Target):
    """Orthanc with its DICOMweb plugin; ``fast`` sets ``"SyncStorageArea": false``.

    In its default mode Orthanc syncs each stored file and its SQLite index before it
    sends the response. The fast mode skips the sync of the storage area.
    """

    fast: bool = False

    def start(self) -> None:
        binary, plugin = find_orthanc()
        http_port = free_port()
        dimse_port = free_port()
        configuration = {
            "Name": self.name,
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "index"),
            "HttpPort": http_port,
            "DicomPort": dimse_port,
            "DicomAet": self.ae_title,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SyncStorageArea": not self.fast,
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(configuration, indent=2))
        process = start_process(
            [binary, str(path)], self.work_dir / "orthanc.log", SERVER_ENVIRONMENT
        )
        self.processes.append(process)
        wait_for_http(f"http://127.0.0.1:{http_port}/system", process, START_TIMEOUT_S)
        wait_for_port(dimse_port, process, START_TIMEOUT_S)
        self.dimse_ports = [dimse_port]
        self.dicomweb_url = f"http://127.0.0.1:{http_port}/dicom-web"


def noctis_environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    environment = {
        **SERVER_ENVIRONMENT,
        "NOCTIS_DATA_DIR": str(data_dir),
        "NOCTIS_AUTH_MODE": "off",
    }
    if database_url is not None:
        environment["NOCTIS_DATABASE_URL"] = database_url
    return environment


@dataclass
class NoctisArchive(Target):
    """``python -m noctis_archive``: every service in one process over one index."""

    database_url: str | None = None
    # Settings that differ from the defaults, as NOCTIS_* environment variables.
    extra_environment: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        http_port = free_port()
        dimse_port = free_port()
        data_dir = self.work_dir / "data"
        environment = {
            **noctis_environment(data_dir, self.database_url),
            "NOCTIS_HTTP_PORT": str(http_port),
            "NOCTIS_DIMSE_PORT": str(dimse_port),
            "NOCTIS_AE_TITLE": self.ae_title,
            **self.extra_environment,
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        process = start_process(
            [sys.executable, "-m", "noctis_archive"], self.work_dir / "archive.log", environment
        )
        self.processes.append(process)
        wait_for_http(f"http://127.0.0.1:{http_port}/health", process, START_TIMEOUT_S)
        wait_for_port(dimse_port, process, START_TIMEOUT_S)
        self.dimse_ports = [dimse_port]
        self.dicomweb_url = f"http://127.0.0.1:{http_port}/dicom-web"


@dataclass
class NoctisScaleOut(Target):
    """Several ``python -m noctis_ingest_scp`` processes over one PostgreSQL index.

    Each gateway listens on its own port; the C-STORE measure spreads its associations
    over the ports. The PostgreSQL server's processes count for this target.
    """

    database_url: str = ""
    gateways: int = 2
    postgres_pid: int | None = None

    def start(self) -> None:
        data_dir = self.work_dir / "data"
        environment = {
            **noctis_environment(data_dir, self.database_url),
            "NOCTIS_DB_MIGRATE_ON_START": "false",
            "NOCTIS_AE_TITLE": self.ae_title,
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ports = []
        for number in range(self.gateways):
            port = free_port()
            gateway_environment = {
                **environment,
                "NOCTIS_DIMSE_PORT": str(port),
                "NOCTIS_METRICS_PORT": str(free_port()),
            }
            process = start_process(
                [sys.executable, "-m", "noctis_ingest_scp"],
                self.work_dir / f"ingest-scp-{number + 1}.log",
                gateway_environment,
            )
            self.processes.append(process)
            ports.append(port)
        for port, process in zip(ports, self.processes, strict=True):
            wait_for_port(port, process, START_TIMEOUT_S)
        self.dimse_ports = ports
        if self.postgres_pid is not None:
            self.cpu_only_pids = [self.postgres_pid]


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free loopback port, with fsync on.

    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
    """

    superuser = "noctis"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="noctis-bench-postgres-"))
        self.data_dir = self.root / "data"
        self.port = free_port()

    @staticmethod
    def _binary(name: str) -> str:
        found = shutil.which(name) or next(
            iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
        )
        if found is None:
            raise TargetUnavailableError(f"PostgreSQL's {name} is not installed")
        return found

    @staticmethod
    def _as_postgres_user(command: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.data_dir, "postgres")
        initdb = [self._binary("initdb"), "-D", str(self.data_dir), "-U", self.superuser]
        subprocess.run(
            self._as_postgres_user([*initdb, "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=512MB"
        )
        subprocess.run(
            self._as_postgres_user(
                [
                    self._binary("pg_ctl"),
                    *("-D", str(self.data_dir), "-o", options),
                    *("-l", str(self.root / "log"), "-w", "start"),
                ]
            ),
            check=True,
            capture_output=True,
        )

    @property
    def pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropping an old one), migrate it to head, return its URL."""
        admin = create_engine(f"{self.url}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = f"{self.url}/{name}"
        database = Database(url)
        try:
            database.upgrade()
        finally:
            database.dispose()
        return url

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres_user(
                [self._binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class NoctisQidoServices(Target):
    """Several ``python -m noctis_qido`` processes over one index, each on its own port."""

    database_url: str = ""
    services: int = 1
    dicomweb_urls: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        environment = {
            **noctis_environment(self.work_dir / "data", self.database_url),
            "NOCTIS_DB_MIGRATE_ON_START": "false",
        }
        ports = []
        for number in range(self.services):
            port = free_port()
            process = start_process(
                [sys.executable, "-m", "noctis_qido"],
                self.work_dir / f"qido-{number + 1}.log",
                {**environment, "NOCTIS_HTTP_PORT": str(port)},
            )
            self.processes.append(process)
            ports.append(port)
        for port, process in zip(ports, self.processes, strict=True):
            wait_for_http(f"http://127.0.0.1:{port}/health", process, START_TIMEOUT_S)
        self.dicomweb_urls = [f"http://127.0.0.1:{port}/dicom-web" for port in ports]
        self.dicomweb_url = self.dicomweb_urls[0]
