"""STOW-RS parts spooled behind Noctis's header and stored without a copy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import ExplicitVRLittleEndian

from noctis_common import archive as archive_module
from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance
from noctis_common.dicom import part10 as part10_module
from noctis_common.dicom.part10 import (
    PREAMBLE_LENGTH,
    PREFIX,
    encode_file_meta,
    read_part10_header,
    spool_header,
)
from noctis_common.uids import IMPLEMENTATION_CLASS_UID
from noctis_stow import receive
from noctis_stow.receive import PartSpooler
from tests.stow.bodies import Part, content_type, multipart_body, part10_bytes
from tests.support import make_dataset

STUDIES_URL = "/dicom-web/studies"


def stored_bytes(context: ArchiveContext, sop_instance_uid: str) -> bytes:
    with context.database.read_session() as session:
        instance = session.query(Instance).filter_by(sop_instance_uid=sop_instance_uid).one()
        object_key = instance.object_key
    with context.store.open(object_key) as stored:
        return bytes(stored.read())


def dataset_part(raw: bytes) -> bytes:
    return raw[read_part10_header(io.BytesIO(raw)).dataset_offset :]


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the copies the archive writes with write_part10."""
    written: list[Path] = []
    write_part10 = part10_module.write_part10

    def recording_write_part10(target: Path, *args: object, **kwargs: object) -> object:
        written.append(target)
        return write_part10(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(archive_module, "write_part10", recording_write_part10)
    return written


@pytest.mark.parametrize("chunk_bytes", [None, 7], ids=["one-chunk", "7-byte-chunks"])
def test_part_stored_without_copy(
    client: TestClient, context: ArchiveContext, copies: list[Path], chunk_bytes: int | None
) -> None:
    dataset = make_dataset()
    sent = part10_bytes(dataset)
    body = multipart_body([Part(sent)])

    def chunks() -> Iterator[bytes]:
        assert chunk_bytes is not None
        for start in range(0, len(body), chunk_bytes):
            yield body[start : start + chunk_bytes]

    response = client.post(
        STUDIES_URL,
        content=body if chunk_bytes is None else chunks(),
        headers={"Content-Type": content_type()},
    )

    assert response.status_code == 200
    assert copies == []
    stored = stored_bytes(context, dataset.SOPInstanceUID)
    assert dataset_part(stored) == dataset_part(sent)
    file_meta = pydicom.dcmread(io.BytesIO(stored)).file_meta
    assert file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID


def test_file_meta_naming_another_instance_stored_by_copy(
    client: TestClient, context: ArchiveContext, copies: list[Path]
) -> None:
    dataset = make_dataset()
    sent = part10_bytes(dataset)
    # A UID of another length, so that Noctis's header cannot take the place of the
    # sender's File Meta Information.
    file_meta = encode_file_meta(
        sop_class_uid=dataset.SOPClassUID,
        sop_instance_uid="1.2.3.4",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    relabelled = b"\x00" * PREAMBLE_LENGTH + PREFIX + file_meta + dataset_part(sent)

    response = client.post(
        STUDIES_URL,
        content=multipart_body([Part(relabelled)]),
        headers={"Content-Type": content_type()},
    )

    assert response.status_code == 200
    assert len(copies) == 1
    stored = stored_bytes(context, dataset.SOPInstanceUID)
    stored_meta = pydicom.dcmread(io.BytesIO(stored)).file_meta
    assert stored_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID


def test_bytes_without_file_meta_spooled_as_sent(context: ArchiveContext) -> None:
    spooler = PartSpooler(context.archive)
    sent = b"not DICOM at all " * 100

    spooler.start_part({"content-type": "application/dicom"})
    spooler.write_part_data(sent)
    spooler.end_part()

    [part] = spooler.parts
    assert part.path is not None
    assert part.path.read_bytes() == sent
    spooler.discard()


def test_head_parsed_a_few_times_only(
    context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def counting_spool_header(head: bytes | bytearray, *, whole: bool) -> object:
        attempts.append(len(head))
        return spool_header(head, whole=whole)

    monkeypatch.setattr(receive, "spool_header", counting_spool_header)
    spooler = PartSpooler(context.archive)
    sent = b"\x00" * 200_000

    spooler.start_part({"content-type": "application/dicom"})
    for start in range(0, len(sent)):
        spooler.write_part_data(sent[start : start + 1])
    spooler.end_part()

    assert len(attempts) <= 10
    [part] = spooler.parts
    assert part.path is not None
    assert part.path.read_bytes() == sent
    spooler.discard()
