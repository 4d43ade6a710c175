"""STOW-RS over the test client, on SQLite and PostgreSQL: bodies built by hand."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.exc import OperationalError

from noctis_common.archive import Archive, FailureReason
from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance
from noctis_common.dicom.part10 import read_part10_header
from noctis_stow.store import STUDY_INSTANCE_UID_MISMATCH
from tests.stow.bodies import (
    BOUNDARY,
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
from tests.stow.conftest import SMALL_MAX_REQUEST_BYTES
from tests.support import make_dataset

STUDIES_URL = "/dicom-web/studies"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
RETRIEVE_URL = "00081190"
NATIVE_DICOM = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def post(
    client: TestClient,
    body: bytes | Iterator[bytes],
    *,
    url: str = STUDIES_URL,
    headers: dict[str, str] | None = None,
):
    request_headers = {"Content-Type": content_type()} if headers is None else headers
    return client.post(url, content=body, headers=request_headers)


def one_instance_body() -> bytes:
    return dicom_body([make_dataset()])


def assert_nothing_kept(context: ArchiveContext) -> None:
    assert stored_sop_instance_uids(context) == set()
    assert stored_object_files(context) == []
    assert spool_files(context) == []


# -- requests rejected as a whole -------------------------------------------------------

REJECTED_REQUESTS: list[tuple[str, dict[str, str], Callable[[], bytes], int, str]] = [
    (
        "not-multipart",
        {"Content-Type": "application/dicom"},
        lambda: part10_bytes(make_dataset()),
        415,
        "'application/dicom' is not supported",
    ),
    (
        "metadata-and-bulk-data-type",
        {"Content-Type": content_type(part_type="application/dicom+json")},
        one_instance_body,
        415,
        "not the metadata and bulk data forms",
    ),
    ("no-content-type", {}, one_instance_body, 415, "has no Content-Type"),
    (
        "no-boundary",
        {"Content-Type": 'multipart/related; type="application/dicom"'},
        one_instance_body,
        400,
        "no boundary parameter",
    ),
    (
        "truncated-body",
        {"Content-Type": content_type()},
        lambda: multipart_body(
            [Part(part10_bytes(make_dataset())), Part(part10_bytes(make_dataset())[:300])],
            close=False,
        ),
        400,
        "ended inside part 2",
    ),
    (
        "bare-lf-line-breaks",
        {"Content-Type": content_type()},
        lambda: multipart_body([Part(part10_bytes(make_dataset()))], line_break=b"\n"),
        400,
        "need CRLF line breaks",
    ),
    ("empty-body", {"Content-Type": content_type()}, lambda: b"", 400, "body is empty"),
    (
        "no-parts",
        {"Content-Type": content_type()},
        lambda: b"--" + BOUNDARY.encode() + b"--\r\n",
        400,
        "contains no parts",
    ),
    (
        "malformed-part-header",
        {"Content-Type": content_type()},
        lambda: multipart_body([Part(b"x", {"Content-Type": "a"})]).replace(b"Type: a", b"Type a"),
        400,
        "malformed header line",
    ),
    (
        "no-dicom-parts",
        {"Content-Type": content_type()},
        lambda: multipart_body([Part(b"[]", {"Content-Type": "application/dicom+json"})]),
        415,
        "no part is application/dicom",
    ),
    (
        "content-encoding",
        {"Content-Type": content_type(), "Content-Encoding": "gzip"},
        one_instance_body,
        415,
        "Content-Encoding 'gzip' is not supported",
    ),
    (
        "not-acceptable",
        {"Content-Type": content_type(), "Accept": "text/html"},
        one_instance_body,
        406,
        "application/dicom+json, application/dicom+xml",
    ),
]


@pytest.mark.parametrize(
    ("headers", "make_body", "expected"),
    [
        pytest.param(headers, body, (status_code, message), id=name)
        for name, headers, body, status_code, message in REJECTED_REQUESTS
    ],
)
def test_bad_request_is_rejected_whole(
    client: TestClient,
    context: ArchiveContext,
    headers: dict[str, str],
    make_body: Callable[[], bytes],
    expected: tuple[int, str],
) -> None:
    status_code, message = expected

    response = post(client, make_body(), headers=headers)

    assert response.status_code == status_code
    assert message in response.json()["detail"]
    assert_nothing_kept(context)


def test_invalid_study_uid_in_url(client: TestClient, context: ArchiveContext) -> None:
    response = post(client, one_instance_body(), url=f"{STUDIES_URL}/1.2.abc")

    assert response.status_code == 400
    assert "invalid StudyInstanceUID '1.2.abc'" in response.json()["detail"]
    assert_nothing_kept(context)


# -- body variations that are accepted --------------------------------------------------

ACCEPTED_BODIES: list[tuple[str, str, Callable[[bytes], bytes]]] = [
    ("quoted-boundary", content_type(), lambda data: multipart_body([Part(data)])),
    (
        "unquoted-boundary",
        f"multipart/related; type=application/dicom; boundary={BOUNDARY}",
        lambda data: multipart_body([Part(data)]),
    ),
    (
        "no-type-parameter",
        f"multipart/related; boundary={BOUNDARY}",
        lambda data: multipart_body([Part(data)]),
    ),
    (
        "special-character-boundary",
        content_type("=_a'()+,-./:? 9"),
        lambda data: multipart_body([Part(data)], "=_a'()+,-./:? 9"),
    ),
    (
        "preamble-and-epilogue",
        content_type(),
        lambda data: multipart_body(
            [Part(data)], preamble=b"This is a preamble.", epilogue=b"This is an epilogue.\r\n"
        ),
    ),
    (
        "part-without-content-type",
        content_type(),
        lambda data: multipart_body([Part(data, {})]),
    ),
    (
        "part-type-with-parameters",
        content_type(),
        lambda data: multipart_body(
            [Part(data, {"content-type": "Application/DICOM; transfer-syntax=1.2.840.10008.1.2.1"})]
        ),
    ),
    (
        "transport-padding",
        content_type(),
        lambda data: multipart_body([Part(data)], padding=b" \t"),
    ),
]


@pytest.mark.parametrize(
    ("request_content_type", "make_body"),
    [pytest.param(*case[1:], id=case[0]) for case in ACCEPTED_BODIES],
)
def test_body_variation_is_stored(
    client: TestClient,
    context: ArchiveContext,
    request_content_type: str,
    make_body: Callable[[bytes], bytes],
) -> None:
    dataset = make_dataset()

    response = post(
        client, make_body(part10_bytes(dataset)), headers={"Content-Type": request_content_type}
    )

    assert response.status_code == 200
    assert sequence_uids(response.json(), REFERENCED_SOP_SEQUENCE) == [dataset.SOPInstanceUID]
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID}
    assert spool_files(context) == []


def test_chunked_body_is_stored(client: TestClient, context: ArchiveContext) -> None:
    datasets = [make_dataset(), make_dataset()]
    body = dicom_body(datasets)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 333):
            yield body[start : start + 333]

    response = post(client, chunks())

    assert response.status_code == 200
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID for dataset in datasets}


def test_boundary_like_bytes_are_kept(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    dataset.ImageComments = f"text\r\n--{BOUNDARY}X\r\n--{BOUNDARY} continues"
    sent = part10_bytes(dataset)

    response = post(client, multipart_body([Part(sent)]))

    assert response.status_code == 200
    with context.database.read_session() as session:
        instance = session.query(Instance).one()
        object_key = instance.object_key
    with context.store.open(object_key) as stored:
        stored_offset = read_part10_header(stored).dataset_offset
        stored.seek(stored_offset)
        stored_dataset_bytes = stored.read()
    sent_offset = read_part10_header(io.BytesIO(sent)).dataset_offset
    assert stored_dataset_bytes == sent[sent_offset:]


# -- the response ----------------------------------------------------------------------


def test_response_references_stored_instance(client: TestClient) -> None:
    dataset = make_dataset()

    response = post(client, dicom_body([dataset]))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    body = response.json()
    study_url = f"http://testserver/dicom-web/studies/{dataset.StudyInstanceUID}"
    assert body[RETRIEVE_URL] == {"vr": "UR", "Value": [study_url]}
    assert FAILED_SOP_SEQUENCE not in body
    item = body[REFERENCED_SOP_SEQUENCE]["Value"][0]
    assert item["00081150"]["Value"] == [dataset.SOPClassUID]
    assert item["00081155"]["Value"] == [dataset.SOPInstanceUID]
    assert item[RETRIEVE_URL]["Value"] == [
        f"{study_url}/series/{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}"
    ]
    assert "warning" not in response.headers


def test_two_studies_leave_study_url_empty(client: TestClient, context: ArchiveContext) -> None:
    datasets = [make_dataset(), make_dataset()]

    response = post(client, dicom_body(datasets))

    assert response.status_code == 200
    assert response.json()[RETRIEVE_URL] == {"vr": "UR"}
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID for dataset in datasets}


def test_xml_response_when_accepted(client: TestClient) -> None:
    dataset = make_dataset()
    body = multipart_body([Part(part10_bytes(dataset)), Part(b"not DICOM")])

    response = post(
        client,
        body,
        headers={"Content-Type": content_type(), "Accept": "application/dicom+xml"},
    )

    assert response.status_code == 202
    assert response.headers["content-type"] == "application/dicom+xml"
    root = ElementTree.fromstring(response.content)
    assert root.tag == f"{NATIVE_DICOM}NativeDicomModel"
    reason = root.find(
        f"{NATIVE_DICOM}DicomAttribute[@keyword='FailedSOPSequence']/{NATIVE_DICOM}Item/"
        f"{NATIVE_DICOM}DicomAttribute[@keyword='FailureReason']/{NATIVE_DICOM}Value"
    )
    assert reason is not None
    assert reason.text == str(FailureReason.CANNOT_UNDERSTAND.value)
    referenced = root.find(
        f"{NATIVE_DICOM}DicomAttribute[@keyword='ReferencedSOPSequence']/{NATIVE_DICOM}Item/"
        f"{NATIVE_DICOM}DicomAttribute[@tag='00081155']/{NATIVE_DICOM}Value"
    )
    assert referenced is not None
    assert referenced.text == dataset.SOPInstanceUID


# -- instance-level failures -------------------------------------------------------------


def test_study_mismatch_fails_that_instance(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    matching = make_dataset(study_instance_uid=study_instance_uid)
    other = make_dataset()

    response = post(
        client, dicom_body([matching, other]), url=f"{STUDIES_URL}/{study_instance_uid}"
    )

    assert response.status_code == 202
    body = response.json()
    assert sequence_uids(body, REFERENCED_SOP_SEQUENCE) == [matching.SOPInstanceUID]
    assert sequence_uids(body, FAILED_SOP_SEQUENCE) == [other.SOPInstanceUID]
    assert failure_reasons(body) == [STUDY_INSTANCE_UID_MISMATCH]
    assert body[RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicom-web/studies/{study_instance_uid}"
    ]
    assert "differs from the study" in response.headers["warning"]
    assert stored_sop_instance_uids(context) == {matching.SOPInstanceUID}
    assert spool_files(context) == []


def test_all_instances_mismatched_gives_409(client: TestClient, context: ArchiveContext) -> None:
    response = post(client, one_instance_body(), url=f"{STUDIES_URL}/{generate_uid()}")

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [STUDY_INSTANCE_UID_MISMATCH]
    assert REFERENCED_SOP_SEQUENCE not in response.json()
    assert_nothing_kept(context)


def test_invalid_dicom_part_fails_alone(client: TestClient, context: ArchiveContext) -> None:
    first, last = make_dataset(), make_dataset()
    body = multipart_body(
        [Part(part10_bytes(first)), Part(b"this is not DICOM"), Part(part10_bytes(last))]
    )

    response = post(client, body)

    assert response.status_code == 202
    assert failure_reasons(response.json()) == [FailureReason.CANNOT_UNDERSTAND]
    assert sequence_uids(response.json(), FAILED_SOP_SEQUENCE) == [""]
    assert "part 2 failed with Failure Reason C000H" in response.headers["warning"]
    assert "'DICM' prefix is missing" in response.headers["warning"]
    assert stored_sop_instance_uids(context) == {first.SOPInstanceUID, last.SOPInstanceUID}
    assert spool_files(context) == []


def test_raw_dataset_failure_names_its_uid(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    # Only the data elements: no preamble, no prefix and no File Meta Information.
    bare = Dataset()
    bare.update(dataset)
    raw_dataset = io.BytesIO()
    bare.save_as(raw_dataset, implicit_vr=False, little_endian=True)

    response = post(client, multipart_body([Part(raw_dataset.getvalue())]))

    assert response.status_code == 409
    assert sequence_uids(response.json(), FAILED_SOP_SEQUENCE) == [dataset.SOPInstanceUID]
    assert failure_reasons(response.json()) == [FailureReason.CANNOT_UNDERSTAND]
    assert_nothing_kept(context)


def test_other_media_type_part_fails_alone(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    body = multipart_body(
        [Part(part10_bytes(dataset)), Part(b"[]", {"Content-Type": "application/dicom+json"})]
    )

    response = post(client, body)

    assert response.status_code == 202
    assert failure_reasons(response.json()) == [FailureReason.CANNOT_UNDERSTAND]
    assert "media type 'application/dicom+json'" in response.headers["warning"]
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID}
    assert spool_files(context) == []


def test_duplicate_resend_succeeds(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    body = dicom_body([dataset])

    first = post(client, body)
    second = post(client, body)

    assert first.status_code == 200
    assert second.status_code == 200
    assert sequence_uids(second.json(), REFERENCED_SOP_SEQUENCE) == [dataset.SOPInstanceUID]
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID}
    assert len(stored_object_files(context)) == 1


def test_conflicting_resend_gives_409(client: TestClient, context: ArchiveContext) -> None:
    original = make_dataset(patient_name="First^Version")
    changed = make_dataset(
        study_instance_uid=original.StudyInstanceUID,
        series_instance_uid=original.SeriesInstanceUID,
        sop_instance_uid=original.SOPInstanceUID,
        patient_name="Second^Version",
    )
    assert post(client, dicom_body([original])).status_code == 200

    response = post(client, dicom_body([changed]))

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [FailureReason.DUPLICATE_SOP_INSTANCE]
    assert sequence_uids(response.json(), FAILED_SOP_SEQUENCE) == [original.SOPInstanceUID]
    assert "already stored with different content" in response.headers["warning"]
    assert len(stored_object_files(context)) == 1
    assert spool_files(context) == []


# -- maximum request size --------------------------------------------------------------


def test_content_length_over_limit_gives_413(
    small_limit_client: TestClient, context: ArchiveContext
) -> None:
    body = dicom_body([make_dataset(), make_dataset(), make_dataset(), make_dataset()])
    assert len(body) > SMALL_MAX_REQUEST_BYTES

    response = post(small_limit_client, body)

    assert response.status_code == 413
    assert f"maximum of {SMALL_MAX_REQUEST_BYTES} bytes" in response.json()["detail"]
    assert f"Content-Length is {len(body)} bytes" in response.json()["detail"]
    assert_nothing_kept(context)


def test_chunked_body_over_limit_gives_413(
    small_limit_client: TestClient, context: ArchiveContext
) -> None:
    body = dicom_body([make_dataset(), make_dataset(), make_dataset(), make_dataset()])

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = post(small_limit_client, chunks())

    assert response.status_code == 413
    assert f"maximum of {SMALL_MAX_REQUEST_BYTES} bytes" in response.json()["detail"]
    assert f"more than {SMALL_MAX_REQUEST_BYTES} bytes were sent" in response.json()["detail"]
    assert_nothing_kept(context)


def test_body_under_limit_is_stored(
    small_limit_client: TestClient, context: ArchiveContext
) -> None:
    dataset = make_dataset(rows=8, columns=8)
    body = dicom_body([dataset])
    assert len(body) <= SMALL_MAX_REQUEST_BYTES

    response = post(small_limit_client, body)

    assert response.status_code == 200
    assert stored_sop_instance_uids(context) == {dataset.SOPInstanceUID}


def test_index_failure_logs_one_error(
    client: TestClient,
    context: ArchiveContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail_to_index(*_args: object, **_keywords: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(Archive, "_insert_rows", fail_to_index)

    with caplog.at_level(logging.INFO):
        response = post(client, one_instance_body())

    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert response.status_code == 503
    assert len(errors) == 1, errors
    assert "failed with A700H" in errors[0]
    assert "OperationalError" in errors[0]
