"""storescu sends pydicom's test files, each in its own transfer syntax, through the SCP.

The files cover native, deflated, JPEG, JPEG-LS, JPEG 2000 and RLE encodings. dcmtk
re-encodes some files while sending, so a recording proxy captures the dataset bytes
storescu puts on the wire. The stored dataset must equal those bytes.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from noctis_common.settings import Settings
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.ingest_scp.recording_proxy import RecordingProxy
from tests.support import pydicom_test_files

pytestmark = pytest.mark.dcmtk

# storescu option that proposes a file's transfer syntax first (dcmtk 3.6.7).
PROPOSE_OPTIONS = {
    "1.2.840.10008.1.2": "--propose-implicit",
    "1.2.840.10008.1.2.1": "--propose-little",
    "1.2.840.10008.1.2.2": "--propose-big",
    "1.2.840.10008.1.2.1.99": "--propose-deflated",
    "1.2.840.10008.1.2.4.50": "--propose-jpeg8",
    "1.2.840.10008.1.2.4.51": "--propose-jpeg12",
    "1.2.840.10008.1.2.4.70": "--propose-lossless",
    "1.2.840.10008.1.2.4.80": "--propose-jls-lossless",
    "1.2.840.10008.1.2.4.81": "--propose-jls-lossy",
    "1.2.840.10008.1.2.4.90": "--propose-j2k-lossless",
    "1.2.840.10008.1.2.4.91": "--propose-j2k-lossy",
    "1.2.840.10008.1.2.5": "--propose-rle",
}

# Files that do not reach the index, and why.
NOT_STORED = {
    "explicit_VR-UN.dcm": "dcmtk 3.6.7 finds no SOP Class UID in it and does not send it",
    "SC_rgb_jpeg.dcm": "dcmtk 3.6.7 cannot parse its dataset and does not send it",
    "bad_sequence.dcm": "its SOP Instance UID is hexadecimal, not a UID: 0xC000",
    "color-pl.dcm": "the SCP rejects the retired Ultrasound Image Storage SOP class",
}

TEST_FILES = pydicom_test_files()


@dataclass(frozen=True)
class SentFiles:
    running: RunningSCP
    sent_datasets: dict[str, bytes]


def read_header(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # several test files carry invalid values on purpose
        return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture(scope="module")
def sent_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentFiles]:
    """Send every test file, grouped by transfer syntax, once for the whole module."""
    data_dir = tmp_path_factory.mktemp("pydicom-files") / "var"
    with running_scp(Settings(data_dir=data_dir)) as running:
        groups: dict[str, list[Path]] = defaultdict(list)
        for path in TEST_FILES:
            groups[str(read_header(path).file_meta.TransferSyntaxUID)].append(path)
        proxy = RecordingProxy(running.port)
        try:
            for transfer_syntax_uid, paths in groups.items():
                option = PROPOSE_OPTIONS[transfer_syntax_uid]
                run_dcmtk("storescu", "-R", "-nh", option, "127.0.0.1", proxy.port, *paths)
        finally:
            proxy.close()
        yield SentFiles(running=running, sent_datasets=proxy.datasets)


@pytest.mark.parametrize("path", TEST_FILES, ids=[path.name for path in TEST_FILES])
def test_test_file_stored_as_sent(sent_files: SentFiles, path: Path) -> None:
    header = read_header(path)
    sop_instance_uid = str(header.SOPInstanceUID)
    instance = sent_files.running.instance(sop_instance_uid)

    if path.name in NOT_STORED:
        assert instance is None, f"{path.name} is stored although {NOT_STORED[path.name]}"
        return
    assert sop_instance_uid in sent_files.sent_datasets, f"storescu did not send {path.name}"
    assert instance is not None, f"{path.name} is not in the index"
    assert instance.transfer_syntax_uid == header.file_meta.TransferSyntaxUID
    stored = sent_files.running.stored_dataset_bytes(instance)
    assert stored == sent_files.sent_datasets[sop_instance_uid]
