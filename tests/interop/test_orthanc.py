"""Orthanc as a DICOMweb client of Noctis: Orthanc queries and retrieves a study from the archive.

Orthanc and its DICOMweb plugin come from Debian's ``orthanc`` and ``orthanc-dicomweb``
packages (tests/interop/setup_orthanc.sh installs them). NOCTIS_TEST_ORTHANC and
NOCTIS_TEST_ORTHANC_DICOMWEB_PLUGIN name another Orthanc binary and plugin file.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from tests.support import ArchiveProcess, dataset_bytes, free_port, running_archive, write_series
from tests.wado.helpers import part10_dataset_bytes, pydicom_file, store_file

pytestmark = pytest.mark.slow

PATIENT_ID = "INTEROP-ORTHANC-1"
DICOMWEB_PLUGIN_PATTERNS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)


def find_orthanc() -> tuple[str, str]:
    """Return the Orthanc binary and DICOMweb plugin paths; skip the test when either is absent."""
    binary = os.environ.get("NOCTIS_TEST_ORTHANC") or shutil.which("Orthanc")
    if binary is None and os.access("/usr/sbin/Orthanc", os.X_OK):
        binary = "/usr/sbin/Orthanc"
    if binary is None:
        pytest.skip("Orthanc is not installed; run tests/interop/setup_orthanc.sh (Debian orthanc)")

    plugin = os.environ.get("NOCTIS_TEST_ORTHANC_DICOMWEB_PLUGIN")
    if plugin is None:
        found = [path for pattern in DICOMWEB_PLUGIN_PATTERNS for path in glob.glob(pattern)]
        plugin = found[0] if found else None
    if plugin is None:
        pytest.skip(
            "Orthanc's DICOMweb plugin is not installed; run tests/interop/setup_orthanc.sh "
            "(Debian orthanc-dicomweb)"
        )
    return binary, plugin


@dataclass
class OrthancProcess:
    """Orthanc in a subprocess on free loopback ports, with Noctis as DICOMweb server "noctis"."""

    binary: str
    plugin: str
    folder: Path
    noctis_dicomweb_url: str
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_configuration(self) -> Path:
        self.http_port = free_port()
        configuration = {
            "Name": "noctis-interop",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [self.plugin],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": {"noctis": [f"{self.noctis_dicomweb_url}/"]},
            },
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(configuration, indent=2))
        return path

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        configuration = self.write_configuration()
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [self.binary, str(configuration)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=log,
            stderr=log,
        )
        log.close()
        try:
            self.wait_until_ready()
        except Exception:
            self.stop()
            raise

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited early; log:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"Orthanc did not start in {timeout_s} s; log:\n{self.log()}")

    def log(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass(frozen=True)
class Peers:
    noctis: ArchiveProcess
    orthanc: OrthancProcess
    study_instance_uid: str
    files: list[Path]


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """Noctis holding one study (two native instances and a JPEG 2000 one) and an empty Orthanc."""
    binary, plugin = find_orthanc()
    root = tmp_path_factory.mktemp("interop-orthanc")
    files = write_series(root / "native", 2, patient_id=PATIENT_ID)
    study_instance_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    compressed = pydicom.dcmread(pydicom_file("emri_small_jpeg_2k_lossless.dcm"))
    compressed.StudyInstanceUID = study_instance_uid
    compressed.PatientID = PATIENT_ID
    files.append(root / "compressed.dcm")
    compressed.save_as(files[-1], enforce_file_format=True)

    context = ArchiveContext.create(Settings(data_dir=root / "var"))
    try:
        for path in files:
            store_file(context, path)
    finally:
        context.close()

    http_port = free_port()
    for noctis in running_archive(
        root / "var",
        http_port=http_port,
        extra_env={"NOCTIS_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}/dicom-web"},
    ):
        orthanc = OrthancProcess(binary, plugin, root / "orthanc", noctis.dicomweb_url)
        orthanc.start()
        try:
            yield Peers(noctis, orthanc, study_instance_uid, files)
        finally:
            orthanc.stop()


def orthanc_instances(orthanc: OrthancProcess) -> dict[str, str]:
    """Return Orthanc's stored instances as {SOP Instance UID: Orthanc identifier}."""
    response = httpx.get(f"{orthanc.url}/instances", params={"expand": ""}, timeout=30)
    response.raise_for_status()
    return {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in response.json()}


def test_orthanc_lists_noctis_server(peers: Peers) -> None:
    response = httpx.get(f"{peers.orthanc.url}/dicom-web/servers", timeout=30)

    assert response.status_code == 200
    assert response.json() == ["noctis"]


# Orthanc's /qido route converts the DICOM JSON response into Orthanc's own format, in which
# each tag maps to {"Name", "Type", "Value"} and a single value is a plain string.


def test_orthanc_qido_finds_study(peers: Peers) -> None:
    response = httpx.post(
        f"{peers.orthanc.url}/dicom-web/servers/noctis/qido",
        json={"Uri": "/studies", "Arguments": {"PatientID": PATIENT_ID}},
        timeout=30,
    )

    assert response.status_code == 200
    (study,) = response.json()
    assert study["0020000D"]["Value"] == peers.study_instance_uid
    assert study["00100020"]["Value"] == PATIENT_ID


def test_orthanc_qido_lists_instances(peers: Peers) -> None:
    response = httpx.post(
        f"{peers.orthanc.url}/dicom-web/servers/noctis/qido",
        json={"Uri": f"/studies/{peers.study_instance_uid}/instances"},
        timeout=30,
    )

    expected = {str(pydicom.dcmread(path).SOPInstanceUID) for path in peers.files}
    assert response.status_code == 200
    assert {item["00080018"]["Value"] for item in response.json()} == expected


def test_orthanc_get_reads_metadata(peers: Peers) -> None:
    response = httpx.post(
        f"{peers.orthanc.url}/dicom-web/servers/noctis/get",
        json={"Uri": f"/studies/{peers.study_instance_uid}/metadata"},
        timeout=30,
    )

    assert response.status_code == 200
    assert {item["00100020"]["Value"][0] for item in response.json()} == {PATIENT_ID}


def test_orthanc_retrieves_study_identical(peers: Peers) -> None:
    response = httpx.post(
        f"{peers.orthanc.url}/dicom-web/servers/noctis/retrieve",
        json={"Resources": [{"Study": peers.study_instance_uid}]},
        timeout=120,
    )
    stored = orthanc_instances(peers.orthanc)

    assert response.status_code == 200, peers.orthanc.log()
    expected = {str(pydicom.dcmread(path).SOPInstanceUID): path for path in peers.files}
    assert set(stored) == set(expected)
    for sop_instance_uid, orthanc_id in stored.items():
        part10 = httpx.get(f"{peers.orthanc.url}/instances/{orthanc_id}/file", timeout=30)
        assert part10_dataset_bytes(part10.content) == dataset_bytes(expected[sop_instance_uid])
