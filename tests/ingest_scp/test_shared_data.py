"""dcmsend sends every file of the real DICOM sample folder (SHARED_DATA_DIR) to the SCP.

One dcmsend run sends the files in sorted path order, so within each group of files
that share a SOP Instance UID the first in that order is stored. The tables below
list the files whose result is not Success; each file is checked by its own test case.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
import pytest

from noctis_common.settings import Settings
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import SHARED_DATA_DIR, shared_data_files

pytestmark = [pytest.mark.dcmtk, pytest.mark.shared_data]

SUCCESS = "0x0000"
DUPLICATE_SOP_INSTANCE = "0x0111"
NOT_SENT = "not sent"

# Files dcmsend does not send, and why.
NOT_SENT_BY_DCMSEND = {
    "encodings/CT_small_no_preamble_no_meta.dcm": "no File Meta Information",
    "encodings/OT-PAL-8-face_no_preamble.dcm": "no File Meta Information",
    "rt/rtstruct.dcm": "no File Meta Information",
    "charsets/chrSQEncoding.dcm": "the dataset has no SOP Class UID",
    "charsets/chrSQEncoding1.dcm": "the dataset has no SOP Class UID",
}
# dcmtk 3.6.7 does not know the HTJ2K transfer syntaxes; later versions send them.
SENT_BY_NEWER_DCMTK_ONLY = {
    "encodings/HTJ2K_lossless_rgb.dcm",
    "encodings/HTJ2K_lossy_rgb.dcm",
}
# Later files of a SOP Instance UID group whose content differs from the stored first.
CONFLICTING_RESENDS = {
    "charsets/chrFrenMulti.dcm",
    "charsets/chrJapMultiExplicitIR6.dcm",
    "multiframe/US_ybr_30frame_jpeg.dcm",
    "multiframe/eMR_10frame_j2k.dcm",
    "multiframe/eMR_10frame_jpegls.dcm",
    "multiframe/eMR_10frame_rle.dcm",
    "wg04-compression/NM1_JPLY.dcm",
}
# Later files of a group with the same elements in another transfer syntax: Success,
# with nothing stored beyond the first copy.
EQUAL_RESENDS = {
    "encodings/MR_small_explicitLE.dcm",
    "encodings/MR_small_implicitLE.dcm",
    "multiframe/eMR_10frame_bigendian.dcm",
}

SHARED_FILES = shared_data_files()
FILE_PARAMETERS = [
    pytest.param(path.relative_to(SHARED_DATA_DIR).as_posix(), id=path.name)
    for path in SHARED_FILES
] or [pytest.param("", marks=pytest.mark.skip(reason=f"{SHARED_DATA_DIR} is absent"))]


@dataclass(frozen=True)
class SendReport:
    running: RunningSCP
    statuses: dict[str, str]


def parse_report(report: str) -> dict[str, str]:
    """Map each file name in a dcmsend transfer report to its DIMSE status code.

    A file the report marks '<not sent>' maps to :data:`NOT_SENT`.
    """
    statuses: dict[str, str] = {}
    for block in report.split("\n\n"):
        filename = re.search(r"^Filename\s*: (.+)$", block, re.MULTILINE)
        status = re.search(r"^DIMSE Status\s*: (0x[0-9A-Fa-f]{4})?", block, re.MULTILINE)
        if filename and status:
            statuses[filename.group(1).strip()] = status.group(1) or NOT_SENT
    return statuses


@pytest.fixture(scope="module")
def send_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SendReport]:
    """Send all files with one dcmsend run for the whole module."""
    if not SHARED_FILES:
        pytest.skip(f"{SHARED_DATA_DIR} is absent")
    folder = tmp_path_factory.mktemp("shared-data")
    report_path = folder / "report.txt"
    with running_scp(Settings(data_dir=folder / "var")) as running:
        # -nuc leaves UID checks to the SCP; -dn sends each file in its own syntax.
        run_dcmtk(
            "dcmsend",
            "-nh",
            "-nuc",
            "-dn",
            "+crf",
            report_path,
            "127.0.0.1",
            running.port,
            *SHARED_FILES,
        )
        assert report_path.exists(), "dcmsend wrote no transfer report"
        yield SendReport(running=running, statuses=parse_report(report_path.read_text()))


def expected_status(relative_path: str) -> str:
    if relative_path in NOT_SENT_BY_DCMSEND:
        return NOT_SENT
    if relative_path in CONFLICTING_RESENDS:
        return DUPLICATE_SOP_INSTANCE
    return SUCCESS


@pytest.mark.parametrize("relative_path", FILE_PARAMETERS)
def test_shared_file_result(send_report: SendReport, relative_path: str) -> None:
    path = SHARED_DATA_DIR / relative_path
    status = send_report.statuses.get(str(path), NOT_SENT)

    if relative_path in SENT_BY_NEWER_DCMTK_ONLY and status == NOT_SENT:
        return
    assert status == expected_status(relative_path)
    if status != SUCCESS:
        return
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    instance = send_report.running.instance(str(dataset.SOPInstanceUID))
    assert instance is not None, f"{relative_path} was answered Success but is not indexed"
    assert instance.source_ae_title == "DCMSEND"


def test_listed_files_exist() -> None:
    listed = {
        *NOT_SENT_BY_DCMSEND,
        *SENT_BY_NEWER_DCMTK_ONLY,
        *CONFLICTING_RESENDS,
        *EQUAL_RESENDS,
    }
    relative_paths = {path.relative_to(SHARED_DATA_DIR).as_posix() for path in SHARED_FILES}
    assert listed <= relative_paths


def test_one_object_per_indexed_instance(send_report: SendReport) -> None:
    running = send_report.running

    assert len(running.object_files()) == running.instance_count()
