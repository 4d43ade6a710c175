"""The frame layout of stored Pixel Data, indexed when an instance is stored (PS3.5 A.4).

Retrieve Frames (PS3.18 10.4.1.1.6) serves a frame with one range read when the index
contains its position. The layout is found once, on the stored Part 10 object:

- native Pixel Data: where the value starts and the length of one frame, so frame
  ``n`` starts ``(n - 1) * frame_length`` bytes into the value;
- encapsulated Pixel Data: the position and length of each frame's fragment, taken from
  the Extended Offset Table, the Basic Offset Table or the fragment items.

Only layouts where each frame is one byte range of the object are indexed: little
endian, byte-aligned native frames, and encapsulated frames of one fragment each.
Everything else (big endian or deflated objects, bit-packed frames, frames split over
several fragments, truncated values, Float Pixel Data) has no index row, and WADO-RS
locates the frames by parsing the object as before.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from sqlalchemy.exc import SQLAlchemyError

from noctis_common.db import Database
from noctis_common.db.models import FrameIndex
from noctis_common.dicom.json_model import BULK_DATA_THRESHOLD_BYTES

logger = logging.getLogger(__name__)

PIXEL_DATA_TAG = 0x7FE00010
ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
# One (position, length) pair per encapsulated frame: 12 bytes, so the ranges of a
# 10,000-frame object take 120 kB.
FRAME_RANGE_FORMAT = "<QI"
FRAME_RANGE_BYTES = struct.calcsize(FRAME_RANGE_FORMAT)


@dataclass(frozen=True)
class FrameLayout:
    """The positions of the frames of an instance's Pixel Data in its stored object.

    ``pixel_data_offset`` is the position of the Pixel Data value. Native frames have
    ``frame_length`` and no ``frame_ranges``; encapsulated frames have ``frame_ranges``,
    one ``(position, length)`` per frame, and no ``frame_length``.
    """

    pixel_data_offset: int
    number_of_frames: int
    frame_length: int | None = None
    frame_ranges: tuple[tuple[int, int], ...] | None = None

    def moved_by(self, shift: int) -> FrameLayout:
        """Return this layout for a copy of the object whose bytes sit ``shift`` bytes later."""
        return FrameLayout(
            pixel_data_offset=self.pixel_data_offset + shift,
            number_of_frames=self.number_of_frames,
            frame_length=self.frame_length,
            frame_ranges=None
            if self.frame_ranges is None
            else tuple((position + shift, length) for position, length in self.frame_ranges),
        )

    @property
    def is_encapsulated(self) -> bool:
        return self.frame_ranges is not None

    def frame_range(self, frame_number: int) -> tuple[int, int]:
        """Return ``(position, length)`` of the 1-based ``frame_number``."""
        if self.frame_ranges is not None:
            return self.frame_ranges[frame_number - 1]
        length = self.frame_length or 0
        return self.pixel_data_offset + (frame_number - 1) * length, length


def pack_frame_ranges(frame_ranges: tuple[tuple[int, int], ...]) -> bytes:
    """Return ``frame_ranges`` as the bytes stored in ``frame_index.frame_ranges``."""
    return b"".join(struct.pack(FRAME_RANGE_FORMAT, *frame) for frame in frame_ranges)


def unpack_frame_ranges(data: bytes) -> tuple[tuple[int, int], ...]:
    """Return the ``(position, length)`` pairs that :func:`pack_frame_ranges` stored."""
    return tuple(struct.iter_unpack(FRAME_RANGE_FORMAT, data))


def _image_attribute(dataset: Dataset, keyword: str, default: int | None = None) -> int | None:
    try:
        value = dataset.get(keyword)
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError):
        return None


def _native_frame_length(dataset: Dataset) -> int | None:
    """Return the bytes of one native frame, or None when it is not a whole number of bytes."""
    rows = _image_attribute(dataset, "Rows")
    columns = _image_attribute(dataset, "Columns")
    samples = _image_attribute(dataset, "SamplesPerPixel", default=1)
    bits_allocated = _image_attribute(dataset, "BitsAllocated")
    if rows is None or columns is None or samples is None or bits_allocated is None:
        return None
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two luminance values share one chrominance pair (PS3.3 C.7.6.3.1.2)
    frame_bits = rows * columns * samples * bits_allocated
    if frame_bits <= 0 or frame_bits % 8:
        return None
    return frame_bits // 8


def _read_item_header(handle: BinaryIO) -> tuple[int, int] | None:
    header = handle.read(8)
    if len(header) < 8:
        return None
    group, element, length = struct.unpack("<HHL", header)
    return group << 16 | element, length


def _fragments(handle: BinaryIO) -> list[tuple[int, int]] | None:
    """Return (position, length) of the items after the Basic Offset Table, None if corrupt."""
    fragments: list[tuple[int, int]] = []
    while True:
        header = _read_item_header(handle)
        if header is None:
            return None
        tag, length = header
        if tag == SEQUENCE_DELIMITER_TAG:
            return fragments
        if tag != ITEM_TAG or length == UNDEFINED_LENGTH:
            return None
        fragments.append((handle.tell(), length))
        handle.seek(length, os.SEEK_CUR)


def _extended_ranges(
    dataset: Dataset, first_item_position: int, fragments: list[tuple[int, int]]
) -> list[tuple[int, int]] | None:
    """Return the frames that a valid Extended Offset Table names, else None."""
    try:
        offsets = dataset.get("ExtendedOffsetTable")
        lengths = dataset.get("ExtendedOffsetTableLengths")
    except Exception:  # pydicom raises many types on undecodable values
        return None
    if not offsets or not lengths or len(offsets) != len(lengths) or len(offsets) % 8:
        return None
    count = len(offsets) // 8
    fragment_lengths = {position - 8: length for position, length in fragments}
    ranges = []
    for offset, length in zip(
        struct.unpack(f"<{count}Q", offsets), struct.unpack(f"<{count}Q", lengths), strict=True
    ):
        fragment_length = fragment_lengths.get(first_item_position + offset)
        if fragment_length is None or length > fragment_length:
            return None
        ranges.append((first_item_position + offset + 8, length))
    return ranges


def _basic_ranges(
    basic_offsets: list[int], first_item_position: int, fragments: list[tuple[int, int]]
) -> list[tuple[int, int]] | None:
    """Return the frames of a Basic Offset Table that gives each frame one fragment.

    Returns ``fragments`` when the table points at every fragment item in order. Returns
    None for a table that groups several fragments into a frame, and for an invalid
    table (an entry that points at no item), so that parsing locates those frames.
    """
    item_starts = [position - 8 for position, _ in fragments]
    if [first_item_position + offset for offset in basic_offsets] != item_starts:
        return None
    return fragments


def _encapsulated_ranges(
    handle: BinaryIO, dataset: Dataset, value_start: int, frame_count: int
) -> list[tuple[int, int]] | None:
    handle.seek(value_start)
    header = _read_item_header(handle)
    if header is None or header[0] != ITEM_TAG or header[1] % 4:
        return None
    table = handle.read(header[1])
    if len(table) != header[1]:
        return None
    basic_offsets = list(struct.unpack(f"<{len(table) // 4}L", table))
    first_item_position = handle.tell()
    fragments = _fragments(handle)
    if not fragments:
        return None
    ranges = _extended_ranges(dataset, first_item_position, fragments)
    if ranges is None and basic_offsets:
        ranges = _basic_ranges(basic_offsets, first_item_position, fragments)
    elif ranges is None and len(fragments) == frame_count:
        ranges = fragments
    if ranges is None or len(ranges) != frame_count:
        return None
    return ranges


def locate_frame_layout(path: Path, transfer_syntax_uid: str) -> FrameLayout | None:
    """Return the frame layout of the Part 10 file at ``path``, or None when not indexable."""
    try:
        with open(path, "rb") as handle:
            return read_frame_layout(handle, transfer_syntax_uid)
    except OSError:
        return None


def read_frame_layout(handle: BinaryIO, transfer_syntax_uid: str) -> FrameLayout | None:
    """Return the frame layout of the Part 10 object in ``handle``, or None when not indexable.

    Reads the element headers and, for encapsulated Pixel Data, the item headers; never
    the pixel values. Returns None for objects without Pixel Data and for the layouts
    that the module docstring lists as not indexed.
    """
    if transfer_syntax_uid in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        return None
    try:
        handle.seek(0)
        dataset = dcmread(handle, defer_size=BULK_DATA_THRESHOLD_BYTES, force=True)
    except Exception:  # pydicom raises many types on corrupt input; parsing then decides
        return None
    return frame_layout_of(handle, dataset, transfer_syntax_uid)


def frame_layout_of(
    handle: BinaryIO, dataset: Dataset, transfer_syntax_uid: str
) -> FrameLayout | None:
    """Return the frame layout of ``dataset``, read from ``handle`` with deferred bulk data.

    Positions are those of ``handle``'s file. The store path calls this with the
    dataset it parsed already, so the object is not parsed a second time.
    """
    if transfer_syntax_uid in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        return None
    try:
        raw: RawDataElement | DataElement | None = dataset.get_item(
            PIXEL_DATA_TAG, keep_deferred=True
        )
        declared_frames = _image_attribute(dataset, "NumberOfFrames", default=1)
        if not isinstance(raw, RawDataElement) or declared_frames is None:
            return None
        frame_count = max(declared_frames, 1)
        if raw.length == UNDEFINED_LENGTH:
            ranges = _encapsulated_ranges(handle, dataset, raw.value_tell, frame_count)
            if ranges is None:
                return None
            return FrameLayout(
                pixel_data_offset=raw.value_tell,
                number_of_frames=frame_count,
                frame_ranges=tuple(ranges),
            )
        frame_length = _native_frame_length(dataset)
        if frame_length is None or frame_length * frame_count > raw.length:
            return None
        return FrameLayout(
            pixel_data_offset=raw.value_tell,
            number_of_frames=frame_count,
            frame_length=frame_length,
        )
    except Exception:  # pydicom raises many types on corrupt input; parsing then decides
        return None


def frame_index_values(instance_id: int, frame_layout: FrameLayout) -> dict[str, Any]:
    """Return the column values of the ``frame_index`` row that records ``frame_layout``."""
    frame_ranges = frame_layout.frame_ranges
    return {
        "instance_fk": instance_id,
        "pixel_data_offset": frame_layout.pixel_data_offset,
        "number_of_frames": frame_layout.number_of_frames,
        "frame_length": frame_layout.frame_length,
        "frame_ranges": None if frame_ranges is None else pack_frame_ranges(frame_ranges),
    }


def frame_index_row(instance_id: int, frame_layout: FrameLayout) -> FrameIndex:
    """Return the ``frame_index`` row that records ``frame_layout`` for an instance."""
    return FrameIndex(**frame_index_values(instance_id, frame_layout))


def load_frame_layout(database: Database, instance_id: int) -> FrameLayout | None:
    """Return the indexed frame layout of an instance, or None when it has no index row."""
    with database.read_session() as session:
        row = session.get(FrameIndex, instance_id)
        if row is None:
            return None
        return FrameLayout(
            pixel_data_offset=row.pixel_data_offset,
            number_of_frames=row.number_of_frames,
            frame_length=row.frame_length,
            frame_ranges=None
            if row.frame_ranges is None
            else unpack_frame_ranges(row.frame_ranges),
        )


def save_frame_layout(database: Database, instance_id: int, frame_layout: FrameLayout) -> bool:
    """Write the index row of an instance stored before the index; return True on success.

    A row written meanwhile by another request, or an instance deleted meanwhile, makes
    the insert fail. The failure is logged, and the frames are parsed again next time.
    """
    try:
        with database.write_session() as session:
            session.add(frame_index_row(instance_id, frame_layout))
            session.commit()
    except SQLAlchemyError as error:
        logger.info(
            "did not index the frames of instance row %s: %s", instance_id, type(error).__name__
        )
        return False
    return True
