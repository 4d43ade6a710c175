"""Helpers shared by the tests: ports, test files, servers started as subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPOSITORY_ROOT.parent / "shared" / "data" / "dicom"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def is_part10(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return head[128:132] == b"DICM"


def pydicom_test_files() -> list[Path]:
    """Return the Part 10 files shipped with pydicom and pydicom-data, one per SOP Instance UID.

    Only installed files are listed. pydicom's get_testdata_files would also try to
    download the test files it lists online, and the tests reach nothing beyond loopback.
    """
    from pydicom.data.data_manager import DATA_ROOT, external_data_sources

    installed = [str(path) for path in Path(DATA_ROOT, "test_files").glob("*.dcm")]
    for source in external_data_sources().values():
        installed.extend(source.get_paths("*.dcm", 0))

    files: dict[str, Path] = {}
    for name in sorted(installed):
        path = Path(name)
        if not is_part10(path):
            continue
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            sop_instance_uid = str(dataset.SOPInstanceUID)
            _ = dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPClassUID
        except Exception:  # files without the four UIDs cannot be stored by anyone
            continue
        files.setdefault(sop_instance_uid, path)
    return sorted(files.values())


def shared_data_files() -> list[Path]:
    """Return every DICOM file under ../shared/data/dicom, or [] when it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        return []
    return sorted(path for path in SHARED_DATA_DIR.rglob("*.dcm") if path.is_file())


def make_dataset(
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    modality: str = "CT",
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0001",
    study_date: str = "20240115",
    study_time: str = "101500",
    accession_number: str = "ACC-0001",
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
) -> Dataset:
    """Build a small uncompressed image dataset with File Meta Information."""
    dataset = Dataset()
    dataset.SOPClassUID = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    dataset.SOPInstanceUID = sop_instance_uid or generate_uid()
    dataset.StudyInstanceUID = study_instance_uid or generate_uid()
    dataset.SeriesInstanceUID = series_instance_uid or generate_uid()
    dataset.Modality = modality
    dataset.PatientName = patient_name
    dataset.PatientID = patient_id
    dataset.PatientBirthDate = "19700101"
    dataset.PatientSex = "F"
    dataset.StudyDate = study_date
    dataset.StudyTime = study_time
    dataset.AccessionNumber = accession_number
    dataset.StudyID = "1"
    dataset.StudyDescription = "Synthetic study"
    dataset.SeriesNumber = 1
    dataset.SeriesDescription = "Synthetic series"
    dataset.InstanceNumber = instance_number
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows = rows
    dataset.Columns = columns
    dataset.BitsAllocated = 16
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = bytes(
        (instance_number + index) % 256 for index in range(rows * columns * 2)
    )
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


def write_series(
    folder: Path, count: int, *, study_instance_uid: str | None = None, **attributes: object
) -> list[Path]:
    """Write ``count`` instances of one new series into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study = study_instance_uid or generate_uid()
    series = generate_uid()
    paths = []
    for number in range(1, count + 1):
        dataset = make_dataset(
            study_instance_uid=study,
            series_instance_uid=series,
            instance_number=number,
            **attributes,  # type: ignore[arg-type]
        )
        path = folder / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dataset_bytes(path: Path) -> bytes:
    """Return the bytes of a Part 10 file after its File Meta Information."""
    from noctis_common.dicom.part10 import read_part10_header

    with open(path, "rb") as handle:
        header = read_part10_header(handle)
        handle.seek(header.dataset_offset)
        return handle.read()


@dataclass
class ArchiveProcess:
    """``python -m noctis_archive`` running in a subprocess on free loopback ports."""

    data_dir: Path
    http_port: int = field(default_factory=free_port)
    dimse_port: int = field(default_factory=free_port)
    ae_title: str = "NOCTIS"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def start(self) -> None:
        env = {
            **os.environ,
            "NOCTIS_DATA_DIR": str(self.data_dir),
            "NOCTIS_HTTP_PORT": str(self.http_port),
            "NOCTIS_DIMSE_PORT": str(self.dimse_port),
            "NOCTIS_AE_TITLE": self.ae_title,
            # Unauthenticated unless extra_env sets NOCTIS_AUTH_MODE: it binds loopback.
            "NOCTIS_AUTH_MODE": "off",
            **self.extra_env,
        }
        self.log_path = self.data_dir.parent / f"archive-{self.http_port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "noctis_archive"], env=env, stdout=log, stderr=log
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
                raise RuntimeError(f"the archive exited early; log:\n{self.log()}")
            try:
                if httpx.get(f"{self.http_url}/health", timeout=1).status_code == 200:
                    wait_for_port(self.dimse_port, timeout_s=max(1.0, deadline - time.monotonic()))
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the archive did not start in {timeout_s} s; log:\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """End the process with SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; run `make system-deps` (Debian package dcmtk)"
        )
    return path


def running_archive(data_dir: Path, **kwargs: object) -> Iterator[ArchiveProcess]:
    archive = ArchiveProcess(data_dir=data_dir, **kwargs)  # type: ignore[arg-type]
    archive.start()
    try:
        yield archive
    finally:
        archive.stop()
