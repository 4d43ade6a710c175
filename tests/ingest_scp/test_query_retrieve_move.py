"""C-MOVE through the gateway: dcmtk's movescu and pynetdicom as SCUs, destinations over loopback.

The destination AE title DEST listens on one port per module: dcmtk's storescp for the
byte-for-byte checks, a pynetdicom Storage SCP where a test needs chosen statuses,
transfer syntaxes or timing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.events import Event

from noctis_common.settings import Settings
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.ingest_scp.qr_support import (
    CANCEL,
    DESTINATION_AE,
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    MOVE_DESTINATION_UNKNOWN,
    NO_ADDRESS_AE,
    NO_PERMISSION_AE,
    NOT_AUTHORIZED,
    PATIENT_ROOT_MOVE,
    PENDING,
    QUERY_AE,
    STUDY_ROOT_MOVE,
    SUB_OPERATIONS_WARNING,
    SUCCESS,
    UNABLE_TO_PERFORM_SUB_OPERATIONS,
    UNREACHABLE_AE,
    Catalog,
    StorageDestination,
    associated,
    cancel_arrived,
    identifier,
    move,
    populate,
    qr_settings,
    received_datasets,
    store,
    stored_dataset_bytes,
    storescp,
    wait_until,
)
from tests.support import dataset_bytes, free_port, make_dataset, pydicom_test_files

pytestmark = pytest.mark.dcmtk

# A CT image in JPEG 2000 Lossless that pydicom ships.
COMPRESSED_FILE = "693_J2KR.dcm"


@dataclass
class MoveArchive:
    scp: RunningSCP
    catalog: Catalog
    destination_port: int
    implicit_study: str
    implicit_instance: str
    compressed_study: str
    compressed_instance: str


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoveArchive]:
    """One SCP over a SQLite index with the generated studies and two more.

    One more study contains a CT stored in Implicit VR Little Endian, the other a CT
    stored in JPEG 2000 Lossless.
    """
    folder = tmp_path_factory.mktemp("move")
    destination_port = free_port()
    settings = qr_settings(Settings(data_dir=folder / "var"), folder, destination_port)
    with running_scp(settings) as scp:
        catalog = populate(scp.context)
        implicit = make_dataset(patient_id="PID-C", patient_name="Implicit^Ivy")
        implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        store(scp.context, implicit)
        [compressed_path] = [path for path in pydicom_test_files() if path.name == COMPRESSED_FILE]
        compressed = pydicom.dcmread(compressed_path)
        store(scp.context, compressed)
        yield MoveArchive(
            scp,
            catalog,
            destination_port,
            implicit.StudyInstanceUID,
            implicit.SOPInstanceUID,
            compressed.StudyInstanceUID,
            compressed.SOPInstanceUID,
        )


def _statuses(responses: list[tuple[Dataset, Dataset | None]]) -> list[int]:
    return [int(status.Status) for status, _ in responses]


def _final(responses: list[tuple[Dataset, Dataset | None]]) -> tuple[Dataset, Dataset | None]:
    return responses[-1]


def _study_request(study_instance_uid: str | list[str]) -> Dataset:
    return identifier("STUDY", StudyInstanceUID=study_instance_uid)


def test_movescu_study_arrives_byte_identical(archive: MoveArchive, tmp_path: Path) -> None:
    study_instance_uid = archive.catalog.patients["PID-A"][0]

    with storescp(archive.destination_port, tmp_path / "received") as folder:
        result = run_dcmtk(
            "movescu",
            "-v",
            "-S",
            "-aet",
            QUERY_AE,
            "-aec",
            "NOCTIS",
            "-aem",
            DESTINATION_AE,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_instance_uid}",
            "127.0.0.1",
            archive.scp.port,
        )

    assert "Received Final Move Response (Success)" in result.stdout, result.stdout
    received = received_datasets(folder)
    expected = archive.catalog.study_instances(study_instance_uid)
    assert sorted(received) == sorted(expected)
    for sop_instance_uid in expected:
        stored = stored_dataset_bytes(archive.scp, sop_instance_uid)
        assert received[sop_instance_uid] == stored, sop_instance_uid


def test_movescu_compressed_instance_sent_as_stored(archive: MoveArchive, tmp_path: Path) -> None:
    with storescp(archive.destination_port, tmp_path / "received") as folder:
        result = run_dcmtk(
            "movescu",
            "-S",
            "-aet",
            QUERY_AE,
            "-aem",
            DESTINATION_AE,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={archive.compressed_study}",
            "127.0.0.1",
            archive.scp.port,
        )

    assert result.returncode == 0, result.stdout
    [path] = list(folder.iterdir())
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        "1.2.840.10008.1.2.4.90"
    )
    stored = stored_dataset_bytes(archive.scp, archive.compressed_instance)
    assert dataset_bytes(path) == stored


def test_move_reports_counts_per_sub_operation(archive: MoveArchive) -> None:
    study_instance_uid = archive.catalog.patients["PID-A"][0]
    expected = archive.catalog.study_instances(study_instance_uid)

    with StorageDestination(archive.destination_port) as destination:
        responses = move(archive.scp.port, _study_request(study_instance_uid))

    assert _statuses(responses) == [PENDING, PENDING, SUCCESS]
    counts = [
        (
            status.get("NumberOfRemainingSuboperations"),
            status.NumberOfCompletedSuboperations,
            status.NumberOfFailedSuboperations,
            status.NumberOfWarningSuboperations,
        )
        for status, _ in responses
    ]
    assert counts == [(2, 1, 0, 0), (1, 2, 0, 0), (None, 3, 0, 0)]
    assert _final(responses)[1] is None
    assert sorted(destination.received) == sorted(expected)
    assert set(destination.move_originators) == {(QUERY_AE, 1)}


def test_move_lists_of_series_and_images(archive: MoveArchive) -> None:
    catalog = archive.catalog
    study_instance_uid = catalog.patients["PID-A"][0]
    series = catalog.series[study_instance_uid]
    images = catalog.instances[series[0]]

    with StorageDestination(archive.destination_port) as destination:
        series_move = move(
            archive.scp.port,
            identifier("SERIES", StudyInstanceUID=study_instance_uid, SeriesInstanceUID=series),
        )
        series_received = sorted(destination.received)
        destination.received.clear()
        image_move = move(
            archive.scp.port,
            identifier(
                "IMAGE",
                StudyInstanceUID=study_instance_uid,
                SeriesInstanceUID=series[0],
                SOPInstanceUID=images[1],
            ),
        )

    assert _final(series_move)[0].Status == SUCCESS
    assert series_received == sorted(catalog.study_instances(study_instance_uid))
    assert _final(image_move)[0].NumberOfCompletedSuboperations == 1
    assert list(destination.received) == [images[1]]


def test_patient_root_moves_every_study(archive: MoveArchive) -> None:
    catalog = archive.catalog
    expected = [
        uid for study in catalog.patients["PID-A"] for uid in catalog.study_instances(study)
    ]

    with StorageDestination(archive.destination_port) as destination:
        responses = move(
            archive.scp.port, identifier("PATIENT", PatientID="PID-A"), model=PATIENT_ROOT_MOVE
        )

    assert _final(responses)[0].NumberOfCompletedSuboperations == len(expected)
    assert sorted(destination.received) == sorted(expected)


def test_some_failed_sub_operations_warn(archive: MoveArchive) -> None:
    study_instance_uid = archive.catalog.patients["PID-A"][0]
    rejected = archive.catalog.study_instances(study_instance_uid)[1]

    with StorageDestination(archive.destination_port, status_for={rejected: 0xA700}):
        responses = move(archive.scp.port, _study_request(study_instance_uid))

    final_status, final_identifier = _final(responses)
    assert final_status.Status == SUB_OPERATIONS_WARNING
    assert final_status.NumberOfCompletedSuboperations == 2
    assert final_status.NumberOfFailedSuboperations == 1
    assert "NumberOfRemainingSuboperations" not in final_status
    assert final_identifier is not None
    assert final_identifier.FailedSOPInstanceUIDList == rejected


def test_all_failed_sub_operations_fail(archive: MoveArchive) -> None:
    study_instance_uid = archive.catalog.patients["PID-A"][1]
    instances = archive.catalog.study_instances(study_instance_uid)

    with StorageDestination(archive.destination_port, status_for=dict.fromkeys(instances, 0xC000)):
        responses = move(archive.scp.port, _study_request(study_instance_uid))

    final_status, final_identifier = _final(responses)
    assert final_status.Status == UNABLE_TO_PERFORM_SUB_OPERATIONS
    assert final_status.NumberOfFailedSuboperations == 2
    assert final_identifier is not None
    assert list(final_identifier.FailedSOPInstanceUIDList) == instances


def test_implicit_instance_falls_back_to_explicit(archive: MoveArchive) -> None:
    with StorageDestination(
        archive.destination_port, transfer_syntaxes=(ExplicitVRLittleEndian,)
    ) as destination:
        responses = move(archive.scp.port, _study_request(archive.implicit_study))

    assert _final(responses)[0].Status == SUCCESS
    assert destination.transfer_syntaxes == {archive.implicit_instance: ExplicitVRLittleEndian}
    received = read_dataset(
        BytesIO(destination.received[archive.implicit_instance]),
        is_implicit_VR=False,
        is_little_endian=True,
    )
    stored = read_dataset(
        BytesIO(stored_dataset_bytes(archive.scp, archive.implicit_instance)),
        is_implicit_VR=True,
        is_little_endian=True,
    )
    assert received.SOPInstanceUID == archive.implicit_instance
    assert received.PatientName == stored.PatientName
    assert received.PixelData == stored.PixelData


def test_compressed_instance_not_transcoded(archive: MoveArchive) -> None:
    with StorageDestination(archive.destination_port) as destination:
        responses = move(archive.scp.port, _study_request(archive.compressed_study))

    final_status, final_identifier = _final(responses)
    assert final_status.Status == UNABLE_TO_PERFORM_SUB_OPERATIONS
    assert final_identifier is not None
    assert final_identifier.FailedSOPInstanceUIDList == archive.compressed_instance
    assert destination.received == {}


def test_unknown_destination_refused_a801(archive: MoveArchive) -> None:
    study_instance_uid = archive.catalog.patients["PID-B"][0]

    for destination in ("NOT_A_PEER", NO_ADDRESS_AE):
        responses = move(archive.scp.port, _study_request(study_instance_uid), destination)
        assert _statuses(responses) == [MOVE_DESTINATION_UNKNOWN], destination


def test_movescu_unknown_destination_reported(archive: MoveArchive) -> None:
    result = run_dcmtk(
        "movescu",
        "-v",
        "-S",
        "-aet",
        QUERY_AE,
        "-aem",
        "NOT_A_PEER",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={archive.catalog.patients['PID-B'][0]}",
        "127.0.0.1",
        archive.scp.port,
    )

    assert "Refused: MoveDestinationUnknown" in result.stdout, result.stdout


def test_unreachable_destination_fails_every_instance(archive: MoveArchive) -> None:
    study_instance_uid = archive.catalog.patients["PID-A"][0]
    instances = archive.catalog.study_instances(study_instance_uid)

    responses = move(archive.scp.port, _study_request(study_instance_uid), UNREACHABLE_AE)

    final_status, final_identifier = _final(responses)
    assert final_status.Status == UNABLE_TO_PERFORM_SUB_OPERATIONS
    assert final_status.NumberOfFailedSuboperations == len(instances)
    assert UNREACHABLE_AE in final_status.ErrorComment
    assert final_identifier is not None
    assert list(final_identifier.FailedSOPInstanceUIDList) == instances


def test_move_without_retrieve_permission_refused(archive: MoveArchive) -> None:
    responses = move(
        archive.scp.port,
        _study_request(archive.catalog.patients["PID-B"][0]),
        ae_title=NO_PERMISSION_AE,
    )

    assert _statuses(responses) == [NOT_AUTHORIZED]
    assert "retrieve" in _final(responses)[0].ErrorComment


def test_move_without_unique_key_refused(archive: MoveArchive) -> None:
    responses = move(archive.scp.port, identifier("STUDY", PatientName="Doe^Jane"))

    assert _statuses(responses) == [IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


def test_move_of_unknown_study_succeeds_empty(archive: MoveArchive) -> None:
    responses = move(archive.scp.port, _study_request(generate_uid()))

    [(status, found)] = responses
    assert status.Status == SUCCESS
    assert status.NumberOfCompletedSuboperations == 0
    assert found is None


def test_cancel_stops_the_sub_operations(archive: MoveArchive) -> None:
    study_instance_uid = archive.catalog.patients["PID-A"][0]
    first_store_arrived = threading.Event()
    release_first_store = threading.Event()

    def hold_first_store(_event: Event) -> None:
        if not first_store_arrived.is_set():
            first_store_arrived.set()
            release_first_store.wait(timeout=10)

    with (
        StorageDestination(archive.destination_port, before_store=hold_first_store),
        associated(archive.scp.port) as association,
    ):
        responses = association.send_c_move(
            _study_request(study_instance_uid), DESTINATION_AE, STUDY_ROOT_MOVE, msg_id=7
        )
        assert first_store_arrived.wait(timeout=10)
        association.send_c_cancel(7, query_model=STUDY_ROOT_MOVE)
        assert wait_until(cancel_arrived(archive.scp, message_id=7))
        release_first_store.set()
        collected = list(responses)

    assert _statuses(collected) == [PENDING, CANCEL]
    final_status, final_identifier = _final(collected)
    assert final_status.NumberOfRemainingSuboperations == 2
    assert final_status.NumberOfCompletedSuboperations == 1
    assert final_status.NumberOfFailedSuboperations == 0
    assert not final_identifier, "no failed list without failures"
