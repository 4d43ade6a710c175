"""C-GET through the gateway: dcmtk's getscu and pynetdicom as SCUs over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from noctis_common.settings import Settings
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.ingest_scp.qr_support import (
    CANCEL,
    NO_PERMISSION_AE,
    NOT_AUTHORIZED,
    PATIENT_ROOT_GET,
    PENDING,
    QUERY_AE,
    STUDY_ROOT_GET,
    SUB_OPERATIONS_WARNING,
    SUCCESS,
    Catalog,
    associated,
    cancel_arrived,
    get_ae,
    get_roles,
    identifier,
    populate,
    qr_settings,
    received_datasets,
    stored_dataset_bytes,
    wait_until,
)
from tests.support import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, free_port


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSCP, Catalog]]:
    """One SCP over a SQLite index holding the studies of ``populate``."""
    folder = tmp_path_factory.mktemp("get")
    settings = qr_settings(Settings(data_dir=folder / "var"), folder, free_port())
    with running_scp(settings) as scp:
        yield scp, populate(scp.context)


@pytest.fixture
def scp(archive: tuple[RunningSCP, Catalog]) -> RunningSCP:
    return archive[0]


@pytest.fixture
def catalog(archive: tuple[RunningSCP, Catalog]) -> Catalog:
    return archive[1]


class Requestor:
    """A C-GET SCU that acts as Storage SCP for what it retrieves."""

    def __init__(
        self, sop_class_uids: tuple[str, ...] = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)
    ) -> None:
        self.sop_class_uids = sop_class_uids
        self.received: list[str] = []

    def handle_store(self, event: Event) -> int:
        request = cast(C_STORE, event.request)
        self.received.append(str(request.AffectedSOPInstanceUID))
        return SUCCESS

    def get(
        self, port: int, request: Dataset, model: str = STUDY_ROOT_GET, ae_title: str = QUERY_AE
    ) -> list[tuple[Dataset, Dataset | None]]:
        ae = get_ae(self.sop_class_uids)
        ae.ae_title = ae_title
        with associated(
            port,
            ae,
            ext_neg=get_roles(self.sop_class_uids),
            evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
        ) as association:
            return list(association.send_c_get(request, model))


def _statuses(responses: list[tuple[Dataset, Dataset | None]]) -> list[int]:
    return [int(status.Status) for status, _ in responses]


@pytest.mark.dcmtk
def test_getscu_study_arrives_byte_identical(
    scp: RunningSCP, catalog: Catalog, tmp_path: Path
) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]
    folder = tmp_path / "received"
    folder.mkdir()

    result = run_dcmtk(
        "getscu",
        "-v",
        "-S",
        "-aet",
        QUERY_AE,
        "-aec",
        "NOCTIS",
        "-od",
        folder,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_instance_uid}",
        "127.0.0.1",
        scp.port,
    )

    assert "Received C-GET Response (Success)" in result.stdout, result.stdout
    received = received_datasets(folder)
    expected = catalog.study_instances(study_instance_uid)
    assert sorted(received) == sorted(expected)
    for sop_instance_uid in expected:
        assert received[sop_instance_uid] == stored_dataset_bytes(scp, sop_instance_uid)


def test_get_reports_counts_per_sub_operation(scp: RunningSCP, catalog: Catalog) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]
    requestor = Requestor()

    responses = requestor.get(scp.port, identifier("STUDY", StudyInstanceUID=study_instance_uid))

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
    assert requestor.received == catalog.study_instances(study_instance_uid)


def test_patient_root_gets_every_study(scp: RunningSCP, catalog: Catalog) -> None:
    requestor = Requestor()

    responses = requestor.get(
        scp.port, identifier("PATIENT", PatientID="PID-B"), model=PATIENT_ROOT_GET
    )

    assert _statuses(responses)[-1] == SUCCESS
    assert requestor.received == catalog.study_instances(catalog.patients["PID-B"][0])


def test_sop_class_not_offered_fails_its_instances(scp: RunningSCP, catalog: Catalog) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]
    ct_series, mr_series = catalog.series[study_instance_uid]
    requestor = Requestor(sop_class_uids=(MR_IMAGE_STORAGE,))

    responses = requestor.get(scp.port, identifier("STUDY", StudyInstanceUID=study_instance_uid))

    final_status, final_identifier = responses[-1]
    assert final_status.Status == SUB_OPERATIONS_WARNING
    assert final_status.NumberOfCompletedSuboperations == 1
    assert final_status.NumberOfFailedSuboperations == 2
    assert final_identifier is not None
    assert list(final_identifier.FailedSOPInstanceUIDList) == catalog.instances[ct_series]
    assert requestor.received == catalog.instances[mr_series]


def test_get_without_retrieve_permission_refused(scp: RunningSCP, catalog: Catalog) -> None:
    requestor = Requestor()

    responses = requestor.get(
        scp.port,
        identifier("STUDY", StudyInstanceUID=catalog.patients["PID-B"][0]),
        ae_title=NO_PERMISSION_AE,
    )

    assert _statuses(responses) == [NOT_AUTHORIZED]
    assert requestor.received == []


def test_cancel_stops_the_sub_operations(scp: RunningSCP, catalog: Catalog) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]

    class CancellingRequestor(Requestor):
        def handle_store(self, event: Event) -> int:
            if not self.received:
                event.assoc.send_c_cancel(3, query_model=STUDY_ROOT_GET)
                assert wait_until(cancel_arrived(scp, message_id=3))
            return super().handle_store(event)

    requestor = CancellingRequestor()
    with associated(
        scp.port,
        get_ae(),
        ext_neg=get_roles(),
        evt_handlers=[(evt.EVT_C_STORE, requestor.handle_store)],
    ) as association:
        responses = list(
            association.send_c_get(
                identifier("STUDY", StudyInstanceUID=study_instance_uid), STUDY_ROOT_GET, msg_id=3
            )
        )

    assert _statuses(responses) == [PENDING, CANCEL]
    final_status, _ = responses[-1]
    assert final_status.NumberOfRemainingSuboperations == 2
    assert final_status.NumberOfCompletedSuboperations == 1
    assert len(requestor.received) == 1
