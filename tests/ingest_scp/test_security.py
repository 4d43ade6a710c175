"""Association rejection by AE title and per-operation permissions from the peer list."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from noctis_common.settings import Settings
from noctis_ingest_scp.presentation import VERIFICATION_SOP_CLASS_UID
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import CT_IMAGE_STORAGE, make_dataset

NOT_AUTHORIZED = 0x0124
SECURITY_LOGGER = "noctis_ingest_scp.security"


def write_peers(folder: Path, *peers: dict[str, object]) -> Path:
    path = folder / "peers.json"
    path.write_text(json.dumps({"peers": list(peers)}))
    return path


def associate(port: int, calling_ae_title: str, called_ae_title: str = "NOCTIS") -> Association:
    requestor = AE(ae_title=calling_ae_title)
    requestor.add_requested_context(VERIFICATION_SOP_CLASS_UID)
    requestor.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    return requestor.associate("127.0.0.1", port, ae_title=called_ae_title)


@pytest.fixture
def restricted_scp(sqlite_settings: Settings, tmp_path: Path) -> Iterator[RunningSCP]:
    """An SCP whose peer list has ECHOONLY and STOREONLY and rejects other calling AEs."""
    peers = write_peers(
        tmp_path,
        {"ae_title": "ECHOONLY", "permissions": ["echo"]},
        {"ae_title": "STOREONLY", "permissions": ["store"]},
    )
    with running_scp(
        sqlite_settings,
        dimse_peers_file=peers,
        dimse_unknown_peer_permissions="",
        dimse_check_called_ae_title=True,
    ) as running:
        yield running


@pytest.mark.dcmtk
def test_wrong_called_ae_title_rejected(restricted_scp: RunningSCP) -> None:
    result = run_dcmtk(
        "echoscu", "-v", "-aet", "ECHOONLY", "-aec", "OTHER", "127.0.0.1", restricted_scp.port
    )

    assert result.returncode != 0
    assert "Association Rejected" in result.stdout
    assert "Called AE Title Not Recognized" in result.stdout


@pytest.mark.dcmtk
def test_unknown_calling_ae_title_rejected(restricted_scp: RunningSCP) -> None:
    result = run_dcmtk(
        "echoscu", "-v", "-aet", "STRANGER", "-aec", "NOCTIS", "127.0.0.1", restricted_scp.port
    )

    assert result.returncode != 0
    assert "Association Rejected" in result.stdout
    assert "Calling AE Title Not Recognized" in result.stdout


def test_rejection_reason_sent_in_rj(restricted_scp: RunningSCP) -> None:
    association = associate(restricted_scp.port, "STRANGER")

    assert association.is_rejected
    rejection = association.acceptor.primitive
    assert rejection is not None
    assert rejection.result == 0x01
    assert rejection.result_source == 0x01
    assert rejection.diagnostic == 0x03


def test_rejection_logged_with_reason(
    restricted_scp: RunningSCP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)

    association = associate(restricted_scp.port, "ECHOONLY", called_ae_title="OTHER")

    assert association.is_rejected
    messages = [record.getMessage() for record in caplog.records if record.name == SECURITY_LOGGER]
    assert any(
        "rejecting association from 'ECHOONLY' to 'OTHER'" in message
        and "the called AE title is not 'NOCTIS'" in message
        for message in messages
    )


@pytest.mark.dcmtk
def test_any_called_ae_title_by_default(sqlite_scp: RunningSCP) -> None:
    result = run_dcmtk("echoscu", "-aec", "WHATEVER", "127.0.0.1", sqlite_scp.port)

    assert result.returncode == 0, result.stdout


def test_known_peer_accepted(restricted_scp: RunningSCP) -> None:
    association = associate(restricted_scp.port, "ECHOONLY")
    try:
        assert association.is_established
        status = association.send_c_echo()
        assert status.Status == 0x0000
    finally:
        association.release()


def test_store_without_permission_refused(restricted_scp: RunningSCP) -> None:
    dataset = make_dataset()
    association = associate(restricted_scp.port, "ECHOONLY")
    try:
        status = association.send_c_store(dataset)
    finally:
        association.release()

    assert status.Status == NOT_AUTHORIZED
    assert status.ErrorComment == "AE ECHOONLY lacks the store permission"
    assert restricted_scp.instance(dataset.SOPInstanceUID) is None
    assert restricted_scp.spool_files() == []


def test_echo_without_permission_refused(restricted_scp: RunningSCP) -> None:
    association = associate(restricted_scp.port, "STOREONLY")
    try:
        status = association.send_c_echo()
    finally:
        association.release()

    assert status.Status == NOT_AUTHORIZED


def test_store_with_permission_succeeds(restricted_scp: RunningSCP) -> None:
    dataset = make_dataset()
    association = associate(restricted_scp.port, "STOREONLY")
    try:
        status = association.send_c_store(dataset)
    finally:
        association.release()

    assert status.Status == 0x0000
    assert restricted_scp.instance(dataset.SOPInstanceUID) is not None


@pytest.mark.dcmtk
def test_storescu_sees_refusal(restricted_scp: RunningSCP, tmp_path: Path) -> None:
    path = tmp_path / "instance.dcm"
    make_dataset().save_as(path, enforce_file_format=True)

    result = run_dcmtk(
        "storescu",
        "-v",
        "-aet",
        "ECHOONLY",
        "-aec",
        "NOCTIS",
        "127.0.0.1",
        restricted_scp.port,
        path,
    )

    # dcmtk 3.6.7 has no name for the general status 0124H Refused: Not Authorized.
    assert "Received Store Response (Unknown Status: 0x124)" in result.stdout
    assert restricted_scp.instance_count() == 0


def test_refusal_logged_once_per_association(
    restricted_scp: RunningSCP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SECURITY_LOGGER)
    association = associate(restricted_scp.port, "ECHOONLY")
    try:
        for _ in range(3):
            association.send_c_store(make_dataset())
    finally:
        association.release()

    refusals = [
        record.getMessage()
        for record in caplog.records
        if record.name == SECURITY_LOGGER and record.getMessage().startswith("refusing C-STORE")
    ]
    assert len(refusals) == 1
    assert "'ECHOONLY'" in refusals[0]
