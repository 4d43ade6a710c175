"""Clients that send instances to the deployment and record what was acknowledged."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pynetdicom import AE

from tests.stow.bodies import BOUNDARY, Part, content_type, multipart_body
from tests.support import CT_IMAGE_STORAGE, require_tool

SUCCESS = 0x0000
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"


def sop_instance_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def start_storescu(port: int, calling_ae_title: str, files: list[Path]) -> subprocess.Popen[str]:
    """Start dcmtk's storescu sending ``files`` on one association."""
    return subprocess.Popen(
        [
            require_tool("storescu"),
            "-aet",
            calling_ae_title,
            "-aec",
            "NOCTIS",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stored_by_stow(response: httpx.Response) -> set[str]:
    """Return the SOP Instance UIDs that a STOW-RS response reports as stored."""
    if response.status_code not in (200, 202):
        return set()
    body = response.json()
    items = body.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
    return {item[REFERENCED_SOP_INSTANCE_UID]["Value"][0] for item in items}


def stow_files(dicomweb_url: str, files: list[Path]) -> httpx.Response:
    """Send ``files`` in one STOW-RS request."""
    body = multipart_body([Part(path.read_bytes()) for path in files])
    return httpx.post(
        f"{dicomweb_url}/studies",
        content=body,
        headers={"Content-Type": content_type(BOUNDARY), "Accept": "application/dicom+json"},
        timeout=60,
    )


@dataclass
class PacedSender:
    """Sends files one at a time in a background thread, pausing between them.

    ``acknowledged`` grows with each instance that got a Success status; sending stops
    at the first failure (the receiving process was killed, say).
    """

    files: list[Path]
    pause_s: float
    acknowledged: list[str] = field(default_factory=list)
    failure: str | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self, timeout_s: float = 120.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the sender did not finish"

    def wait_for_acknowledged(self, count: int, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.acknowledged) >= count:
                return True
            if self._thread is not None and not self._thread.is_alive():
                return len(self.acknowledged) >= count
            time.sleep(0.02)
        return False

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class PacedDimseSender(PacedSender):
    """C-STORE over one association to a DIMSE gateway (pynetdicom as the SCU)."""

    port: int = 0
    calling_ae_title: str = "PACEDSCU"

    def _run(self) -> None:
        ae = AE(ae_title=self.calling_ae_title)
        ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN)
        association = ae.associate("127.0.0.1", self.port, ae_title="NOCTIS")
        if not association.is_established:
            self.failure = "association not established"
            return
        try:
            for path in self.files:
                try:
                    status = association.send_c_store(path)
                except RuntimeError as error:  # the association was aborted
                    self.failure = f"C-STORE of {path.name} failed: {error}"
                    return
                if "Status" not in status or int(status.Status) != SUCCESS:
                    self.failure = f"C-STORE of {path.name} got {status or 'no response'}"
                    return
                self.acknowledged.append(sop_instance_uid(path))
                time.sleep(self.pause_s)
        finally:
            if association.is_established:
                association.release()


@dataclass
class PacedStowSender(PacedSender):
    """STOW-RS requests of ``batch_size`` instances each."""

    dicomweb_url: str = ""
    batch_size: int = 3

    def _run(self) -> None:
        for start in range(0, len(self.files), self.batch_size):
            batch = self.files[start : start + self.batch_size]
            try:
                response = stow_files(self.dicomweb_url, batch)
            except httpx.HTTPError as error:
                self.failure = f"STOW-RS request failed: {error}"
                return
            stored = stored_by_stow(response)
            self.acknowledged.extend(sorted(stored))
            if response.status_code != 200:
                self.failure = f"STOW-RS returned {response.status_code}: {response.text}"
                return
            time.sleep(self.pause_s)
