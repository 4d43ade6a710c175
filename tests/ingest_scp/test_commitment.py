"""Storage Commitment Push Model SCP with a pynetdicom requestor over loopback."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from noctis_common.db import Database
from noctis_common.settings import Settings
from noctis_ingest_scp import commitment as commitment_module
from noctis_ingest_scp.commitment import (
    STORAGE_COMMITMENT_PUSH_MODEL,
    STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
    CommitmentResult,
    ReferencedInstance,
)
from tests.ingest_scp.helpers import RunningSCP, running_scp
from tests.support import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, free_port, make_dataset

REPORT_TIMEOUT_S = 20.0
COMMITMENT_LOGGER = "noctis_ingest_scp.commitment"

Report = tuple[int | None, Dataset]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@dataclass
class Requestor:
    """A modality's AE: its listener port for reports on a new association, and the reports."""

    listener_port: int
    reports: queue.Queue[Report]

    def handle_event_report(self, event: Event) -> tuple[int, None]:
        self.reports.put((event.event_type, event.event_information))
        return 0x0000, None

    def associate(self, port: int, ae_title: str = "MODALITY") -> Association:
        requestor = AE(ae_title=ae_title)
        requestor.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        requestor.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
        association = requestor.associate(
            "127.0.0.1",
            port,
            ae_title="NOCTIS",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.handle_event_report)],
        )
        assert association.is_established
        return association

    def next_report(self) -> Report:
        return self.reports.get(timeout=REPORT_TIMEOUT_S)


@pytest.fixture
def requestor() -> Requestor:
    return Requestor(listener_port=free_port(), reports=queue.Queue())


def running_commitment_scp(
    settings: Settings, folder: Path, requestor: Requestor, **overrides: object
) -> Iterator[RunningSCP]:
    peers = folder / "peers.json"
    peers.write_text(
        json.dumps(
            {
                "peers": [
                    {
                        "ae_title": "MODALITY",
                        "host": "127.0.0.1",
                        "port": requestor.listener_port,
                        "permissions": ["echo", "store", "commit"],
                    },
                    {"ae_title": "NOCOMMIT", "permissions": ["echo", "store"]},
                    {"ae_title": "NOADDRESS", "permissions": ["commit"]},
                ]
            }
        )
    )
    with running_scp(settings, dimse_peers_file=peers, **overrides) as running:
        yield running


@pytest.fixture
def commitment_scp(
    settings: Settings, tmp_path: Path, requestor: Requestor
) -> Iterator[RunningSCP]:
    """The SCP over SQLite and PostgreSQL, with MODALITY, NOCOMMIT and NOADDRESS as peers."""
    yield from running_commitment_scp(settings, tmp_path, requestor)


@pytest.fixture
def sqlite_commitment_scp(
    sqlite_settings: Settings, tmp_path: Path, requestor: Requestor
) -> Iterator[RunningSCP]:
    yield from running_commitment_scp(sqlite_settings, tmp_path, requestor, dimse_timeout_s=2.0)


def action_information(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    information = Dataset()
    information.TransactionUID = transaction_uid
    items = []
    for sop_class_uid, sop_instance_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class_uid
        item.ReferencedSOPInstanceUID = sop_instance_uid
        items.append(item)
    information.ReferencedSOPSequence = items
    return information


def without_transaction_uid() -> Dataset:
    information = action_information(generate_uid(), [(CT_IMAGE_STORAGE, generate_uid())])
    del information.TransactionUID
    return information


def request_commitment(association: Association, information: Dataset) -> int:
    status, _ = association.send_n_action(
        information, 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE
    )
    return int(status.Status)


def store(association: Association, count: int) -> list[Dataset]:
    datasets = [make_dataset() for _ in range(count)]
    for dataset in datasets:
        assert association.send_c_store(dataset).Status == 0x0000
    return datasets


def referenced_uids(sequence: list[Dataset]) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in sequence}


def test_stored_instances_committed(commitment_scp: RunningSCP, requestor: Requestor) -> None:
    association = requestor.associate(commitment_scp.port)
    try:
        datasets = store(association, 2)
        transaction_uid = generate_uid()
        references = [(CT_IMAGE_STORAGE, str(dataset.SOPInstanceUID)) for dataset in datasets]

        status = request_commitment(association, action_information(transaction_uid, references))
        event_type, information = requestor.next_report()
    finally:
        association.release()

    assert status == 0x0000
    assert event_type == 1
    assert information.TransactionUID == transaction_uid
    assert information.RetrieveAETitle == "NOCTIS"
    assert referenced_uids(information.ReferencedSOPSequence) == {
        str(dataset.SOPInstanceUID) for dataset in datasets
    }
    assert "FailedSOPSequence" not in information


def test_missing_and_conflicting_instances_fail(
    commitment_scp: RunningSCP, requestor: Requestor
) -> None:
    association = requestor.associate(commitment_scp.port)
    try:
        [stored, conflicting] = store(association, 2)
        missing_uid = generate_uid()
        references = [
            (CT_IMAGE_STORAGE, str(stored.SOPInstanceUID)),
            (MR_IMAGE_STORAGE, str(conflicting.SOPInstanceUID)),
            (CT_IMAGE_STORAGE, missing_uid),
        ]

        request_commitment(association, action_information(generate_uid(), references))
        event_type, information = requestor.next_report()
    finally:
        association.release()

    assert event_type == 2
    assert referenced_uids(information.ReferencedSOPSequence) == {str(stored.SOPInstanceUID)}
    reasons = {
        str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
        for item in information.FailedSOPSequence
    }
    assert reasons == {str(conflicting.SOPInstanceUID): 0x0119, missing_uid: 0x0112}


def test_nothing_stored_has_no_referenced_sequence(
    sqlite_commitment_scp: RunningSCP, requestor: Requestor
) -> None:
    association = requestor.associate(sqlite_commitment_scp.port)
    try:
        request_commitment(
            association, action_information(generate_uid(), [(CT_IMAGE_STORAGE, generate_uid())])
        )
        event_type, information = requestor.next_report()
    finally:
        association.release()

    assert event_type == 2
    assert "ReferencedSOPSequence" not in information
    assert len(information.FailedSOPSequence) == 1


@pytest.fixture
def requestor_listener(requestor: Requestor) -> Iterator[ThreadedAssociationServer]:
    """The modality's own SCP, accepting the SCP role of Storage Commitment from the archive."""
    listener = AE(ae_title="MODALITY")
    listener.add_supported_context(
        STORAGE_COMMITMENT_PUSH_MODEL, ExplicitVRLittleEndian, scu_role=False, scp_role=True
    )
    server = listener.start_server(
        ("127.0.0.1", requestor.listener_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, requestor.handle_event_report)],
    )
    assert server is not None
    yield server
    server.shutdown()


def test_report_on_new_association_after_abort(
    sqlite_commitment_scp: RunningSCP,
    requestor: Requestor,
    requestor_listener: ThreadedAssociationServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger=COMMITMENT_LOGGER)
    aborted = threading.Event()
    check = commitment_module.check_commitment

    def check_once_association_ended(
        database: Database, references: Sequence[ReferencedInstance]
    ) -> CommitmentResult:
        # Hold the report until the requestor's association is gone on both sides.
        assert aborted.wait(REPORT_TIMEOUT_S)
        assert wait_until(lambda: not sqlite_commitment_scp.scp.active_associations)
        return check(database, references)

    monkeypatch.setattr(commitment_module, "check_commitment", check_once_association_ended)
    association = requestor.associate(sqlite_commitment_scp.port)
    [dataset] = store(association, 1)
    transaction_uid = generate_uid()
    request_commitment(
        association,
        action_information(transaction_uid, [(CT_IMAGE_STORAGE, str(dataset.SOPInstanceUID))]),
    )
    association.abort()
    aborted.set()

    event_type, information = requestor.next_report()

    assert event_type == 1
    assert information.TransactionUID == transaction_uid
    # The log line follows the N-EVENT-REPORT response, so it may come a moment later.
    assert wait_until(
        lambda: any(
            "N-EVENT-REPORT sent on a new association to MODALITY at 127.0.0.1"
            in record.getMessage()
            for record in caplog.records
        )
    )


def test_release_after_response_gets_new_association(
    sqlite_commitment_scp: RunningSCP,
    requestor: Requestor,
    requestor_listener: ThreadedAssociationServer,
) -> None:
    association = requestor.associate(sqlite_commitment_scp.port)
    [dataset] = store(association, 1)
    transaction_uid = generate_uid()
    request_commitment(
        association,
        action_information(transaction_uid, [(CT_IMAGE_STORAGE, str(dataset.SOPInstanceUID))]),
    )
    association.release()

    event_type, information = requestor.next_report()

    assert association.is_released
    assert event_type == 1
    assert information.TransactionUID == transaction_uid


def test_requestor_without_address_logged(
    sqlite_commitment_scp: RunningSCP,
    requestor: Requestor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger=COMMITMENT_LOGGER)
    association = requestor.associate(sqlite_commitment_scp.port, ae_title="NOADDRESS")
    transaction_uid = generate_uid()
    request_commitment(
        association, action_information(transaction_uid, [(CT_IMAGE_STORAGE, generate_uid())])
    )
    association.release()

    assert wait_until(
        lambda: any(
            f"cannot deliver Storage Commitment transaction {transaction_uid}"
            in record.getMessage()
            and "AE NOADDRESS has no host and port" in record.getMessage()
            for record in caplog.records
        )
    )
    assert requestor.reports.empty()


def test_commit_without_permission_refused(
    sqlite_commitment_scp: RunningSCP, requestor: Requestor
) -> None:
    association = requestor.associate(sqlite_commitment_scp.port, ae_title="NOCOMMIT")
    try:
        status = request_commitment(
            association, action_information(generate_uid(), [(CT_IMAGE_STORAGE, generate_uid())])
        )
    finally:
        association.release()

    assert status == 0x0124
    assert requestor.reports.empty()


@pytest.mark.parametrize(
    ("information", "expected_status"),
    [
        (without_transaction_uid(), 0x0115),
        (action_information(generate_uid(), []), 0x0115),
        (action_information("not-a-uid", [(CT_IMAGE_STORAGE, "1.2.3")]), 0x0115),
        (action_information(generate_uid(), [("", "1.2.3")]), 0x0115),
    ],
    ids=["no transaction uid", "no references", "bad transaction uid", "no sop class"],
)
def test_invalid_request_rejected(
    sqlite_commitment_scp: RunningSCP,
    requestor: Requestor,
    information: Dataset,
    expected_status: int,
) -> None:
    association = requestor.associate(sqlite_commitment_scp.port)
    try:
        status = request_commitment(association, information)
    finally:
        association.release()

    assert status == expected_status


def test_unknown_action_type_rejected(
    sqlite_commitment_scp: RunningSCP, requestor: Requestor
) -> None:
    association = requestor.associate(sqlite_commitment_scp.port)
    try:
        status, _ = association.send_n_action(
            action_information(generate_uid(), [(CT_IMAGE_STORAGE, generate_uid())]),
            2,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        )
    finally:
        association.release()

    assert status.Status == 0x0123
