"""Ingest measures: C-STORE with dcmtk's storescu and STOW-RS with 10 instances a request.

Each run starts from an empty target, sends the whole ingest set once, and then counts
what the target stored, so a run that lost instances fails instead of looking fast.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select

from bench.peers import (
    SERVER_ENVIRONMENT,
    BarePynetdicom,
    NoctisArchive,
    NoctisScaleOut,
    Orthanc,
    Storescp,
    Target,
)
from noctis_common.db.models import Instance

logger = logging.getLogger(__name__)

STOW_INSTANCES_PER_REQUEST = 10
SEND_TIMEOUT_S = 900


class IngestFailedError(RuntimeError):
    """A sender failed or the target stored fewer instances than were sent."""


@dataclass
class IngestResult:
    """One ingest run of one target."""

    target: str
    protocol: str
    clients: int
    repetition: int
    instances: int
    bytes: int
    seconds: float
    cpu_s: float
    peak_rss_bytes: int

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.seconds

    def as_json(self) -> dict[str, object]:
        row: dict[str, object] = asdict(self)
        row["instances_per_s"] = round(self.instances_per_s, 2)
        row["mb_per_s"] = round(self.bytes / self.seconds / 1e6, 2)
        row["cpu_ms_per_instance"] = round(self.cpu_s * 1000 / self.instances, 2)
        row["peak_rss_mb"] = round(self.peak_rss_bytes / 1e6, 1)
        return row


def split(files: list[Path], parts: int) -> list[list[Path]]:
    """Deal ``files`` round-robin into ``parts`` lists."""
    return [files[index::parts] for index in range(parts)]


def send_c_store(target: Target, files: list[Path], associations: int) -> float:
    """Send ``files`` with ``associations`` concurrent storescu processes; return seconds.

    The associations are spread over the target's ports in turn, so a scale-out target
    with one gateway per association gets one association on each.
    """
    binary = shutil.which("storescu")
    if binary is None:
        raise IngestFailedError("storescu is not installed (Debian package dcmtk)")
    commands = []
    for index, part in enumerate(split(files, associations)):
        port = target.dimse_ports[index % len(target.dimse_ports)]
        commands.append(
            [binary, "-aet", "BENCHSCU", "-aec", target.ae_title, "127.0.0.1", str(port)]
            + [str(path) for path in part]
        )
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            command,
            env=SERVER_ENVIRONMENT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for command in commands
    ]
    outputs = [sender.communicate(timeout=SEND_TIMEOUT_S)[0] for sender in senders]
    seconds = time.perf_counter() - started
    for sender, output in zip(senders, outputs, strict=True):
        if sender.returncode != 0:
            raise IngestFailedError(
                f"storescu to {target.name} exited with {sender.returncode}: "
                f"{output.decode(errors='replace')[-2000:]}"
            )
    return seconds


def multipart_body(files: list[Path]) -> tuple[bytes, str]:
    """Return a multipart/related body of ``files`` as application/dicom parts, and its type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for path in files:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(path.read_bytes())
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def send_stow(target: Target, files: list[Path], clients: int) -> float:
    """POST ``files`` to ``{dicomweb_url}/studies`` from ``clients`` threads; return seconds.

    Bodies are built before the clock starts, so reading the files is not timed.
    """
    if target.dicomweb_url is None:
        raise IngestFailedError(f"{target.name} has no DICOMweb URL")
    url = f"{target.dicomweb_url}/studies"
    requests = [
        multipart_body(files[start : start + STOW_INSTANCES_PER_REQUEST])
        for start in range(0, len(files), STOW_INSTANCES_PER_REQUEST)
    ]
    errors: list[str] = []

    def post_requests(share: list[tuple[bytes, str]]) -> None:
        with httpx.Client(timeout=SEND_TIMEOUT_S) as client:
            for body, content_type in share:
                headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
                response = client.post(url, content=body, headers=headers)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:500]}")

    threads = [
        threading.Thread(target=post_requests, args=(requests[index::clients],))
        for index in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise IngestFailedError(f"STOW-RS to {target.name} failed: {errors[0]}")
    return seconds


def stored_count(target: Target) -> int:
    """Return how many instances ``target`` has stored."""
    if isinstance(target, Storescp):
        return sum(1 for path in (target.work_dir / "received").iterdir() if path.is_file())
    if isinstance(target, BarePynetdicom):
        return sum(1 for path in (target.work_dir / "received").glob("*.dcm"))
    if isinstance(target, Orthanc):
        assert target.dicomweb_url is not None
        url = target.dicomweb_url.removesuffix("/dicom-web") + "/statistics"
        return int(httpx.get(url, timeout=30).json()["CountInstances"])
    if isinstance(target, NoctisArchive | NoctisScaleOut):
        database_url = (
            target.database_url or f"sqlite:///{target.work_dir / 'data' / 'index.sqlite'}"
        )
        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                return int(connection.scalar(select(func.count()).select_from(Instance)) or 0)
        finally:
            engine.dispose()
    raise TypeError(f"no stored count for {type(target).__name__}")


def measure_ingest(
    target: Target, files: list[Path], protocol: str, clients: int, repetition: int
) -> IngestResult:
    """Send ``files`` to the started, empty ``target`` once and return the measures."""
    before = target.sample()
    if protocol == "C-STORE":
        seconds = send_c_store(target, files, clients)
    else:
        seconds = send_stow(target, files, clients)
    after = target.sample()
    stored = stored_count(target)
    if stored != len(files):
        raise IngestFailedError(
            f"{target.name} stored {stored} of the {len(files)} instances sent by {protocol}; "
            "its log in the work folder says why"
        )
    result = IngestResult(
        target=target.name,
        protocol=protocol,
        clients=clients,
        repetition=repetition,
        instances=len(files),
        bytes=sum(path.stat().st_size for path in files),
        seconds=seconds,
        cpu_s=after.cpu_s - before.cpu_s,
        peak_rss_bytes=after.peak_rss_bytes,
    )
    logger.info(
        "%s %s x%d: %.1f instances/s, %.1f ms CPU each",
        target.name,
        protocol,
        clients,
        result.instances_per_s,
        result.cpu_s * 1000 / result.instances,
    )
    return result
