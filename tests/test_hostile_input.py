"""Hostile and careless input to QIDO-RS, WADO-RS and the DIMSE Storage SCP.

Each test sends what a broken or malicious peer could send. It checks that the
service responds with a clear 4xx or a named DIMSE status, matches nothing it should
not, leaves nothing half-written behind, and keeps serving other clients.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode

from noctis_common.archive import StoredInstance as ArchivedInstance
from noctis_common.context import ArchiveContext
from noctis_common.db.models import Study
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_ingest_scp.presentation import VERIFICATION_SOP_CLASS_UID
from noctis_qido.routes import router as qido_router
from noctis_wado.lookup import StoredInstance, find_instance
from noctis_wado.pixel_data import locate_frames
from noctis_wado.routes import router as wado_router
from noctis_wado.stored_values import ElementPath, locate_element, open_stored_dataset
from tests.ingest_scp.helpers import RunningSCP, running_scp
from tests.support import CT_IMAGE_STORAGE, ArchiveProcess, make_dataset, running_archive
from tests.wado.helpers import instance_url, parse_multipart, store_dataset

DICOMWEB = "/dicom-web"
C_STORE_RQ_COMMAND = 0x0001
C_ECHO_RQ_COMMAND = 0x0030
NO_DATASET = 0x0101
SUCCESS = 0x0000

# PDU types of the DICOM Upper Layer protocol (PS3.8 section 9.3).
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_ABORT = 0x07
APPLICATION_CONTEXT_NAME = b"1.2.840.10008.3.1.1.1"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def sqlite_context(sqlite_settings: Settings) -> Iterator[ArchiveContext]:
    archive_context = ArchiveContext.create(sqlite_settings)
    try:
        yield archive_context
    finally:
        archive_context.close()


@pytest.fixture
def sqlite_client(sqlite_context: ArchiveContext) -> Iterator[TestClient]:
    """QIDO-RS and WADO-RS over a SQLite index, for tests whose subject is not the index."""
    app = create_app(
        "Noctis hostile input test",
        [qido_router, wado_router],
        sqlite_context.settings,
        sqlite_context,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def scp(settings: Settings) -> Iterator[RunningSCP]:
    """The SCP over the index that ``database_url`` selects (SQLite and PostgreSQL)."""
    with running_scp(settings) as running:
        yield running


@pytest.fixture
def sqlite_scp(sqlite_settings: Settings) -> Iterator[RunningSCP]:
    with running_scp(sqlite_settings) as running:
        yield running


@pytest.fixture
def impatient_scp(sqlite_settings: Settings) -> Iterator[RunningSCP]:
    """An SCP that gives up on a silent peer after one second."""
    with running_scp(
        sqlite_settings,
        dimse_acse_timeout_s=1.0,
        dimse_network_timeout_s=1.0,
        dimse_timeout_s=1.0,
        dimse_max_associations=2,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def live_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveProcess]:
    """``python -m noctis_archive`` shared by the tests that need a real HTTP server."""
    yield from running_archive(tmp_path_factory.mktemp("live") / "var")


# -- QIDO-RS ------------------------------------------------------------------------------


def _search(client: TestClient, path: str, params: dict[str, str]) -> httpx.Response:
    response: httpx.Response = client.get(f"{DICOMWEB}{path}", params=params)
    return response


def _patient_ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {result["00100020"]["Value"][0] for result in response.json()}


@pytest.mark.parametrize("keyword", ["PatientName", "PatientID", "StudyDescription"])
@pytest.mark.parametrize("value", ["\x00", "*\x00zzz"])
def test_qido_nul_character_rejected(
    client: TestClient, context: ArchiveContext, tmp_path: Path, keyword: str, value: str
) -> None:
    store_dataset(context, make_dataset(patient_name="Doe^Jane"), tmp_path)

    response = _search(client, "/studies", {keyword: value})

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert f"invalid {keyword} value {value!r}" in detail
    assert "NUL" in detail


@pytest.mark.parametrize(
    "patient_id", ["PID%1", "PID_1", "P'1", 'P"1', "P[1]", "P;--1", "P\\1x", "Pä1"]
)
def test_qido_metacharacters_match_literally(
    client: TestClient, context: ArchiveContext, tmp_path: Path, patient_id: str
) -> None:
    stored_ids = ["PID%1", "PID_1", "PIDx1", "P'1", 'P"1', "P[1]", "P;--1", "Pä1", "PA1"]
    for stored_id in stored_ids:
        store_dataset(context, make_dataset(patient_id=stored_id), tmp_path)
    # A backslash separates values, so "P\\1x" requests "P" or "1x".
    expected = set() if "\\" in patient_id else {patient_id}

    exact = _search(client, "/studies", {"PatientID": patient_id})
    with_wildcard = _search(client, "/studies", {"PatientID": patient_id + "*"})

    assert _patient_ids(exact) == expected
    assert _patient_ids(with_wildcard) == expected


@pytest.mark.parametrize("value", ["2147483648", "-2147483649", "9999999999"])
def test_qido_integer_beyond_is_range_rejected(client: TestClient, value: str) -> None:
    response = _search(client, "/series", {"SeriesNumber": value})

    assert response.status_code == 400
    assert f"invalid SeriesNumber value {value!r}" in response.json()["detail"]


ARABIC_INDIC_DATE = "\u0662\u0660\u0662\u0664\u0660\u0661\u0661\u0665"  # 20240115
ARABIC_INDIC_ONE = "\u0661"


@pytest.mark.parametrize(
    ("path", "keyword", "value"),
    [
        ("/studies", "StudyDate", ARABIC_INDIC_DATE),
        ("/studies", "StudyDate", f"20240101-{ARABIC_INDIC_DATE}"),
        ("/studies", "StudyTime", ARABIC_INDIC_ONE * 2),
        ("/series", "SeriesNumber", ARABIC_INDIC_ONE),
        ("/studies", "limit", ARABIC_INDIC_ONE),
        ("/studies", "offset", ARABIC_INDIC_ONE),
    ],
)
def test_qido_non_ascii_digits_rejected(
    sqlite_client: TestClient, path: str, keyword: str, value: str
) -> None:
    # Unicode digits sort after ASCII ones, so as a range end the Arabic-Indic date
    # would match every study from 20240101 on.
    response = _search(sqlite_client, path, {keyword: value})

    assert response.status_code == 400
    assert repr(value) in response.json()["detail"]


@pytest.mark.parametrize("parameter", ["limit", "offset"])
def test_qido_overlong_paging_number_rejected(sqlite_client: TestClient, parameter: str) -> None:
    response = _search(sqlite_client, "/studies", {parameter: "1" * 5000})

    assert response.status_code == 400
    assert f"invalid {parameter} value" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"": "x"}, "unknown attribute '' in a match parameter: use a keyword of PS3.6"),
        ({"includefield": "."}, "unknown attribute '' in includefield: use a keyword of PS3.6"),
        ({"includefield": "FFFEE000"}, "Item"),
        ({"includefield": "FFFEE0DD"}, "SequenceDelimitationItem"),
        ({"FFFEE00D": ""}, "ItemDelimitationItem"),
    ],
)
def test_qido_non_attribute_ids_rejected(
    sqlite_client: TestClient, params: dict[str, str], message: str
) -> None:
    response = _search(sqlite_client, "/studies", params)

    assert response.status_code == 400
    assert message in response.json()["detail"]


# -- WADO-RS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame_list", "message"),
    [
        ("%C2%B2", "'²' is not a frame number"),
        ("1,%D9%A1", "'١' is not a frame number"),
        ("%EF%BC%91", "'１' is not a frame number"),
        ("1" * 5000, "over the maximum frame number 2147483647"),
        ("2147483648", "over the maximum frame number 2147483647"),
    ],
)
def test_wado_hostile_frame_list_rejected(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    frame_list: str,
    message: str,
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)

    response = sqlite_client.get(f"{instance_url(stored)}/frames/{frame_list}")

    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize("item_index", ["%C2%B2", "%D9%A1", "1" * 5000])
def test_wado_hostile_bulkdata_item_rejected(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path, item_index: str
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)

    response = sqlite_client.get(f"{instance_url(stored)}/bulkdata/00540016/{item_index}/00181072")

    assert response.status_code == 400
    assert "invalid bulk data path" in response.json()["detail"]


@pytest.mark.parametrize("quality", ["nan", "NaN", "-nan"])
def test_wado_nan_quality_ignored(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path, quality: str
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)
    accept = f'multipart/related; type="application/dicom"; q={quality}'

    response = sqlite_client.get(instance_url(stored), headers={"Accept": accept})

    # An element with an unreadable q-value is skipped like any other unparsable one.
    assert response.status_code == 200
    assert len(parse_multipart(response)) == 1


def _encapsulated_dataset(offsets: bytes, lengths: bytes) -> tuple[Dataset, list[bytes]]:
    """Return a three-frame JPEG Baseline dataset with the given Extended Offset Table."""
    frames = [b"\xff\xd8" + bytes([number]) * 100 + b"\xff\xd9" for number in range(3)]
    dataset = make_dataset()
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.NumberOfFrames = 3
    dataset.PixelData = encapsulate(frames)
    dataset["PixelData"].VR = "OB"
    dataset.ExtendedOffsetTable = offsets
    dataset.ExtendedOffsetTableLengths = lengths
    return dataset, frames


@pytest.mark.parametrize(
    ("offsets", "lengths"),
    [
        (bytes(12), bytes(12)),  # not a whole number of 64-bit entries
        (struct.pack("<3Q", 0, 10**9, 2 * 10**9), struct.pack("<3Q", 104, 104, 104)),
        (struct.pack("<3Q", 0, 112, 224), struct.pack("<3Q", 2**40, 104, 104)),
    ],
    ids=["twelve-bytes", "offsets-past-end", "length-past-end"],
)
def test_wado_corrupt_extended_offset_table_ignored(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    offsets: bytes,
    lengths: bytes,
) -> None:
    dataset, frames = _encapsulated_dataset(offsets, lengths)
    stored = store_dataset(sqlite_context, dataset, tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/frames/3,1", headers={"Accept": "image/jpeg"}
    )

    assert response.status_code == 200
    assert [part.content for part in parse_multipart(response)] == [frames[2], frames[0]]


def test_wado_native_frames_located_up_to_request(
    sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    dataset = make_dataset(rows=1, columns=1)
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.NumberOfFrames = 100_000
    dataset.PixelData = bytes(range(256)) * 390 + bytes(160)
    instance = _stored_instance(sqlite_context, store_dataset(sqlite_context, dataset, tmp_path))

    with open_stored_dataset(sqlite_context.store, instance) as opened:
        value = locate_element(opened, ElementPath((), 0x7FE00010))
        located = locate_frames(opened.handle, value, instance.sop_instance_uid, up_to=3)

    # Locating frame 3 must not build a description of all 100000 frames.
    assert len(located) == 3


def _stored_instance(context: ArchiveContext, stored: ArchivedInstance) -> StoredInstance:
    return find_instance(
        context.database,
        stored.study_instance_uid,
        stored.series_instance_uid,
        stored.sop_instance_uid,
    )


def test_wado_missing_object_answers_500(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = store_dataset(sqlite_context, make_dataset(), tmp_path)
    instance = _stored_instance(sqlite_context, stored)
    (sqlite_context.settings.objects_dir / instance.object_key).unlink()

    response = sqlite_client.get(instance_url(stored))

    assert response.status_code == 500
    detail = response.json()["detail"]
    assert f"the stored object of instance {stored.sop_instance_uid}" in detail
    assert "is missing from the object store" in detail


def _raw_http_get(port: int, path: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii"))
    return connection


@pytest.mark.slow
def test_wado_survives_clients_leaving_mid_stream(live_archive: ArchiveProcess) -> None:
    study = _store_over_dimse(live_archive.dimse_port, count=6, rows=512)

    for attempt in range(10):
        connection = _raw_http_get(live_archive.http_port, f"{DICOMWEB}/studies/{study}")
        assert connection.recv(65536).startswith(b"HTTP/1.1 200")
        if attempt % 2:
            # SO_LINGER with a zero timeout makes close() send a TCP reset.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    response = httpx.get(f"{live_archive.dicomweb_url}/studies/{study}", timeout=30)

    assert response.status_code == 200
    assert len(parse_multipart(response)) == 6


@pytest.mark.slow
def test_wado_study_with_missing_object_ends_early(live_archive: ArchiveProcess) -> None:
    study = _store_over_dimse(live_archive.dimse_port, count=2, rows=16)
    second = httpx.get(
        f"{live_archive.dicomweb_url}/studies/{study}/instances", params={"InstanceNumber": "2"}
    ).json()
    sop_instance_uid = second[0]["00080018"]["Value"][0]
    # The second object is read after the status line is sent, so the body is cut off.
    [stored_object] = (live_archive.data_dir / "objects" / study).rglob(f"{sop_instance_uid}.*")
    stored_object.unlink()

    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{live_archive.dicomweb_url}/studies/{study}", timeout=30)
    after = httpx.get(f"{live_archive.dicomweb_url}/studies", params={"StudyInstanceUID": study})

    assert after.status_code == 200
    assert len(after.json()) == 1


def _store_over_dimse(port: int, *, count: int, rows: int) -> str:
    """Store one series of ``count`` instances with pynetdicom; return its study UID."""
    first = make_dataset(rows=rows, columns=rows)
    sender = AE(ae_title="HOSTILE")
    sender.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    association = sender.associate("127.0.0.1", port, ae_title="NOCTIS")
    assert association.is_established
    try:
        for number in range(1, count + 1):
            dataset = make_dataset(
                study_instance_uid=first.StudyInstanceUID,
                series_instance_uid=first.SeriesInstanceUID,
                instance_number=number,
                rows=rows,
                columns=rows,
            )
            status = association.send_c_store(dataset)
            assert status.Status == SUCCESS
    finally:
        association.release()
    return str(first.StudyInstanceUID)


# -- DIMSE --------------------------------------------------------------------------------


def _pdu_item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def associate_request(
    abstract_syntax: str,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    max_pdu_length: int = 16384,
    calling_ae_title: bytes = b"HOSTILE",
) -> bytes:
    """Encode an A-ASSOCIATE-RQ PDU with one presentation context (PS3.8 section 9.3.2)."""
    context = struct.pack(">BBBB", 1, 0, 0, 0)
    context += _pdu_item(0x30, abstract_syntax.encode("ascii"))
    context += _pdu_item(0x40, transfer_syntax.encode("ascii"))
    user_information = _pdu_item(0x51, struct.pack(">I", max_pdu_length))
    body = struct.pack(">HH", 1, 0) + b"NOCTIS".ljust(16) + calling_ae_title.ljust(16)
    body += bytes(32)
    body += _pdu_item(0x10, APPLICATION_CONTEXT_NAME)
    body += _pdu_item(0x20, context)
    body += _pdu_item(0x50, user_information)
    return struct.pack(">BBI", A_ASSOCIATE_RQ, 0, len(body)) + body


def p_data(fragment: bytes, *, command: bool, last: bool, context_id: int = 1) -> bytes:
    """Encode a P-DATA-TF PDU with one presentation data value (PS3.8 section 9.3.5)."""
    control_header = 0
    if command:
        control_header |= 0x01
    if last:
        control_header |= 0x02
    item = struct.pack(">IBB", len(fragment) + 2, context_id, control_header) + fragment
    return struct.pack(">BBI", P_DATA_TF, 0, len(item)) + item


def command_set(**elements: object) -> bytes:
    """Encode a command set in Implicit VR Little Endian with its group length first."""
    command = Dataset()
    for keyword, value in elements.items():
        setattr(command, keyword, value)
    body = encode(command, True, True)
    assert body is not None
    group_length = Dataset()
    group_length.CommandGroupLength = len(body)
    header = encode(group_length, True, True)
    assert header is not None
    return header + body


def c_store_request(sop_class_uid: str, sop_instance_uid: str) -> bytes:
    return command_set(
        AffectedSOPClassUID=sop_class_uid,
        CommandField=C_STORE_RQ_COMMAND,
        MessageID=1,
        Priority=0,
        CommandDataSetType=0,
        AffectedSOPInstanceUID=sop_instance_uid,
    )


def explicit_little_endian_bytes(dataset: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, dataset)
    return buffer.getvalue()


class RawAssociation:
    """A requestor that writes DICOM Upper Layer PDUs to a plain socket.

    Unlike pynetdicom's requestor it can stop mid-PDU, send malformed commands and
    close the connection at any byte.
    """

    def __init__(self, port: int, abstract_syntax: str, *, max_pdu_length: int = 16384) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.socket.sendall(associate_request(abstract_syntax, max_pdu_length=max_pdu_length))
        self.response_type, _ = self.read_pdu()

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, _, length = struct.unpack(">BBI", self._read_exactly(6))
        return pdu_type, self._read_exactly(length)

    def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"the SCP closed the connection after {len(data)} bytes")
            data += chunk
        return data

    def read_status(self) -> Dataset:
        """Read one P-DATA-TF PDU and return the command set of the response in it."""
        pdu_type, payload = self.read_pdu()
        assert pdu_type == P_DATA_TF, f"expected P-DATA-TF, got PDU type {pdu_type:#04x}"
        command = b""
        offset = 0
        while offset < len(payload):
            (length,) = struct.unpack(">I", payload[offset : offset + 4])
            command += payload[offset + 6 : offset + 4 + length]
            offset += 4 + length
        response = decode(io.BytesIO(command), True, True)
        assert isinstance(response, Dataset)
        return response

    def send_c_store(self, sop_class_uid: str, sop_instance_uid: str, dataset: bytes) -> Dataset:
        self.socket.sendall(
            p_data(c_store_request(sop_class_uid, sop_instance_uid), command=True, last=True)
        )
        self.socket.sendall(p_data(dataset, command=False, last=True))
        return self.read_status()

    def release(self) -> None:
        self.socket.sendall(struct.pack(">BBI", A_RELEASE_RQ, 0, 4) + bytes(4))
        self.read_pdu()
        self.socket.close()

    def close(self) -> None:
        self.socket.close()


def echo_succeeds(port: int) -> bool:
    """Return whether a new association is accepted and its C-ECHO succeeds."""
    sender = AE(ae_title="PROBE")
    sender.acse_timeout = 5
    sender.add_requested_context(VERIFICATION_SOP_CLASS_UID)
    association = sender.associate("127.0.0.1", port, ae_title="NOCTIS")
    if not association.is_established:
        return False
    status = association.send_c_echo()
    association.release()
    return bool(status) and status.Status == SUCCESS


def test_dimse_peer_stalling_mid_pdu_is_dropped(impatient_scp: RunningSCP) -> None:
    dataset = make_dataset(rows=128, columns=128)
    peer = RawAssociation(impatient_scp.port, CT_IMAGE_STORAGE)
    assert peer.response_type == A_ASSOCIATE_AC
    peer.socket.sendall(
        p_data(c_store_request(CT_IMAGE_STORAGE, dataset.SOPInstanceUID), command=True, last=True)
    )
    pdu = p_data(explicit_little_endian_bytes(dataset), command=False, last=True)
    peer.socket.sendall(pdu[: len(pdu) // 2])

    # The network timeout is one second, so the SCP must end the association by itself.
    ended = wait_until(lambda: impatient_scp.scp.active_associations == [], timeout_s=10)
    peer.close()

    assert ended
    assert wait_until(lambda: impatient_scp.spool_files() == [])
    assert impatient_scp.instance(dataset.SOPInstanceUID) is None


def test_dimse_partial_associate_request_is_dropped(impatient_scp: RunningSCP) -> None:
    peers = []
    for _ in range(2):
        peer = socket.create_connection(("127.0.0.1", impatient_scp.port), timeout=15)
        peer.sendall(associate_request(VERIFICATION_SOP_CLASS_UID)[:20])
        peers.append(peer)

    # Both slots are held by half-sent requests until the SCP drops them.
    held = wait_until(lambda: len(impatient_scp.scp.active_associations) == 2)
    ended = wait_until(lambda: impatient_scp.scp.active_associations == [], timeout_s=10)
    for peer in peers:
        peer.close()

    assert held
    assert ended
    assert echo_succeeds(impatient_scp.port)


@pytest.mark.parametrize("max_pdu_length", [1, 6])
def test_dimse_unusable_max_pdu_aborted(sqlite_scp: RunningSCP, max_pdu_length: int) -> None:
    peer = RawAssociation(
        sqlite_scp.port, VERIFICATION_SOP_CLASS_UID, max_pdu_length=max_pdu_length
    )
    assert peer.response_type == A_ASSOCIATE_AC
    peer.socket.sendall(
        p_data(
            command_set(
                AffectedSOPClassUID=VERIFICATION_SOP_CLASS_UID,
                CommandField=C_ECHO_RQ_COMMAND,
                MessageID=1,
                CommandDataSetType=NO_DATASET,
            ),
            command=True,
            last=True,
        )
    )

    # No response fits in a PDU this small, so the SCP aborts instead of hanging.
    response_type, _ = peer.read_pdu()
    peer.close()

    assert response_type == A_ABORT
    assert echo_succeeds(sqlite_scp.port)


@pytest.mark.parametrize(
    ("sop_class_uid", "sop_instance_uid"),
    [(CT_IMAGE_STORAGE, ""), ("", "1.2.3.4")],
    ids=["no-affected-sop-instance", "no-affected-sop-class"],
)
def test_dimse_store_without_affected_uid_cleans_up(
    sqlite_scp: RunningSCP, sop_class_uid: str, sop_instance_uid: str
) -> None:
    dataset = make_dataset()
    for _ in range(3):
        peer = RawAssociation(sqlite_scp.port, CT_IMAGE_STORAGE)
        assert peer.response_type == A_ASSOCIATE_AC
        peer.socket.sendall(
            p_data(c_store_request(sop_class_uid, sop_instance_uid), command=True, last=True)
        )
        peer.socket.sendall(p_data(explicit_little_endian_bytes(dataset), command=False, last=True))
        with pytest.raises(ConnectionError):
            peer.read_pdu()
        peer.close()

    # pynetdicom drops such an association without telling the SCP's handlers, so
    # the spool file it started must be found and removed all the same.
    assert echo_succeeds(sqlite_scp.port)
    assert wait_until(lambda: sqlite_scp.spool_files() == [])
    assert sqlite_scp.instance(dataset.SOPInstanceUID) is None


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x09\x00\x00\x00\x00\x00", bytes(range(256))],
    ids=["http", "unknown-pdu-type", "byte-ramp"],
)
def test_dimse_garbage_bytes_leave_scp_serving(impatient_scp: RunningSCP, garbage: bytes) -> None:
    peer = socket.create_connection(("127.0.0.1", impatient_scp.port), timeout=10)
    peer.sendall(garbage)

    received = b""
    while chunk := peer.recv(4096):
        received += chunk
    peer.close()

    # The SCP closes the connection, after nothing but A-ABORT PDUs of 10 bytes each.
    pdu_types = {received[offset] for offset in range(0, len(received), 10)}
    assert len(received) % 10 == 0
    assert pdu_types <= {A_ABORT}
    assert echo_succeeds(impatient_scp.port)


def test_dimse_nul_in_indexed_text_stored(scp: RunningSCP) -> None:
    dataset = make_dataset(patient_id="ID\x00X", patient_name="Doe\x00^Jane")
    dataset.StudyDescription = "Head\x00"
    peer = RawAssociation(scp.port, CT_IMAGE_STORAGE)
    assert peer.response_type == A_ASSOCIATE_AC

    status = peer.send_c_store(
        CT_IMAGE_STORAGE, dataset.SOPInstanceUID, explicit_little_endian_bytes(dataset)
    )
    peer.release()

    # NUL is not a character of DICOM text values, so the index leaves it out. The
    # stored object keeps the bytes as received.
    assert status.Status == SUCCESS
    stored = scp.instance(dataset.SOPInstanceUID)
    assert stored is not None
    assert scp.stored_dataset_bytes(stored) == explicit_little_endian_bytes(dataset)
    with scp.context.database.read_session() as session:
        study = session.get(Study, stored.study_fk)
    assert study is not None
    assert study.patient_id == "IDX"
    assert study.study_description == "Head"
