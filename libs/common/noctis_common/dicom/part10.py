"""Reading and writing DICOM Part 10 files (PS3.10 section 7) without re-encoding.

Noctis stores each dataset byte for byte as received. Only the File Meta Information
is written anew, so it is always complete and names the transfer syntax of the bytes
that follow it.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from noctis_common.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    InvalidUIDError,
    validate_uid,
)

PREAMBLE_LENGTH = 128
PREFIX = b"DICM"
COPY_CHUNK_BYTES = 1024 * 1024
# The maximum length of an AE title value (PS3.5 table 6.2-1).
AE_TITLE_LENGTH = 16


class Part10Error(ValueError):
    """The input is not a DICOM Part 10 file that can be stored."""


@dataclass(frozen=True)
class Part10Header:
    """The File Meta Information of a Part 10 file and where its dataset begins."""

    file_meta: FileMetaDataset
    dataset_offset: int

    @property
    def transfer_syntax_uid(self) -> str:
        return str(self.file_meta.get("TransferSyntaxUID", "")).rstrip("\x00 ")


def _is_not_group_0002(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return tag >> 16 != 2


def read_part10_header(handle: BinaryIO) -> Part10Header:
    """Read the preamble and File Meta Information from the start of ``handle``.

    Raises :class:`Part10Error` when the 'DICM' prefix or the Transfer Syntax UID is
    missing, because then the encoding of the dataset bytes is unknown.
    """
    handle.seek(0)
    head = handle.read(PREAMBLE_LENGTH + len(PREFIX))
    if head[PREAMBLE_LENGTH:] == PREFIX:
        start = PREAMBLE_LENGTH + len(PREFIX)
    elif head[: len(PREFIX)] == PREFIX:
        start = len(PREFIX)  # no preamble, a form some writers produce
    elif head[:2] == b"\x02\x00" and head[4:6].isalpha():
        # File Meta Information without preamble and prefix, which pydicom writes for a
        # dataset built in memory unless enforce_file_format is set (dicomweb-client
        # sends such datasets this way).
        start = 0
    else:
        raise Part10Error(
            "not a DICOM Part 10 file: the 'DICM' prefix is missing at byte 128; "
            "send the dataset with its File Meta Information (PS3.10 section 7.1)"
        )
    handle.seek(start)
    try:
        meta = FileMetaDataset(
            read_dataset(
                handle, is_implicit_VR=False, is_little_endian=True, stop_when=_is_not_group_0002
            )
        )
    except Exception as error:  # pydicom raises several types on corrupt input
        raise Part10Error(f"the File Meta Information cannot be parsed: {error}") from error
    if "TransferSyntaxUID" not in meta:
        raise Part10Error("the File Meta Information has no Transfer Syntax UID (0002,0010)")
    return Part10Header(file_meta=meta, dataset_offset=handle.tell())


@dataclass(frozen=True)
class WrittenPart10:
    """A Part 10 file written to the spool."""

    path: Path
    dataset_offset: int
    dataset_sha256: str
    size: int


_thread_buffers = threading.local()


def _copy_buffer() -> memoryview:
    """Return this thread's copy buffer of :data:`COPY_CHUNK_BYTES`."""
    buffer: memoryview | None = getattr(_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = memoryview(bytearray(COPY_CHUNK_BYTES))
        _thread_buffers.buffer = buffer
    return buffer


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
) -> bytes:
    """Return Noctis's File Meta Information, group 0002 in Explicit VR Little Endian.

    The elements are those of PS3.10 section 7.1 that Noctis fills: the Media Storage
    SOP Class and Instance UIDs, the Transfer Syntax UID, the Implementation Class UID
    and Version Name and, when given, the Source Application Entity Title. Encoding
    these few fixed elements directly costs a fraction of pydicom's general writer,
    which ran once per stored instance.
    """
    elements = [
        _short_element(0x0002, b"UI", _uid_value(sop_class_uid)),
        _short_element(0x0003, b"UI", _uid_value(sop_instance_uid)),
        _short_element(0x0010, b"UI", _uid_value(transfer_syntax_uid)),
        _short_element(0x0012, b"UI", _uid_value(IMPLEMENTATION_CLASS_UID)),
        _short_element(0x0013, b"SH", _text_value(IMPLEMENTATION_VERSION_NAME)),
    ]
    if source_ae_title:
        elements.append(_short_element(0x0016, b"AE", _text_value(source_ae_title)))
    # (0002,0001) File Meta Information Version, OB: a 4-byte length after 2 reserved bytes.
    version = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
    body = version + b"".join(elements)
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return group_length + body


def _short_element(element: int, vr: bytes, value: bytes) -> bytes:
    """Encode a group 0002 element whose VR has a 2-byte length (PS3.5 7.1.2)."""
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid_value(uid: str) -> bytes:
    value = uid.encode("ascii")
    return value + b"\x00" if len(value) % 2 else value


def _text_value(text: str) -> bytes:
    value = text.encode("ascii", errors="replace")
    return value + b" " if len(value) % 2 else value


def _header_bytes(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
) -> bytes:
    """Return the preamble, the 'DICM' prefix and Noctis's File Meta Information."""
    return (
        b"\x00" * PREAMBLE_LENGTH
        + PREFIX
        + encode_file_meta(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            source_ae_title=source_ae_title,
        )
    )


@dataclass(frozen=True)
class ReceivedFileMeta:
    """The values of the File Meta Information that pynetdicom writes ahead of a spooled dataset."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def received_file_meta(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, **_ignored: object
) -> ReceivedFileMeta:
    """Return the values of the File Meta Information of a dataset that arrives by C-STORE.

    This replaces pynetdicom's ``create_file_meta`` and takes its keyword names;
    :func:`write_received_file_meta` replaces the writer that pynetdicom then calls.
    Raises :class:`ValueError` when a value is empty, as pydicom's writer did for the
    File Meta Information that pynetdicom built. pynetdicom then aborts the
    association, because it cannot send a C-STORE response without the Affected SOP
    Class or Instance UID.
    """
    values = {
        "Affected SOP Class UID": sop_class_uid,
        "Affected SOP Instance UID": sop_instance_uid,
        "Transfer Syntax UID": transfer_syntax,
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ValueError(
            f"the C-STORE request has no {' or '.join(missing)}, so its dataset cannot be stored"
        )
    return ReceivedFileMeta(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax))


def write_received_file_meta(
    output: BinaryIO, meta: ReceivedFileMeta, enforce_standard: bool = True
) -> None:
    """Write Noctis's File Meta Information for ``meta`` after the preamble pynetdicom wrote.

    The Source Application Entity Title is sixteen spaces, the maximum length of an AE
    title. :func:`finish_received_part10` writes the sender's title into that room, so
    the received file can be stored without a copy.
    """
    output.write(
        encode_file_meta(
            sop_class_uid=meta.sop_class_uid,
            sop_instance_uid=meta.sop_instance_uid,
            transfer_syntax_uid=meta.transfer_syntax_uid,
            source_ae_title=" " * AE_TITLE_LENGTH,
        )
    )


def spool_header(head: bytes | bytearray, *, whole: bool) -> tuple[bytes, int] | None:
    """Return Noctis's header for the Part 10 bytes that ``head`` begins with.

    The header is the preamble, the prefix and the File Meta Information that
    :func:`finish_received_part10` will write for these bytes without a Source AE title,
    built from the sender's Media Storage SOP Class and Instance UIDs and Transfer
    Syntax UID. Writing it in place of the sender's File Meta Information, then the
    dataset bytes, lets the archive store the spool file without a copy. Returns the
    header and the position of the first dataset byte in ``head``.

    Returns None while ``head`` may still be too short to hold the whole File Meta
    Information, unless ``whole`` is true: ``head`` is then the whole part. Raises
    :class:`Part10Error` when the bytes cannot get the header: not Part 10, File Meta
    Information that does not parse, or a missing or invalid UID. The caller then keeps
    the bytes as sent, and the archive reports the problem when it parses them.
    """
    try:
        parsed = read_part10_header(BytesIO(head))
    except Part10Error:
        if whole:
            raise
        return None
    # The File Meta Information is complete once the header of the next element (at
    # most 12 bytes) has arrived, because pydicom then reads it and steps back.
    if not whole and parsed.dataset_offset + 12 > len(head):
        return None
    if parsed.dataset_offset >= len(head):
        raise Part10Error("the dataset is empty")
    meta = parsed.file_meta
    try:
        sop_class_uid = validate_uid(meta.get("MediaStorageSOPClassUID", ""), "SOPClassUID")
        sop_instance_uid = validate_uid(
            meta.get("MediaStorageSOPInstanceUID", ""), "SOPInstanceUID"
        )
        transfer_syntax_uid = validate_uid(parsed.transfer_syntax_uid, "TransferSyntaxUID")
    except InvalidUIDError as error:
        raise Part10Error(f"the File Meta Information has an invalid UID: {error}") from error
    except Exception as error:  # pydicom decodes values lazily and raises many types
        raise Part10Error(f"the File Meta Information cannot be decoded: {error}") from error
    header = _header_bytes(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
    )
    return header, parsed.dataset_offset


def finish_received_part10(
    path: Path,
    dataset_offset: int,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None,
) -> WrittenPart10 | None:
    """Give the received Part 10 file at ``path`` Noctis's File Meta Information in place.

    This works when the new File Meta Information has exactly the length of the one in
    the file, as it has for files that began with :func:`received_file_meta` (a
    C-STORE, ``source_ae_title`` set) or with :func:`spool_header` (STOW-RS, no title).
    The dataset bytes then stay where they are and are only read, for their SHA-256.
    Returns None, having changed nothing, when the lengths differ; the caller then
    writes a copy with :func:`write_part10`.
    """
    title = source_ae_title.strip() if source_ae_title else None
    if title is not None and len(title) > AE_TITLE_LENGTH:
        return None
    header = _header_bytes(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        source_ae_title=title.ljust(AE_TITLE_LENGTH) if title is not None else None,
    )
    if len(header) != dataset_offset:
        return None
    digest = hashlib.sha256()
    with open(path, "r+b") as handle:
        handle.seek(dataset_offset)
        buffer = _copy_buffer()
        while count := handle.readinto(buffer):
            with buffer[:count] as chunk:
                digest.update(chunk)
        size = handle.tell()
        if size == dataset_offset:
            raise Part10Error("the dataset is empty")
        handle.seek(0)
        handle.write(header)
    return WrittenPart10(
        path=path, dataset_offset=dataset_offset, dataset_sha256=digest.hexdigest(), size=size
    )


def write_part10(
    target: Path,
    dataset_source: BinaryIO,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
) -> WrittenPart10:
    """Write a Part 10 file: new File Meta Information, then the dataset bytes verbatim.

    ``dataset_source`` must be positioned at the first byte of the dataset. The SHA-256
    covers only those dataset bytes, so a copy re-sent with other File Meta Information
    hashes the same.
    """
    header = _header_bytes(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        source_ae_title=source_ae_title.strip() if source_ae_title else None,
    )
    digest = hashlib.sha256()
    with open(target, "wb") as output:
        output.write(header)
        dataset_offset = len(header)
        # One reused buffer per thread, so that copying an object allocates no new
        # megabyte.
        buffer = _copy_buffer()
        while count := dataset_source.readinto(buffer):  # type: ignore[attr-defined]
            with buffer[:count] as chunk:
                digest.update(chunk)
                output.write(chunk)
        output.flush()
        size = output.tell()
    if size == dataset_offset:
        os.unlink(target)
        raise Part10Error("the dataset is empty")
    return WrittenPart10(
        path=target, dataset_offset=dataset_offset, dataset_sha256=digest.hexdigest(), size=size
    )
