"""Receiving a Store request body: each part is streamed into its own spool file.

A DICOM part's spool file starts with the header that the archive will give it (see
:func:`noctis_common.dicom.part10.spool_header`) in place of the sender's File Meta
Information, so that the archive stores the file without copying it. A part whose
first bytes cannot get that header is written as sent, and the archive copies it or
reports why it cannot store it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette import status

from noctis_common.archive import Archive
from noctis_common.dicom.part10 import Part10Error, spool_header
from noctis_stow.media_types import DICOM, MediaTypeError, parse_media_type
from noctis_stow.multipart import MultipartError, MultipartParser
from noctis_stow.request import StowRequestError, request_too_large_message

logger = logging.getLogger(__name__)

# Maximum number of parts in one request body. Each part costs a spool file and a
# response item whatever its size, so without a cap a body of empty parts within the
# default 2 GiB limit could contain tens of millions of them.
# NOTE: 100 000 is a guess at a count no single study reaches. A client with more
# instances sends several requests.
MAX_PARTS = 100_000
# A part's first bytes are kept in memory until its File Meta Information is complete,
# up to this many. File Meta Information is usually a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024
# The first attempt to parse a part's head waits for this many bytes, and each later
# attempt for twice as many as the one before, so that a body sent in tiny chunks is
# not parsed again for every chunk.
FIRST_HEAD_ATTEMPT_BYTES = 512


@dataclass
class ReceivedPart:
    """One part of the body. ``path`` is its spool file, or None when it was not spooled."""

    number: int
    media_type: str
    path: Path | None
    size: int = 0

    @property
    def is_dicom(self) -> bool:
        return self.media_type == DICOM


def _part_media_type(content_type: str | None) -> str:
    """Return a part's media type. A part without Content-Type is application/dicom."""
    if content_type is None:
        return DICOM
    try:
        return parse_media_type(content_type).essence
    except MediaTypeError:
        return content_type.strip().lower()


class PartSpooler:
    """Writes each application/dicom part into a spool file and skips other parts."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.parts: list[ReceivedPart] = []
        self._file: BinaryIO | None = None
        # The current part's bytes before its dataset, until spool_header() has its
        # header; None once they are written.
        self._head: bytearray | None = None
        self._next_head_attempt = FIRST_HEAD_ATTEMPT_BYTES

    def start_part(self, headers: dict[str, str]) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise StowRequestError(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"the multipart body has more than {MAX_PARTS} parts; send at most "
                f"{MAX_PARTS} instances per request",
            )
        part = ReceivedPart(
            number=len(self.parts) + 1,
            media_type=_part_media_type(headers.get("content-type")),
            path=None,
        )
        self.parts.append(part)
        # The data of a part in another media type is read past, never written.
        if part.is_dicom:
            part.path = self.archive.new_spool_path(".part")
            self._file = open(part.path, "wb")  # noqa: SIM115 (closed in end_part or discard)
            self._head = bytearray()
            self._next_head_attempt = FIRST_HEAD_ATTEMPT_BYTES

    def write_part_data(self, data: bytes) -> None:
        self.parts[-1].size += len(data)
        if self._file is None:
            return
        if self._head is None:
            self._file.write(data)
            return
        self._head += data
        if len(self._head) >= self._next_head_attempt:
            self._write_head(whole=len(self._head) >= MAX_HEAD_BYTES)

    def end_part(self) -> None:
        if self._file is not None:
            if self._head is not None:
                self._write_head(whole=True)
            self._file.close()
            self._file = None

    def _write_head(self, *, whole: bool) -> None:
        """Write the part's first bytes behind Noctis's header, or as sent."""
        output, head = self._file, self._head
        if output is None or head is None:
            return
        try:
            found = spool_header(head, whole=whole)
        except Part10Error:
            output.write(head)  # the archive reports the problem
        else:
            if found is None:
                self._next_head_attempt = 2 * len(head)
                return
            header, dataset_offset = found
            output.write(header)
            output.write(memoryview(head)[dataset_offset:])
        self._head = None

    def discard(self) -> None:
        """Close and delete every spool file written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._head = None
        discard_parts(self.parts)


def discard_parts(parts: list[ReceivedPart]) -> None:
    """Delete the spool files of ``parts`` that the store step did not consume."""
    for part in parts:
        if part.path is not None:
            part.path.unlink(missing_ok=True)


async def receive_parts(
    body: AsyncIterator[bytes], boundary: str, archive: Archive, max_request_bytes: int
) -> list[ReceivedPart]:
    """Stream the multipart ``body`` into spool files and return its parts in order.

    Counts the body bytes as they arrive and stops reading past ``max_request_bytes``
    or :data:`MAX_PARTS` parts. Raises :class:`StowRequestError` (400, 413, 415 or 503)
    after deleting the spool files of the request, so a rejected body leaves nothing
    behind.
    """
    spooler = PartSpooler(archive)
    parser = MultipartParser(boundary, spooler)
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_request_bytes:
                raise StowRequestError(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    request_too_large_message(
                        max_request_bytes, f"more than {max_request_bytes} bytes were sent"
                    ),
                )
            parser.feed(chunk)
        if received == 0:
            raise StowRequestError(
                status.HTTP_400_BAD_REQUEST,
                "the request body is empty; send DICOM instances as parts of a "
                "multipart/related body",
            )
        parser.close()
    except MultipartError as error:
        spooler.discard()
        raise StowRequestError(
            status.HTTP_400_BAD_REQUEST, f"invalid multipart body: {error}"
        ) from error
    except OSError as error:
        spooler.discard()
        logger.error("writing a STOW-RS request body to the spool failed: %s", error)
        raise StowRequestError(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the server could not spool the request body ({error}); retry later",
        ) from error
    except BaseException:
        spooler.discard()
        raise
    if not spooler.parts:
        raise StowRequestError(
            status.HTTP_400_BAD_REQUEST,
            "the multipart body contains no parts; send one DICOM instance per part",
        )
    if not any(part.is_dicom for part in spooler.parts):
        media_types = sorted({part.media_type for part in spooler.parts})
        raise StowRequestError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"no part is {DICOM} (the parts are {', '.join(media_types)}); only DICOM "
            "Part 10 instances can be stored, not the metadata and bulk data forms",
        )
    return spooler.parts
