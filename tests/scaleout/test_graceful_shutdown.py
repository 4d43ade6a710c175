"""SIGTERM: services stop accepting work, finish what is in progress and exit 0."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy import select

from noctis_common.db import Database
from noctis_common.db.models import Instance
from tests.scaleout.processes import (
    ServiceProcess,
    dimse_gateway,
    wait_until_refused,
)
from tests.stow.bodies import BOUNDARY, content_type, dicom_body
from tests.support import CT_IMAGE_STORAGE, make_dataset

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

SUCCESS = 0x0000
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def stored_sop_instance_uids(service: ServiceProcess) -> set[str]:
    """Read the SOP Instance UIDs in the SQLite index of a stopped service."""
    database = Database(f"sqlite:///{service.work_dir / service.name / 'index.sqlite'}")
    try:
        with database.read_session() as session:
            return set(session.scalars(select(Instance.sop_instance_uid)))
    finally:
        database.dispose()


def open_association(port: int) -> Association:
    ae = AE(ae_title="SLOWSCU")
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN)
    association = ae.associate("127.0.0.1", port, ae_title="NOCTIS")
    assert association.is_established
    return association


def c_store_status(association: Association, dataset: Dataset) -> int:
    status = association.send_c_store(dataset)
    return int(status.Status) if "Status" in status else -1


def test_stow_request_in_flight_finishes(tmp_path: Path, services: list[ServiceProcess]) -> None:
    stow = ServiceProcess("stow", "noctis_stow", {}, tmp_path)
    services.append(stow)
    stow.start()
    dataset = make_dataset()
    body = dicom_body([dataset])
    half_sent = threading.Event()
    send_rest = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        half_sent.set()
        send_rest.wait(timeout=60)
        yield body[len(body) // 2 :]

    responses: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: responses.append(
            httpx.post(
                f"{stow.dicomweb_url}/studies",
                content=slow_body(),
                headers={"Content-Type": content_type(BOUNDARY)},
                timeout=60,
            )
        )
    )
    client.start()
    assert half_sent.wait(timeout=30)

    assert stow.process is not None
    stow.process.terminate()
    refused = wait_until_refused(stow.http_port)
    send_rest.set()
    client.join(timeout=60)
    returncode = stow.wait_for_exit()

    assert refused, "the STOW-RS service still accepted connections after SIGTERM"
    assert len(responses) == 1
    assert responses[0].status_code == 200, responses[0].text
    assert returncode == 0, stow.log_tail()
    assert dataset.SOPInstanceUID in stored_sop_instance_uids(stow)


def test_stalled_request_cut_after_timeout(tmp_path: Path, services: list[ServiceProcess]) -> None:
    stow = ServiceProcess("stow", "noctis_stow", {"NOCTIS_HTTP_SHUTDOWN_TIMEOUT_S": "1"}, tmp_path)
    services.append(stow)
    stow.start()
    body = dicom_body([make_dataset()])
    release_client = threading.Event()
    half_sent = threading.Event()

    def stalled_body() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        half_sent.set()
        release_client.wait(timeout=60)

    errors: list[Exception] = []

    def send() -> None:
        try:
            httpx.post(
                f"{stow.dicomweb_url}/studies",
                content=stalled_body(),
                headers={"Content-Type": content_type(BOUNDARY)},
                timeout=60,
            )
        except httpx.HTTPError as error:
            errors.append(error)

    client = threading.Thread(target=send)
    client.start()
    assert half_sent.wait(timeout=30)

    returncode = stow.terminate(timeout_s=60)
    release_client.set()
    client.join(timeout=60)

    assert returncode == 0, stow.log_tail()
    assert "timeout graceful shutdown exceeded" in stow.log_text()


def test_dimse_association_in_flight_finishes(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    gateway = dimse_gateway("ingest-scp", {}, tmp_path)
    services.append(gateway)
    gateway.start()
    assert gateway.dimse_port is not None
    first, second = make_dataset(), make_dataset()

    association = open_association(gateway.dimse_port)
    first_status = c_store_status(association, first)
    assert gateway.process is not None
    gateway.process.terminate()
    refused = wait_until_refused(gateway.dimse_port)
    readiness = httpx.get(f"{gateway.url}/health/ready", timeout=10)
    second_status = c_store_status(association, second)
    association.release()
    returncode = gateway.wait_for_exit()

    assert first_status == SUCCESS
    assert refused, "the DIMSE gateway still accepted connections after SIGTERM"
    assert readiness.status_code == 503
    assert readiness.json()["status"] == "shutting down"
    assert second_status == SUCCESS
    assert returncode == 0, gateway.log_tail()
    assert stored_sop_instance_uids(gateway) == {first.SOPInstanceUID, second.SOPInstanceUID}
    assert "0 association(s) aborted at shutdown" in gateway.log_text()


def test_idle_association_aborted_after_timeout(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    gateway = dimse_gateway("ingest-scp", {"NOCTIS_DIMSE_SHUTDOWN_TIMEOUT_S": "1"}, tmp_path)
    services.append(gateway)
    gateway.start()
    assert gateway.dimse_port is not None
    association = open_association(gateway.dimse_port)

    returncode = gateway.terminate()

    assert returncode == 0, gateway.log_tail()
    assert "1 association(s) aborted at shutdown" in gateway.log_text()
    association.abort()
