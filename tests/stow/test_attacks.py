"""STOW-RS against hostile and careless clients: crafted files, bodies and races.

Each test sends what a misbehaving client sent while the service was probed over real
HTTP, and checks the response and what the archive kept.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from noctis_common.archive import FailureReason
from noctis_common.context import ArchiveContext
from noctis_stow import receive
from noctis_stow.store import STUDY_INSTANCE_UID_MISMATCH
from tests.stow.bodies import (
    Part,
    content_type,
    dicom_body,
    failure_reasons,
    multipart_body,
    part10_bytes,
    sequence_uids,
    spool_files,
    stored_object_files,
    stored_sop_instance_uids,
)
from tests.support import ArchiveProcess, make_dataset

STUDIES_URL = "/dicom-web/studies"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"


def post(client: TestClient, body: bytes, url: str = STUDIES_URL) -> httpx.Response:
    response: httpx.Response = client.post(
        url, content=body, headers={"Content-Type": content_type()}
    )
    return response


def explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """Encode one data element in Explicit VR Little Endian with a 2-byte length."""
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def with_unknown_vr(dataset: Dataset, group: int, element: int) -> bytes:
    """Return a Part 10 file in which one UI element has the VR 'ZZ', which PS3.5 lacks."""
    data = part10_bytes(dataset)
    tag = struct.pack("<HH", group, element)
    return data.replace(tag + b"UI", tag + b"ZZ", 1)


def with_unknown_vr_in_sop_instance_uid(dataset: Dataset) -> bytes:
    return with_unknown_vr(dataset, 0x0008, 0x0018)


def with_unknown_vr_in_file_meta(dataset: Dataset) -> bytes:
    return with_unknown_vr(dataset, 0x0002, 0x0010)


# -- an instance pydicom cannot decode fails alone ---------------------------------------


@pytest.mark.parametrize(
    ("encode", "uid_is_readable"),
    [
        # The SOP Instance UID is then read from the File Meta Information.
        pytest.param(with_unknown_vr_in_sop_instance_uid, True, id="unknown-vr-in-dataset"),
        # pydicom cannot read past the File Meta Information, so no UID is known.
        pytest.param(with_unknown_vr_in_file_meta, False, id="unknown-vr-in-file-meta"),
    ],
)
def test_undecodable_instance_fails_alone(
    client: TestClient,
    context: ArchiveContext,
    encode: Callable[[Dataset], bytes],
    uid_is_readable: bool,
) -> None:
    first, broken, last = make_dataset(), make_dataset(), make_dataset()
    body = multipart_body(
        [Part(part10_bytes(first)), Part(encode(broken)), Part(part10_bytes(last))]
    )

    response = post(client, body)

    assert response.status_code == 202
    assert sequence_uids(response.json(), REFERENCED_SOP_SEQUENCE) == [
        first.SOPInstanceUID,
        last.SOPInstanceUID,
    ]
    failed_uid = broken.SOPInstanceUID if uid_is_readable else ""
    assert sequence_uids(response.json(), FAILED_SOP_SEQUENCE) == [failed_uid]
    # STOW-RS returns 0110H (Processing failure) for errors that the store pipeline
    # does not classify, and C000H (Cannot understand) once the pipeline classifies them.
    assert failure_reasons(response.json())[0] in (
        FailureReason.PROCESSING_FAILURE,
        FailureReason.CANNOT_UNDERSTAND,
    )
    assert "part 2" in response.headers["warning"]
    assert stored_sop_instance_uids(context) == {first.SOPInstanceUID, last.SOPInstanceUID}
    assert len(stored_object_files(context)) == 2
    assert spool_files(context) == []


# -- the Study resource accepts only instances of its study ------------------------------


def with_study_uid_after_pixel_data(dataset: Dataset, study_instance_uid: str) -> bytes:
    """Return a Part 10 file with a Study Instance UID element after Pixel Data.

    Elements out of tag order are not conformant, but pydicom reads them, so the store
    pipeline indexes the instance under the last Study Instance UID in the file.
    """
    return part10_bytes(dataset) + explicit_element(
        0x0020, 0x000D, b"UI", study_instance_uid.encode("ascii")
    )


def test_study_uid_after_pixel_data_is_checked(client: TestClient, context: ArchiveContext) -> None:
    url_study_instance_uid = generate_uid()
    dataset = make_dataset()
    real_study_instance_uid = dataset.StudyInstanceUID
    del dataset.StudyInstanceUID
    body = multipart_body([Part(with_study_uid_after_pixel_data(dataset, real_study_instance_uid))])

    response = post(client, body, f"{STUDIES_URL}/{url_study_instance_uid}")

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [STUDY_INSTANCE_UID_MISMATCH]
    assert real_study_instance_uid in response.headers["warning"]
    assert stored_sop_instance_uids(context) == set()
    assert spool_files(context) == []


def test_repeated_study_uid_is_checked(client: TestClient, context: ArchiveContext) -> None:
    url_study_instance_uid = generate_uid()
    other_study_instance_uid = generate_uid()
    dataset = make_dataset(study_instance_uid=url_study_instance_uid)
    body = multipart_body(
        [Part(with_study_uid_after_pixel_data(dataset, other_study_instance_uid))]
    )

    response = post(client, body, f"{STUDIES_URL}/{url_study_instance_uid}")

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [STUDY_INSTANCE_UID_MISMATCH]
    assert stored_sop_instance_uids(context) == set()


# -- a body of many tiny parts -----------------------------------------------------------


def test_too_many_parts_gives_413(
    client: TestClient, context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receive, "MAX_PARTS", 5)
    body = multipart_body([Part(b"")] * 6)

    response = post(client, body)

    assert response.status_code == 413
    assert "more than 5 parts" in response.json()["detail"]
    assert stored_sop_instance_uids(context) == set()
    assert spool_files(context) == []


def test_parts_up_to_limit_are_read(
    client: TestClient, context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receive, "MAX_PARTS", 5)
    datasets = [make_dataset() for _ in range(5)]

    response = post(client, dicom_body(datasets))

    assert response.status_code == 200
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID for dataset in datasets}


# -- a client that stops sending ---------------------------------------------------------


def send_partial_request(port: int, body: bytes, sent_bytes: int) -> None:
    """Announce ``body`` in Content-Length, send its first bytes, then disconnect."""
    head = (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type()}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head.encode("ascii") + body[:sent_bytes])
        time.sleep(0.5)


def spool_leftovers(archive: ArchiveProcess) -> list[str]:
    """Return the files in the archive's spool folders, intent markers included."""
    spool = archive.data_dir / "spool"
    return sorted(str(path) for path in spool.rglob("*") if path.is_file())


def stored_objects(archive: ArchiveProcess) -> dict[str, bytes]:
    """Return the content of every object in the archive's filesystem object store."""
    objects = archive.data_dir / "objects"
    return {str(path): path.read_bytes() for path in objects.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_disconnect_mid_body_leaves_nothing(archive_process: ArchiveProcess) -> None:
    first = httpx.post(
        f"{archive_process.dicomweb_url}/studies",
        content=dicom_body([make_dataset()]),
        headers={"Content-Type": content_type()},
    )
    objects_before = stored_objects(archive_process)
    body = dicom_body([make_dataset(rows=128, columns=128), make_dataset()])

    send_partial_request(archive_process.http_port, body, len(body) // 2)

    deadline = time.monotonic() + 10
    while "disconnected before the body ended" not in archive_process.log():
        assert time.monotonic() < deadline, archive_process.log()
        time.sleep(0.1)
    assert first.status_code == 200
    assert spool_leftovers(archive_process) == []
    assert stored_objects(archive_process) == objects_before
    health = httpx.get(f"{archive_process.http_url}/health")
    assert health.status_code == 200


# -- the shared store pipeline ----------------------------------------------------------


def test_truncated_pixel_data_is_rejected(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset(rows=64, columns=64)
    truncated = part10_bytes(dataset)[:-100]

    response = post(client, multipart_body([Part(truncated)]))

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [FailureReason.CANNOT_UNDERSTAND]
    assert stored_sop_instance_uids(context) == set()


def with_group_length(dataset: Dataset) -> bytes:
    """Return a Part 10 file with a Group Length (0008,0000) element, as older writers made.

    pydicom drops group lengths when it writes, so the element is inserted by hand in
    front of the first group 0008 element.
    """
    data = part10_bytes(dataset)
    group_0008 = Dataset()
    for element in dataset.group_dataset(0x0008):
        group_0008.add(element)
    encoded = DicomBytesIO()
    encoded.is_little_endian = True
    encoded.is_implicit_VR = False
    write_dataset(encoded, group_0008)
    group_length = struct.pack("<HH2sHI", 0x0008, 0x0000, b"UL", 4, len(encoded.getvalue()))
    first_element = data.index(struct.pack("<HH", 0x0008, 0x0016) + b"UI")
    return data[:first_element] + group_length + data[first_element:]


def test_resend_without_group_lengths_succeeds(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    original = with_group_length(dataset)
    assert post(client, multipart_body([Part(original)])).status_code == 200
    reencoded = io.BytesIO()
    pydicom.dcmwrite(reencoded, pydicom.dcmread(io.BytesIO(original)))

    response = post(client, multipart_body([Part(reencoded.getvalue())]))

    assert response.status_code == 200
    assert len(stored_object_files(context)) == 1


def post_concurrently(client: TestClient, bodies: list[bytes]) -> list[httpx.Response]:
    """Send ``bodies`` at once from one thread each and return the responses in order."""
    responses: list[httpx.Response | None] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def send(index: int) -> None:
        barrier.wait()
        responses[index] = post(client, bodies[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [response for response in responses if response is not None]


def concurrent_study_bodies(count: int) -> Iterator[bytes]:
    study_instance_uid, series_instance_uid = generate_uid(), generate_uid()
    for number in range(1, count + 1):
        dataset = make_dataset(
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            instance_number=number,
        )
        yield dicom_body([dataset])


def test_concurrent_new_study_all_stored(client: TestClient, context: ArchiveContext) -> None:
    bodies = list(concurrent_study_bodies(8))

    responses = post_concurrently(client, bodies)

    assert [response.status_code for response in responses] == [200] * len(bodies)
    assert len(stored_sop_instance_uids(context)) == len(bodies)


def test_concurrent_same_instance_kept_once(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    body = dicom_body([dataset])

    responses = post_concurrently(client, [body] * 6)

    assert [response.status_code for response in responses] == [200] * 6
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID}
    assert len(stored_object_files(context)) == 1
    assert spool_files(context) == []


def test_concurrent_conflicting_copies_keep_one(
    client: TestClient, context: ArchiveContext
) -> None:
    original = make_dataset()
    bodies = []
    for number in range(6):
        copy = make_dataset(
            study_instance_uid=original.StudyInstanceUID,
            series_instance_uid=original.SeriesInstanceUID,
            sop_instance_uid=original.SOPInstanceUID,
            patient_name=f"Version^{number}",
        )
        bodies.append(dicom_body([copy]))

    responses = post_concurrently(client, bodies)

    status_codes = sorted(response.status_code for response in responses)
    assert status_codes == [200] + [409] * 5
    conflicts = [response for response in responses if response.status_code == 409]
    assert all(
        failure_reasons(response.json()) == [FailureReason.DUPLICATE_SOP_INSTANCE]
        for response in conflicts
    )
    assert len(stored_object_files(context)) == 1
    assert spool_files(context) == []
