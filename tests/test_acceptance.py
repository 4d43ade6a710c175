"""Acceptance test: real DICOM peers store sample files in Noctis and read them back.

Each sample set goes to two fresh ``python -m noctis_archive`` processes over loopback:

- dcmtk's dcmsend sends every file to the first archive over DIMSE C-STORE, through a
  recording proxy that keeps the dataset bytes dcmsend puts on the wire (dcmtk re-encodes
  most files while sending them).
- The files that reached the Storage SCP go, in the same order and one request each,
  to the second archive over STOW-RS as the unchanged Part 10 files.

The tests check that each file's C-STORE status and STOW-RS result follow the duplicate
policy of docs/conformance.md, and that QIDO-RS counts match what pydicom reads from the
accepted files. WADO-RS must return each stored dataset byte for byte as it was sent,
and both archives must give the same QIDO-RS results.

The sample sets are pydicom's test files, which always run, and the real DICOM files in
../shared/data/dicom, which are skipped when that folder is absent.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.datadict import tag_for_keyword

from noctis_common.archive import FailureReason
from tests.ingest_scp.helpers import run_dcmtk
from tests.ingest_scp.recording_proxy import RecordingProxy
from tests.ingest_scp.test_pydicom_files import NOT_STORED as PYDICOM_FILES_NOT_STORED
from tests.ingest_scp.test_shared_data import (
    NOT_SENT,
    SENT_BY_NEWER_DCMTK_ONLY,
    parse_report,
)
from tests.ingest_scp.test_shared_data import expected_status as expected_shared_status
from tests.stow.bodies import Part, content_type, multipart_body
from tests.support import (
    SHARED_DATA_DIR,
    ArchiveProcess,
    dataset_bytes,
    pydicom_test_files,
    shared_data_files,
)
from tests.wado.helpers import parse_multipart, part10_dataset_bytes

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.slow,
    # Several sample files are encoded in another VR than their transfer syntax names.
    pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning"),
]

SUCCESS = 0x0000
# A DIMSE status or STOW-RS FailureReason. None marks a file that dcmsend did not send,
# because it could not read the file or no presentation context fits it.
Status = int | None

PYDICOM = "pydicom"
SHARED = "shared"
DIMSE = "dimse"
STOW = "stow"

# The pydicom test file that is left out of the dcmsend run. dcmsend reads SOP Class UID
# "31" from it and sends it with -nuc. The SCP then aborts the association, so dcmsend
# does not send the files that follow.
LEFT_OUT_OF_DCMSEND = {"explicit_VR-UN.dcm"}
# The other pydicom test files that tests/ingest_scp/test_pydicom_files.py expects not to
# be stored, with their dcmsend result. dcmtk 3.6.7 cannot parse SC_rgb_jpeg.dcm, and
# the SCP rejects the retired SOP class of color-pl.dcm during association negotiation.
PYDICOM_FILE_FAILURES: dict[str, Status] = {
    "bad_sequence.dcm": FailureReason.CANNOT_UNDERSTAND,
    "SC_rgb_jpeg.dcm": None,
    "color-pl.dcm": None,
}
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
)
# Every instance as stored: transfer-syntax=* alone gets Implicit VR and big endian
# objects transcoded to Explicit VR Little Endian (PS3.18 8.7.3), so those two are named
# with a higher quality.
WADO_ACCEPT = ", ".join(
    f'multipart/related; type="application/dicom"; transfer-syntax={uid}'
    for uid in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "*; q=0.9")
)
QIDO_LIMIT = 1000
BULKDATA_URI = re.compile(r'"BulkDataURI": ?"([^"]+)"')
# Attributes that the two archives must return alike, besides the defaults of PS3.18
# tables 10.6.3-3 to -5. includefield=all would also return Group Length, Data Set
# Trailing Padding and odd-length values that dcmtk rewrites while sending a file.
SEARCH_INCLUDE_FIELDS = {
    "studies": "PatientBirthDate,PatientSex,ReferringPhysicianName",
    "series": "BodyPartExamined,SeriesDate,SeriesTime",
    "instances": "ContentDate,ContentTime,ImageType,SamplesPerPixel,PhotometricInterpretation",
}


@dataclass(frozen=True)
class SampleSet:
    """A folder of DICOM files and the result expected for each file."""

    name: str
    files: list[Path]
    # The folder that file names are relative to. When it is None, a file's name is its
    # base name.
    root: Path | None = None

    def relative_path(self, path: Path) -> str:
        if self.root is None:
            return path.name
        return path.relative_to(self.root).as_posix()

    def expected_status(self, path: Path) -> Status:
        """Return the C-STORE status, or None when dcmsend does not send the file."""
        relative_path = self.relative_path(path)
        if self.name == PYDICOM:
            return PYDICOM_FILE_FAILURES.get(relative_path, SUCCESS)
        expected = expected_shared_status(relative_path)
        return None if expected == NOT_SENT else int(expected, 16)

    def may_be_left_unsent(self, path: Path) -> bool:
        """Return whether a newer dcmtk would send a file that dcmtk 3.6.7 does not."""
        return self.name == SHARED and self.relative_path(path) in SENT_BY_NEWER_DCMTK_ONLY


def pydicom_sample_set() -> SampleSet:
    files = [path for path in pydicom_test_files() if path.name not in LEFT_OUT_OF_DCMSEND]
    return SampleSet(PYDICOM, files)


def shared_sample_set() -> SampleSet:
    return SampleSet(SHARED, shared_data_files(), SHARED_DATA_DIR)


class SentDatasets(dict[str, bytes]):
    """The mapping a RecordingProxy fills, keeping every dataset it relays in order.

    The proxy keeps only the last dataset per SOP Instance UID, but the archive keeps
    the first copy, so the test needs all of them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_sop_instance_uid: dict[str, list[bytes]] = defaultdict(list)

    def __setitem__(self, sop_instance_uid: str, dataset: bytes) -> None:
        self.by_sop_instance_uid[sop_instance_uid].append(dataset)
        super().__setitem__(sop_instance_uid, dataset)


@dataclass
class Delivery:
    """What one archive returned for each file sent to it, and the bytes it was sent."""

    archive: ArchiveProcess
    statuses: dict[Path, Status]
    # Dataset bytes of the copy the archive must keep, by SOP Instance UID.
    stored_datasets: dict[str, bytes] = field(default_factory=dict)
    stored_files: dict[str, Path] = field(default_factory=dict)


def read_header(path: Path) -> pydicom.FileDataset:
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def sop_instance_uid_of(path: Path) -> str:
    return str(read_header(path).SOPInstanceUID).strip()


def record_stored_copies(delivery: Delivery, sent_bytes: dict[Path, bytes]) -> None:
    """Fill in the first accepted copy of each SOP Instance UID, which the archive keeps."""
    for path, status in delivery.statuses.items():
        if status != SUCCESS:
            continue
        sop_instance_uid = sop_instance_uid_of(path)
        if sop_instance_uid not in delivery.stored_datasets:
            delivery.stored_datasets[sop_instance_uid] = sent_bytes[path]
            delivery.stored_files[sop_instance_uid] = path


def send_with_dcmsend(archive: ArchiveProcess, files: list[Path], folder: Path) -> Delivery:
    """Send ``files`` with one dcmsend run through a proxy that records the wire bytes."""
    report_path = folder / "dcmsend-report.txt"
    proxy = RecordingProxy(archive.dimse_port)
    sent = SentDatasets()
    proxy.datasets = sent
    try:
        # -nuc leaves UID checks to the SCP, and -dn turns decompression off.
        run_dcmtk(
            "dcmsend",
            "-nh",
            "-nuc",
            "-dn",
            "+crf",
            report_path,
            "127.0.0.1",
            proxy.port,
            *files,
        )
    finally:
        proxy.close()
    assert report_path.exists(), "dcmsend wrote no transfer report"
    report = parse_report(report_path.read_text())
    statuses: dict[Path, Status] = {}
    for path in files:
        reported = report.get(str(path), NOT_SENT)
        statuses[path] = None if reported == NOT_SENT else int(reported, 16)

    # Match each sent file to its dataset on the wire. Copies of one SOP Instance UID
    # go out in the order they were given.
    wire_bytes: dict[Path, bytes] = {}
    copies_matched: dict[str, int] = defaultdict(int)
    for path, status in statuses.items():
        if status is None:
            continue
        sop_instance_uid = sop_instance_uid_of(path)
        copies = sent.by_sop_instance_uid[sop_instance_uid]
        index = copies_matched[sop_instance_uid]
        assert index < len(copies), f"the proxy recorded no C-STORE dataset for {path}"
        wire_bytes[path] = copies[index]
        copies_matched[sop_instance_uid] += 1

    delivery = Delivery(archive=archive, statuses=statuses)
    record_stored_copies(delivery, wire_bytes)
    return delivery


def stow_status(response: httpx.Response) -> int:
    """Return the STOW-RS result of a one-instance request as a status code."""
    if response.status_code == 200:
        return SUCCESS
    assert response.status_code == 409, response.text
    body = response.json()
    (failed,) = body["00081198"]["Value"]
    return int(failed["00081197"]["Value"][0])


def send_with_stow(archive: ArchiveProcess, files: list[Path]) -> Delivery:
    """Send each Part 10 file unchanged in a STOW-RS request of its own."""
    statuses: dict[Path, Status] = {}
    with httpx.Client(base_url=archive.dicomweb_url, timeout=60) as client:
        for path in files:
            response = client.post(
                "/studies",
                content=multipart_body([Part(path.read_bytes())]),
                headers={"Content-Type": content_type(), "Accept": "application/dicom+json"},
            )
            statuses[path] = stow_status(response)
    delivery = Delivery(archive=archive, statuses=statuses)
    record_stored_copies(delivery, {path: dataset_bytes(path) for path in files})
    return delivery


def sample_set_named(name: str) -> SampleSet:
    """Return the sample set called ``name``, skipping the test when its files are absent."""
    if name == PYDICOM:
        return pydicom_sample_set()
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"the real DICOM sample folder {SHARED_DATA_DIR} is absent")
    return shared_sample_set()


class Deliveries:
    """Archives that got the sample sets, started on first use and kept for the module."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.archives: list[ArchiveProcess] = []
        self.deliveries: dict[tuple[str, str], Delivery] = {}

    def start_archive(self, name: str) -> tuple[ArchiveProcess, Path]:
        folder = self.tmp_path_factory.mktemp(name)
        archive = ArchiveProcess(data_dir=folder / "var")
        self.archives.append(archive)
        archive.start()
        return archive, folder

    def get(self, sample_set_name: str, kind: str) -> Delivery:
        """Return the archive that got ``sample_set_name`` over DIMSE or STOW-RS."""
        key = (sample_set_name, kind)
        if key not in self.deliveries:
            sample_set = sample_set_named(sample_set_name)
            archive, folder = self.start_archive(f"{sample_set_name}-{kind}")
            if kind == DIMSE:
                self.deliveries[key] = send_with_dcmsend(archive, sample_set.files, folder)
            else:
                # STOW-RS gets exactly the files that reached the Storage SCP.
                dimse_statuses = self.get(sample_set_name, DIMSE).statuses
                sent_files = [path for path, status in dimse_statuses.items() if status is not None]
                self.deliveries[key] = send_with_stow(archive, sent_files)
        return self.deliveries[key]

    def stop(self) -> None:
        for archive in self.archives:
            archive.stop()


@pytest.fixture(scope="module")
def deliveries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deliveries]:
    started = Deliveries(tmp_path_factory)
    try:
        yield started
    finally:
        started.stop()


def file_cases() -> list[Any]:
    """Return one (sample set name, file) case per file, for the tests of each file's result."""
    pydicom_set = pydicom_sample_set()
    cases = [
        pytest.param(PYDICOM, path, id=f"{PYDICOM}-{pydicom_set.relative_path(path)}")
        for path in pydicom_set.files
    ]
    shared_set = shared_sample_set()
    if not shared_set.files:
        reason = f"the real DICOM sample folder {SHARED_DATA_DIR} is absent"
        return [*cases, pytest.param(SHARED, Path(), marks=pytest.mark.skip(reason=reason))]
    cases += [
        pytest.param(
            SHARED,
            path,
            id=f"{SHARED}-{shared_set.relative_path(path)}",
            marks=pytest.mark.shared_data,
        )
        for path in shared_set.files
    ]
    return cases


FILE_CASES = file_cases()
SAMPLE_SETS = [PYDICOM, pytest.param(SHARED, marks=pytest.mark.shared_data)]
KINDS = [DIMSE, STOW]


def status_name(status: Status) -> str:
    return "not sent" if status is None else f"0x{status:04X}"


def first_value(result: dict[str, Any], tag: str) -> Any:
    values = result.get(tag, {}).get("Value", [])
    return values[0] if values else None


def test_pydicom_failures_match_ingest_table() -> None:
    listed = LEFT_OUT_OF_DCMSEND | set(PYDICOM_FILE_FAILURES)

    assert listed == set(PYDICOM_FILES_NOT_STORED)


@pytest.mark.parametrize(("sample_set_name", "path"), FILE_CASES)
def test_dcmsend_result_per_file(deliveries: Deliveries, sample_set_name: str, path: Path) -> None:
    sample_set = sample_set_named(sample_set_name)
    status = deliveries.get(sample_set_name, DIMSE).statuses[path]
    if status is None and sample_set.may_be_left_unsent(path):
        return

    assert status_name(status) == status_name(sample_set.expected_status(path))


@pytest.mark.parametrize(("sample_set_name", "path"), FILE_CASES)
def test_stow_result_per_file(deliveries: Deliveries, sample_set_name: str, path: Path) -> None:
    sample_set = sample_set_named(sample_set_name)
    if deliveries.get(sample_set_name, DIMSE).statuses[path] is None:
        pytest.skip("dcmsend did not send this file, so it is not sent over STOW-RS either")

    status = deliveries.get(sample_set_name, STOW).statuses[path]

    assert status_name(status) == status_name(sample_set.expected_status(path))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_each_instance_stored_once(deliveries: Deliveries, sample_set_name: str, kind: str) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    client = DICOMwebClient(url=delivery.archive.dicomweb_url)
    objects_dir = delivery.archive.data_dir / "objects"

    instances = client.search_for_instances(limit=QIDO_LIMIT)
    object_files = [path for path in objects_dir.rglob("*") if path.is_file()]

    indexed_uids = sorted(first_value(instance, "00080018") for instance in instances)
    assert indexed_uids == sorted(delivery.stored_datasets)
    assert len(object_files) == len(delivery.stored_datasets)


def expected_study_counts(delivery: Delivery) -> dict[str, tuple[int, int, list[str]]]:
    """Read the stored files with pydicom and return per study the series count, the
    instance count and the sorted modalities that QIDO-RS must report."""
    series: dict[str, set[str]] = defaultdict(set)
    instance_counts: dict[str, int] = defaultdict(int)
    modalities: dict[str, set[str]] = defaultdict(set)
    for path in delivery.stored_files.values():
        header = read_header(path)
        study_instance_uid = str(header.StudyInstanceUID)
        series[study_instance_uid].add(str(header.SeriesInstanceUID))
        instance_counts[study_instance_uid] += 1
        if header.get("Modality"):
            modalities[study_instance_uid].add(str(header.Modality))
    return {
        study_instance_uid: (
            len(series[study_instance_uid]),
            instance_counts[study_instance_uid],
            sorted(modalities[study_instance_uid]),
        )
        for study_instance_uid in series
    }


def expected_series_counts(delivery: Delivery) -> dict[str, int]:
    """Read the stored files with pydicom and return the instance count of each series."""
    instance_counts: dict[str, int] = defaultdict(int)
    for path in delivery.stored_files.values():
        instance_counts[str(read_header(path).SeriesInstanceUID)] += 1
    return dict(instance_counts)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_study_counts_match_files(deliveries: Deliveries, sample_set_name: str, kind: str) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    client = DICOMwebClient(url=delivery.archive.dicomweb_url)

    studies = client.search_for_studies(limit=QIDO_LIMIT)

    found = {
        first_value(study, "0020000D"): (
            first_value(study, "00201206"),
            first_value(study, "00201208"),
            sorted(study.get("00080061", {}).get("Value", [])),
        )
        for study in studies
    }
    assert found == expected_study_counts(delivery)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_series_counts_match_files(deliveries: Deliveries, sample_set_name: str, kind: str) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    client = DICOMwebClient(url=delivery.archive.dicomweb_url)

    series = client.search_for_series(limit=QIDO_LIMIT)

    found = {first_value(result, "0020000E"): first_value(result, "00201209") for result in series}
    assert found == expected_series_counts(delivery)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_retrieved_datasets_match_sent(
    deliveries: Deliveries, sample_set_name: str, kind: str
) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    client = DICOMwebClient(url=delivery.archive.dicomweb_url)
    instances = client.search_for_instances(limit=QIDO_LIMIT)
    mismatched = []

    with httpx.Client(base_url=delivery.archive.dicomweb_url, timeout=60) as http:
        for instance in instances:
            study_instance_uid = first_value(instance, "0020000D")
            series_instance_uid = first_value(instance, "0020000E")
            sop_instance_uid = first_value(instance, "00080018")
            response = http.get(
                f"/studies/{study_instance_uid}/series/{series_instance_uid}"
                f"/instances/{sop_instance_uid}",
                headers={"Accept": WADO_ACCEPT},
            )
            assert response.status_code == 200, response.text
            (part,) = parse_multipart(response)
            if part10_dataset_bytes(part.content) != delivery.stored_datasets[sop_instance_uid]:
                mismatched.append(delivery.stored_files[sop_instance_uid].name)

    assert len(instances) == len(delivery.stored_datasets)
    assert mismatched == []


def file_study_values(delivery: Delivery) -> dict[str, dict[str, list[Any]]]:
    """Return the DICOM JSON values of STUDY_KEYWORDS in the first stored file of each
    study, as pydicom encodes them."""
    studies: dict[str, dict[str, list[Any]]] = {}
    for path in delivery.stored_files.values():
        header = read_header(path)
        study_instance_uid = str(header.StudyInstanceUID)
        if study_instance_uid in studies:
            continue
        studies[study_instance_uid] = {
            keyword: header[keyword].to_json_dict(None, 0).get("Value", [])
            for keyword in STUDY_KEYWORDS
            if keyword in header
        }
    return studies


def searched_study_values(delivery: Delivery) -> dict[str, dict[str, list[Any]]]:
    """Return the values of STUDY_KEYWORDS in each QIDO-RS study result."""
    client = DICOMwebClient(url=delivery.archive.dicomweb_url)
    studies = client.search_for_studies(limit=QIDO_LIMIT, fields=list(STUDY_KEYWORDS))
    return {
        first_value(study, "0020000D"): {
            keyword: study.get(f"{tag_for_keyword(keyword):08X}", {}).get("Value", [])
            for keyword in STUDY_KEYWORDS
        }
        for study in studies
    }


def is_legacy_date(values: list[Any]) -> bool:
    """Return whether a DA value has the retired ACR-NEMA form yyyy.mm.dd."""
    return any("." in str(value) for value in values)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_study_attributes_match_files(
    deliveries: Deliveries, sample_set_name: str, kind: str
) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    expected = file_study_values(delivery)

    found = searched_study_values(delivery)

    for study_instance_uid, values in expected.items():
        # Absent and empty attributes both come back without a value.
        for keyword in STUDY_KEYWORDS:
            values.setdefault(keyword, [])
        # test_legacy_study_date_kept_whole checks these dates.
        if is_legacy_date(values["StudyDate"]):
            del values["StudyDate"]
            found.get(study_instance_uid, {}).pop("StudyDate", None)
    assert found == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_legacy_study_date_kept_whole(
    deliveries: Deliveries, sample_set_name: str, kind: str
) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    legacy_dates = {
        study_instance_uid: str(values["StudyDate"][0])
        for study_instance_uid, values in file_study_values(delivery).items()
        if is_legacy_date(values.get("StudyDate", []))
    }
    if not legacy_dates:
        pytest.skip("no study of this sample set has a StudyDate in the form yyyy.mm.dd")

    found = searched_study_values(delivery)

    # The archive may return the date as received or as yyyymmdd, but not cut short.
    cut_dates = {
        study_instance_uid: found[study_instance_uid]["StudyDate"]
        for study_instance_uid, study_date in legacy_dates.items()
        if found[study_instance_uid]["StudyDate"]
        not in ([study_date], [study_date.replace(".", "")])
    }
    assert cut_dates == {}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_bulkdata_uris_retrievable(deliveries: Deliveries, sample_set_name: str, kind: str) -> None:
    delivery = deliveries.get(sample_set_name, kind)
    client = DICOMwebClient(url=delivery.archive.dicomweb_url)
    instances = client.search_for_instances(limit=QIDO_LIMIT)
    uris = []
    failed = []

    with httpx.Client(base_url=delivery.archive.dicomweb_url, timeout=60) as http:
        for instance in instances:
            response = http.get(
                f"/studies/{first_value(instance, '0020000D')}"
                f"/series/{first_value(instance, '0020000E')}"
                f"/instances/{first_value(instance, '00080018')}/metadata"
            )
            assert response.status_code == 200, response.text
            uris += BULKDATA_URI.findall(response.text)
        for uri in uris:
            status_code = http.get(uri).status_code
            if status_code != 200:
                failed.append(f"{uri} ({status_code})")

    assert uris, "no instance metadata has a BulkDataURI"
    assert failed == []


def search_results(delivery: Delivery, resource: str, key_tag: str) -> dict[str, Any]:
    """Search ``resource`` for its default attributes and those of SEARCH_INCLUDE_FIELDS.

    The results are keyed by the UID in ``key_tag``. Links lose the archive's base URL,
    whose port differs per archive.
    """
    base_url = delivery.archive.dicomweb_url
    response = httpx.get(
        f"{base_url}/{resource}",
        params={"includefield": SEARCH_INCLUDE_FIELDS[resource], "limit": str(QIDO_LIMIT)},
        headers={"Accept": "application/dicom+json"},
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = json.loads(response.text.replace(base_url, "BASE_URL"))
    return {first_value(result, key_tag): result for result in results}


@pytest.mark.parametrize(
    ("resource", "key_tag"),
    [("studies", "0020000D"), ("series", "0020000E"), ("instances", "00080018")],
)
@pytest.mark.parametrize("sample_set_name", SAMPLE_SETS)
def test_stow_archive_matches_dimse_archive(
    deliveries: Deliveries, sample_set_name: str, resource: str, key_tag: str
) -> None:
    dimse_results = search_results(deliveries.get(sample_set_name, DIMSE), resource, key_tag)
    stow_results = search_results(deliveries.get(sample_set_name, STOW), resource, key_tag)

    assert stow_results == dimse_results
