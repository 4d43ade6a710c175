"""Misbehaving peers and a large instance: the gateway keeps serving and frees its spool."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from noctis_common.dicom.part10 import read_part10_header
from noctis_common.settings import Settings
from noctis_ingest_scp.presentation import VERIFICATION_SOP_CLASS_UID
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import CT_IMAGE_STORAGE, dataset_bytes, make_dataset, require_tool

NETWORK_TIMEOUT_S = 1.0
LARGE_PIXEL_DATA_BYTES = 200 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def impatient_scp(sqlite_settings: Settings) -> Iterator[RunningSCP]:
    """An SCP that drops a peer after one second without traffic."""
    with running_scp(sqlite_settings, dimse_network_timeout_s=NETWORK_TIMEOUT_S) as running:
        yield running


def associate(port: int, ae_title: str = "PEER") -> Association:
    requestor = AE(ae_title=ae_title)
    requestor.add_requested_context(VERIFICATION_SOP_CLASS_UID)
    requestor.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    association = requestor.associate("127.0.0.1", port, ae_title="NOCTIS")
    assert association.is_established
    return association


def store_request_pdus(association: Association, dataset: Dataset, folder: Path) -> list[P_DATA_TF]:
    """Encode a C-STORE request for ``dataset`` as the P-DATA-TF PDUs it travels in."""
    path = folder / "stalled.dcm"
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
    pdus = []
    for primitive in message.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu)
    return pdus


def raw_socket(association: Association) -> socket.socket:
    """Return the association's socket, to write PDUs past pynetdicom's DUL."""
    assert association.dul.socket is not None
    sock = association.dul.socket.socket
    assert sock is not None
    return sock


@pytest.mark.dcmtk
@pytest.mark.parametrize("stall", ["between PDUs", "inside a PDU"])
def test_stalled_peer_dropped_and_spool_freed(
    impatient_scp: RunningSCP, tmp_path: Path, stall: str
) -> None:
    association = associate(impatient_scp.port, "STALLER")
    pdus = store_request_pdus(association, make_dataset(rows=256, columns=256), tmp_path)
    assert len(pdus) > 3
    sock = raw_socket(association)
    for pdu in pdus[:-2]:
        sock.sendall(pdu.encode())
    if stall == "inside a PDU":
        partial = pdus[-2].encode()
        sock.sendall(partial[: len(partial) // 2])
    assert wait_until(lambda: len(impatient_scp.spool_files()) == 1)

    # While one peer stalls, another one stores.
    other = make_dataset()
    path = tmp_path / "other.dcm"
    other.save_as(path, enforce_file_format=True)
    result = run_dcmtk("storescu", "-aec", "NOCTIS", "127.0.0.1", impatient_scp.port, path)
    assert result.returncode == 0, result.stdout
    assert impatient_scp.instance(other.SOPInstanceUID) is not None

    assert wait_until(lambda: impatient_scp.scp.active_associations == [])
    assert wait_until(lambda: impatient_scp.spool_files() == [])
    assert impatient_scp.instance_count() == 1
    association.abort()


def test_abort_mid_transfer_spares_other_peers(impatient_scp: RunningSCP, tmp_path: Path) -> None:
    aborting = associate(impatient_scp.port, "ABORTER")
    pdus = store_request_pdus(aborting, make_dataset(rows=256, columns=256), tmp_path)
    sock = raw_socket(aborting)
    for pdu in pdus[:-1]:
        sock.sendall(pdu.encode())
    assert wait_until(lambda: len(impatient_scp.spool_files()) == 1)

    other = make_dataset()
    storing = associate(impatient_scp.port, "STORER")
    try:
        status = storing.send_c_store(other)
        aborting.abort()
    finally:
        storing.release()

    assert status.Status == 0x0000
    assert wait_until(lambda: impatient_scp.spool_files() == [])
    assert impatient_scp.instance_count() == 1
    assert impatient_scp.instance(other.SOPInstanceUID) is not None


# -- a large instance -------------------------------------------------------------------


def write_large_instance(path: Path, pixel_data_bytes: int) -> Dataset:
    """Write a CT image whose Pixel Data is ``pixel_data_bytes`` long, in chunks.

    The header is written by pydicom; the Pixel Data element is appended by hand so the
    test never keeps the whole value in memory.
    """
    columns = 10240
    rows = pixel_data_bytes // (columns * 2)
    assert rows * columns * 2 == pixel_data_bytes
    dataset = make_dataset(rows=1, columns=1)
    dataset.Rows = rows
    dataset.Columns = columns
    del dataset.PixelData
    dataset.save_as(path, enforce_file_format=True)
    pattern = bytes(range(256)) * (CHUNK_BYTES // 256)
    with open(path, "ab") as handle:
        # (7FE0,0010) Pixel Data, explicit VR little endian: tag, "OW", 2 reserved, length.
        handle.write(b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_data_bytes.to_bytes(4, "little"))
        written = 0
        chunk_number = 0
        while written < pixel_data_bytes:
            chunk = bytes([chunk_number % 256]) + pattern[1 : pixel_data_bytes - written]
            handle.write(chunk)
            written += len(chunk)
            chunk_number += 1
    return dataset


def dataset_sha256(path: Path) -> str:
    """Hash the bytes after the File Meta Information without reading them all at once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(read_part10_header(handle).dataset_offset)
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    path = tmp_path_factory.mktemp("large") / "large.dcm"
    dataset = write_large_instance(path, LARGE_PIXEL_DATA_BYTES)
    return path, dataset


@pytest.mark.dcmtk
def test_large_instance_stored_byte_identical(
    sqlite_scp: RunningSCP, large_instance: tuple[Path, Dataset]
) -> None:
    path, dataset = large_instance

    result = run_dcmtk("storescu", "-aec", "NOCTIS", "127.0.0.1", sqlite_scp.port, path)

    assert result.returncode == 0, result.stdout
    instance = sqlite_scp.instance(dataset.SOPInstanceUID)
    assert instance is not None
    assert instance.object_size > LARGE_PIXEL_DATA_BYTES
    assert dataset_sha256(sqlite_scp.object_path(instance)) == dataset_sha256(path)
    assert sqlite_scp.spool_files() == []


@pytest.mark.dcmtk
def test_vanished_sender_leaves_no_spool(
    sqlite_scp: RunningSCP, large_instance: tuple[Path, Dataset]
) -> None:
    path, dataset = large_instance
    sender = subprocess.Popen(
        [require_tool("storescu"), "-aec", "NOCTIS", "127.0.0.1", str(sqlite_scp.port), str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: len(sqlite_scp.spool_files()) == 1, timeout_s=30)
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait(timeout=10)

    assert wait_until(lambda: sqlite_scp.scp.active_associations == [])
    assert wait_until(lambda: sqlite_scp.spool_files() == [])
    assert sqlite_scp.instance(dataset.SOPInstanceUID) is None
    echo = run_dcmtk("echoscu", "-aec", "NOCTIS", "127.0.0.1", sqlite_scp.port)
    assert echo.returncode == 0, echo.stdout
