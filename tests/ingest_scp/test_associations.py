"""Association handling: limits, socket options, the summary log line, stop and clean-up."""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ABORT, A_RELEASE

from noctis_common.settings import Settings
from noctis_ingest_scp import scp as scp_module
from noctis_ingest_scp.associations import AssociationRegistry
from noctis_ingest_scp.presentation import VERIFICATION_SOP_CLASS_UID
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import CT_IMAGE_STORAGE, dataset_bytes, make_dataset, write_series

SUMMARY_LOGGER = "noctis_ingest_scp.associations"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def summary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == SUMMARY_LOGGER and record.getMessage().startswith("association from")
    ]


@pytest.fixture
def open_association() -> Iterator[Callable[[int], Association]]:
    """Open pynetdicom associations on demand; abort those still open at the end."""
    opened: list[Association] = []

    def associate(port: int) -> Association:
        sender = AE(ae_title="PYNETDICOM")
        sender.add_requested_context(VERIFICATION_SOP_CLASS_UID)
        sender.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
        association = sender.associate("127.0.0.1", port, ae_title="NOCTIS")
        opened.append(association)
        assert association.is_established
        return association

    yield associate
    for association in opened:
        if association.is_established:
            association.abort()


@pytest.mark.dcmtk
def test_echoscu_succeeds(sqlite_scp: RunningSCP) -> None:
    result = run_dcmtk("echoscu", "-v", "-aec", "NOCTIS", "127.0.0.1", sqlite_scp.port)

    assert result.returncode == 0, result.stdout
    assert "Received Echo Response (Success)" in result.stdout


@pytest.mark.dcmtk
def test_summary_line_per_association(
    sqlite_scp: RunningSCP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SUMMARY_LOGGER)
    paths = write_series(tmp_path / "series", 2)

    run_dcmtk("storescu", "-aet", "MODALITY1", "127.0.0.1", sqlite_scp.port, *paths)
    run_dcmtk("storescu", "-aet", "MODALITY1", "127.0.0.1", sqlite_scp.port, paths[0])
    assert wait_until(lambda: not sqlite_scp.scp.active_associations)

    lines = summary_lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("association from MODALITY1 at 127.0.0.1:")
    assert lines[0].endswith("released: 2 stored, 0 already stored, 0 failed, 0 C-ECHO")
    assert lines[1].endswith("released: 0 stored, 1 already stored, 0 failed, 0 C-ECHO")


@pytest.mark.dcmtk
def test_logs_carry_no_patient_data(
    sqlite_scp: RunningSCP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="noctis_ingest_scp")
    caplog.set_level(logging.INFO, logger="noctis_common")
    dataset = make_dataset(patient_name="Secretname^Pat", patient_id="SECRET-ID-42")
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)
    conflicting = make_dataset(
        sop_instance_uid=dataset.SOPInstanceUID,
        patient_name="Othername^Pat",
        patient_id="SECRET-ID-43",
    )
    conflicting_path = tmp_path / "conflicting.dcm"
    conflicting.save_as(conflicting_path, enforce_file_format=True)

    run_dcmtk("storescu", "127.0.0.1", sqlite_scp.port, path)
    run_dcmtk("storescu", "127.0.0.1", sqlite_scp.port, conflicting_path)
    assert wait_until(lambda: not sqlite_scp.scp.active_associations)

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "association from STORESCU" in text
    for value in ("Secretname", "Othername", "SECRET-ID-42", "SECRET-ID-43"):
        assert value not in text


@pytest.mark.dcmtk
def test_association_limit_rejects_extra(
    sqlite_settings: Settings, open_association: Callable[[int], Association]
) -> None:
    with running_scp(sqlite_settings, dimse_max_associations=1) as running:
        held_association = open_association(running.port)

        result = run_dcmtk("echoscu", "-v", "127.0.0.1", running.port)
        held_association.release()

        assert result.returncode != 0
        assert "Association Rejected" in result.stdout


def test_accepted_socket_has_tcp_nodelay(
    sqlite_scp: RunningSCP, open_association: Callable[[int], Association]
) -> None:
    open_association(sqlite_scp.port)
    assert wait_until(lambda: len(sqlite_scp.scp.active_associations) == 1)

    [association] = sqlite_scp.scp.active_associations
    assert association.dul.socket is not None
    accepted_socket = association.dul.socket.socket
    assert accepted_socket is not None

    assert accepted_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_stop_aborts_open_associations(
    sqlite_scp: RunningSCP,
    open_association: Callable[[int], Association],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=SUMMARY_LOGGER)
    monkeypatch.setattr(scp_module, "STOP_GRACE_PERIOD_S", 0.2)
    association = open_association(sqlite_scp.port)

    sqlite_scp.scp.stop()

    assert wait_until(lambda: association.is_aborted)
    assert sqlite_scp.scp.active_associations == []
    assert any(
        line.endswith(" aborted: 0 stored, 0 already stored, 0 failed, 0 C-ECHO")
        for line in summary_lines(caplog)
    )


@pytest.mark.parametrize(
    ("primitive", "outcome"),
    [(A_ABORT(), " aborted: "), (A_RELEASE(), " released: ")],
    ids=["abort-sent", "release-answered"],
)
def test_close_after_own_acse_message_counted(
    primitive: A_ABORT | A_RELEASE, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SUMMARY_LOGGER)
    if isinstance(primitive, A_RELEASE):
        primitive.result = "affirmative"
    association = Association(AE(), "acceptor")
    registry = AssociationRegistry()
    registry.record(association)

    # The peer closes the connection before pynetdicom reports the abort or release.
    registry.handle_acse_sent(SimpleNamespace(assoc=association, primitive=primitive))  # type: ignore[arg-type]
    registry.handle_connection_close(SimpleNamespace(assoc=association))  # type: ignore[arg-type]

    [line] = summary_lines(caplog)
    assert outcome in line


def test_start_and_stop_repeatable(sqlite_settings: Settings) -> None:
    tempdir_before = tempfile.tempdir
    with running_scp(sqlite_settings) as running:
        running.scp.start()
        assert tempfile.tempdir == str(running.context.archive.spool_dir)
        running.scp.stop()
        running.scp.stop()

    assert tempfile.tempdir == tempdir_before


@pytest.mark.parametrize("ending", ["A-ABORT", "connection reset"])
def test_interrupted_transfer_leaves_no_spool_file(
    sqlite_scp: RunningSCP, open_association: Callable[[int], Association], ending: str
) -> None:
    association = open_association(sqlite_scp.port)
    dataset = make_dataset(rows=256, columns=256)
    path = Path(sqlite_scp.context.settings.data_dir.parent / "large.dcm")
    dataset.save_as(path, enforce_file_format=True)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CT_IMAGE_STORAGE
    request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(dataset_bytes(path))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = next(
        int(context.context_id or 0)
        for context in association.accepted_contexts
        if context.abstract_syntax == CT_IMAGE_STORAGE
    )
    fragments = list(message.encode_msg(context_id, 16384))
    assert len(fragments) > 2

    # Send all but the last P-DATA-TF, then end the association mid-dataset.
    for fragment in fragments[:-1]:
        association.dul.send_pdu(fragment)
    assert wait_until(lambda: len(sqlite_scp.spool_files()) == 1)
    if ending == "A-ABORT":
        association.abort()
    else:
        assert association.dul.socket is not None
        raw_socket = association.dul.socket.socket
        assert raw_socket is not None
        raw_socket.shutdown(socket.SHUT_RDWR)

    assert wait_until(lambda: sqlite_scp.spool_files() == [])
    assert sqlite_scp.instance_count() == 0
