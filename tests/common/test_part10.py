"""Part 10 files written by the store path: a copy behind new File Meta, or in place."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian

from noctis_common.dicom.frame_index import FrameLayout
from noctis_common.dicom.part10 import (
    PREAMBLE_LENGTH,
    PREFIX,
    Part10Error,
    WrittenPart10,
    encode_file_meta,
    finish_received_part10,
    read_part10_header,
    received_file_meta,
    spool_header,
    write_part10,
    write_received_file_meta,
)
from noctis_common.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from tests.support import CT_IMAGE_STORAGE, make_dataset


def _dataset_bytes() -> tuple[str, bytes]:
    dataset = make_dataset()
    buffer = io.BytesIO()
    dataset.save_as(buffer, implicit_vr=False, little_endian=True)
    raw = buffer.getvalue()
    header = read_part10_header(io.BytesIO(raw))
    return str(dataset.SOPInstanceUID), raw[header.dataset_offset :]


def _received_file(path: Path, sop_instance_uid: str, dataset: bytes) -> int:
    """Write ``dataset`` behind the File Meta that the SCP has pynetdicom write."""
    meta = received_file_meta(
        sop_class_uid=CT_IMAGE_STORAGE,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax=ExplicitVRLittleEndian,
        implementation_uid="1.2.3",  # pynetdicom passes more keywords, which are ignored
    )
    with open(path, "wb") as output:
        output.write(b"\x00" * PREAMBLE_LENGTH + PREFIX)
        write_received_file_meta(output, meta)
        offset = output.tell()
        output.write(dataset)
    return offset


def _finish(
    path: Path, offset: int, sop_instance_uid: str, source_ae_title: str = "MODALITY1"
) -> WrittenPart10 | None:
    return finish_received_part10(
        path,
        offset,
        sop_class_uid=CT_IMAGE_STORAGE,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        source_ae_title=source_ae_title,
    )


@pytest.mark.parametrize("source_ae_title", [None, "", "STORESCU", "ODD", "A" * 16])
def test_file_meta_encoded_as_pydicom_does(source_ae_title: str | None) -> None:
    values = {
        "sop_class_uid": CT_IMAGE_STORAGE,
        "sop_instance_uid": "1.2.826.0.1.3680043.8.498.123",
        "transfer_syntax_uid": ExplicitVRLittleEndian,
    }
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(values["sop_class_uid"])
    meta.MediaStorageSOPInstanceUID = UID(values["sop_instance_uid"])
    meta.TransferSyntaxUID = UID(values["transfer_syntax_uid"])
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae_title:
        meta.SourceApplicationEntityTitle = source_ae_title
    expected = io.BytesIO()
    write_file_meta_info(expected, meta, enforce_standard=True)  # type: ignore[arg-type]

    encoded = encode_file_meta(**values, source_ae_title=source_ae_title)

    assert encoded == expected.getvalue()


def test_received_file_finished_in_place(tmp_path: Path) -> None:
    sop_instance_uid, dataset = _dataset_bytes()
    path = tmp_path / "received.dcm"
    offset = _received_file(path, sop_instance_uid, dataset)

    written = _finish(path, offset, sop_instance_uid)

    assert written is not None
    assert written.path == path
    assert written.dataset_offset == offset
    assert written.size == path.stat().st_size
    assert written.dataset_sha256 == hashlib.sha256(dataset).hexdigest()
    assert path.read_bytes()[offset:] == dataset
    stored = pydicom.dcmread(path)
    assert stored.file_meta.SourceApplicationEntityTitle == "MODALITY1"
    assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert stored.SOPInstanceUID == sop_instance_uid


def test_in_place_and_copy_hash_alike(tmp_path: Path) -> None:
    sop_instance_uid, dataset = _dataset_bytes()
    path = tmp_path / "received.dcm"
    offset = _received_file(path, sop_instance_uid, dataset)
    values = {
        "sop_class_uid": CT_IMAGE_STORAGE,
        "sop_instance_uid": sop_instance_uid,
        "transfer_syntax_uid": ExplicitVRLittleEndian,
        "source_ae_title": "A",
    }

    copied = write_part10(tmp_path / "copy.dcm", io.BytesIO(dataset), **values)
    in_place = finish_received_part10(path, offset, **values)

    assert in_place is not None
    assert in_place.dataset_sha256 == copied.dataset_sha256
    assert pydicom.dcmread(path).file_meta.SourceApplicationEntityTitle == "A"


def test_other_file_meta_length_left_unchanged(tmp_path: Path) -> None:
    sop_instance_uid = "1.2.826.0.1.3680043.8.498.1"
    path = tmp_path / "sent.dcm"
    make_dataset(sop_instance_uid=sop_instance_uid).save_as(path, enforce_file_format=True)
    before = path.read_bytes()
    offset = read_part10_header(io.BytesIO(before)).dataset_offset

    written = _finish(path, offset, sop_instance_uid)

    assert written is None
    assert path.read_bytes() == before


def test_overlong_ae_title_left_unchanged(tmp_path: Path) -> None:
    sop_instance_uid, dataset = _dataset_bytes()
    path = tmp_path / "received.dcm"
    offset = _received_file(path, sop_instance_uid, dataset)
    before = path.read_bytes()

    written = _finish(path, offset, sop_instance_uid, source_ae_title="A" * 17)

    assert written is None
    assert path.read_bytes() == before


def test_received_file_without_dataset_rejected(tmp_path: Path) -> None:
    path = tmp_path / "received.dcm"
    offset = _received_file(path, "1.2.3.4", b"")

    with pytest.raises(Part10Error, match="empty"):
        _finish(path, offset, "1.2.3.4")


def test_frame_layout_moved_with_its_bytes() -> None:
    native = FrameLayout(pixel_data_offset=400, number_of_frames=2, frame_length=512)
    encapsulated = FrameLayout(
        pixel_data_offset=400, number_of_frames=2, frame_ranges=((420, 100), (528, 90))
    )

    assert native.moved_by(-60).frame_range(2) == (852, 512)
    assert encapsulated.moved_by(-60).frame_ranges == ((360, 100), (468, 90))
    assert encapsulated.moved_by(-60).pixel_data_offset == 340


@pytest.mark.parametrize("empty", ["sop_class_uid", "sop_instance_uid", "transfer_syntax"])
def test_received_file_meta_needs_every_uid(empty: str) -> None:
    values = {
        "sop_class_uid": CT_IMAGE_STORAGE,
        "sop_instance_uid": "1.2.3.4",
        "transfer_syntax": ExplicitVRLittleEndian,
    }
    values[empty] = ""

    with pytest.raises(ValueError, match="cannot be stored"):
        received_file_meta(**values)


def _part10_file() -> tuple[bytes, int]:
    """Return a Part 10 file of a small dataset as a sender writes it, and its dataset offset."""
    buffer = io.BytesIO()
    make_dataset().save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    return raw, read_part10_header(io.BytesIO(raw)).dataset_offset


def test_spool_header_matches_the_in_place_header(tmp_path: Path) -> None:
    raw, offset = _part10_file()
    sent = pydicom.dcmread(io.BytesIO(raw))

    found = spool_header(raw, whole=False)

    assert found is not None
    header, dataset_offset = found
    assert dataset_offset == offset
    spooled = tmp_path / "part.dcm"
    spooled.write_bytes(header + raw[offset:])
    written = finish_received_part10(
        spooled,
        len(header),
        sop_class_uid=sent.SOPClassUID,
        sop_instance_uid=sent.SOPInstanceUID,
        transfer_syntax_uid=sent.file_meta.TransferSyntaxUID,
        source_ae_title=None,
    )
    assert written is not None
    assert spooled.read_bytes()[len(header) :] == raw[offset:]
    stored = pydicom.dcmread(spooled)
    assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert "SourceApplicationEntityTitle" not in stored.file_meta


def test_spool_header_waits_for_the_whole_file_meta() -> None:
    raw, offset = _part10_file()

    assert spool_header(raw[: offset - 10], whole=False) is None
    assert spool_header(raw[:offset], whole=False) is None
    assert spool_header(raw[: offset + 12], whole=False) is not None


def test_spool_header_of_a_short_whole_part_rejected() -> None:
    raw, offset = _part10_file()

    with pytest.raises(Part10Error):
        spool_header(raw[: offset - 10], whole=True)
    with pytest.raises(Part10Error, match="empty"):
        spool_header(raw[:offset], whole=True)


@pytest.mark.parametrize(
    "form", ["without-preamble", "bare-file-meta"], ids=["DICM-first", "file-meta-first"]
)
def test_spool_header_of_short_forms(form: str) -> None:
    raw, offset = _part10_file()
    start = PREAMBLE_LENGTH if form == "without-preamble" else PREAMBLE_LENGTH + len(PREFIX)

    found = spool_header(raw[start:], whole=True)

    assert found is not None
    assert found[1] == offset - start
    assert found[0][PREAMBLE_LENGTH : PREAMBLE_LENGTH + len(PREFIX)] == PREFIX


@pytest.mark.parametrize(
    "keyword", ["MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"]
)
@pytest.mark.parametrize("value", ["", "1.2.abc"], ids=["missing", "invalid"])
def test_spool_header_needs_valid_uids(keyword: str, value: str) -> None:
    dataset = make_dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    setattr(dataset.file_meta, keyword, value)
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * PREAMBLE_LENGTH + PREFIX)
    write_file_meta_info(buffer, dataset.file_meta, enforce_standard=False)
    buffer.write(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100")

    with pytest.raises(Part10Error):
        spool_header(buffer.getvalue(), whole=True)


def test_spool_header_of_other_bytes_rejected() -> None:
    with pytest.raises(Part10Error, match="not a DICOM Part 10 file"):
        spool_header(b"%PDF-1.7 " * 100, whole=True)
