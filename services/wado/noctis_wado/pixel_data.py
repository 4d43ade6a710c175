"""Locating the frames of stored pixel data without decoding it (PS3.5 8.2 and A.4).

A frame is described by the byte ranges that hold it, so that a response can read
each frame from the stored object while it is sent. Native frames follow from the
image attributes. Encapsulated frames follow from the Extended Offset Table, the Basic
Offset Table or the fragment items. Finding them reads only item headers, plus the
last bytes of each fragment when frames span several fragments without an offset
table.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets

from noctis_wado.errors import StoredObjectError
from noctis_wado.stored_values import ElementValue, read_chunks, read_little_endian

logger = logging.getLogger(__name__)

ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
# JPEG EOI and JPEG 2000 EOC marker; pydicom looks for it in the last 10 bytes too.
END_OF_IMAGE_MARKER = b"\xff\xd9"
END_MARKER_SEARCH_BYTES = 10


@dataclass(frozen=True)
class FrameContent:
    """The location of one frame's bytes in its value source.

    ``ranges`` are ``(position, length)`` pairs whose bytes, concatenated, are the frame.
    ``swap_unit`` above 1 means the bytes are big endian words of that size, converted
    on reading. ``value_start`` is the position of the value, for word alignment. A
    bit-packed frame that does not start on a byte boundary has ``bit_count`` set: its
    bits start ``bit_shift`` bits into its first byte.
    """

    ranges: tuple[tuple[int, int], ...]
    swap_unit: int = 1
    value_start: int = 0
    bit_shift: int = 0
    bit_count: int | None = None


def _image_attribute(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    try:
        value = dataset.get(keyword)
        if value is None or value == "":
            if default is None:
                raise ValueError("the attribute is missing")
            return default
        return int(value)
    except (TypeError, ValueError) as error:
        raise StoredObjectError(
            f"the frames cannot be located because {keyword} is invalid: {error}"
        ) from error


def number_of_frames(dataset: Dataset) -> int:
    """Return Number of Frames (0028,0008) of an image, which is 1 when absent."""
    return max(_image_attribute(dataset, "NumberOfFrames", default=1), 1)


def native_frames(value: ElementValue, up_to: int | None = None) -> list[FrameContent]:
    """Return the frames of native pixel data that the stored value contains completely.

    With ``up_to``, only the first ``up_to`` frames are described, so that a request for
    frame 1 of an object that claims millions of tiny frames stays cheap.
    """
    dataset = value.container
    rows = _image_attribute(dataset, "Rows")
    columns = _image_attribute(dataset, "Columns")
    samples = _image_attribute(dataset, "SamplesPerPixel", default=1)
    bits_allocated = _image_attribute(dataset, "BitsAllocated")
    if value.tag == 0x7FE00008:
        bits_allocated = 32  # Float Pixel Data
    elif value.tag == 0x7FE00009:
        bits_allocated = 64  # Double Float Pixel Data
    samples_stored = samples
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        # Two luminance values share one pair of chrominance values (PS3.3 C.7.6.3.1.2).
        samples_stored = 2
    frame_bits = rows * columns * samples_stored * bits_allocated
    if frame_bits <= 0:
        raise StoredObjectError("the frames cannot be located because a frame has no pixels")

    length = value.length or 0
    unit = value.swap_unit(bits_allocated)
    frame_count = number_of_frames(dataset)
    if up_to is not None:
        frame_count = min(frame_count, up_to)
    frames: list[FrameContent] = []
    for index in range(frame_count):
        first_bit = index * frame_bits
        end_bit = first_bit + frame_bits
        if end_bit > length * 8:
            break
        first_byte = first_bit // 8
        end_byte = -(-end_bit // 8)
        bit_packed = frame_bits % 8 != 0
        frames.append(
            FrameContent(
                ranges=((value.start + first_byte, end_byte - first_byte),),
                swap_unit=unit,
                value_start=value.start,
                bit_shift=first_bit % 8 if bit_packed else 0,
                bit_count=frame_bits if bit_packed else None,
            )
        )
    return frames


def _read_fragments(handle: BinaryIO) -> list[tuple[int, int]]:
    """Read the item headers that follow the Basic Offset Table; return (position, length)."""
    fragments: list[tuple[int, int]] = []
    while True:
        header = handle.read(8)
        if len(header) < 8:
            return fragments  # values held in memory end without the delimiter
        group, element, length = struct.unpack("<HHL", header)
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITER_TAG:
            return fragments
        if tag != ITEM_TAG:
            raise StoredObjectError(
                f"the encapsulated pixel data is corrupt: expected an item tag at byte "
                f"{handle.tell() - 8}, found ({group:04X},{element:04X})"
            )
        fragments.append((handle.tell(), length))
        handle.seek(length, os.SEEK_CUR)


def _extended_offsets(dataset: Dataset) -> tuple[list[int], list[int]] | None:
    offsets = dataset.get("ExtendedOffsetTable")
    lengths = dataset.get("ExtendedOffsetTableLengths")
    if not offsets or not lengths or len(offsets) != len(lengths) or len(offsets) % 8:
        return None
    count = len(offsets) // 8
    return list(struct.unpack(f"<{count}Q", offsets)), list(struct.unpack(f"<{count}Q", lengths))


def _valid_extended_offsets(
    extended: tuple[list[int], list[int]],
    first_item_position: int,
    fragments: list[tuple[int, int]],
    sop_instance_uid: str,
) -> bool:
    """Return whether each Extended Offset Table entry names a fragment item that contains it.

    An entry past the end of the data or longer than its fragment would send bytes of
    other items or cut the response off. The fragments are then read as if there were
    no table.
    """
    fragment_lengths = {position - 8: length for position, length in fragments}
    for offset, length in zip(*extended, strict=True):
        fragment_length = fragment_lengths.get(first_item_position + offset)
        if fragment_length is None or length > fragment_length:
            logger.warning(
                "ignored the Extended Offset Table of instance %s: an entry points at no "
                "fragment item or is longer than its fragment",
                sop_instance_uid,
            )
            return False
    return True


def _ends_with_marker(handle: BinaryIO, position: int, length: int) -> bool:
    tail_length = min(length, END_MARKER_SEARCH_BYTES)
    handle.seek(position + length - tail_length)
    return END_OF_IMAGE_MARKER in handle.read(tail_length)


def _valid_basic_offsets(
    basic_offsets: list[int],
    first_item_position: int,
    fragments: list[tuple[int, int]],
    sop_instance_uid: str,
) -> list[int]:
    """Return the Basic Offset Table, or [] when an entry points at no fragment item.

    Some writers store wrong offsets, such as entries one byte off or an entry for the
    end of the data. The fragments are then grouped as if there were no table.
    """
    item_positions = {position - 8 for position, _ in fragments}
    if all(first_item_position + offset in item_positions for offset in basic_offsets):
        return basic_offsets
    logger.warning(
        "ignored the Basic Offset Table of instance %s: an entry points at no fragment item",
        sop_instance_uid,
    )
    return []


def _group_fragments(
    handle: BinaryIO,
    fragments: list[tuple[int, int]],
    basic_offsets: list[int],
    first_item_position: int,
    frame_count: int,
) -> list[list[tuple[int, int]]]:
    if basic_offsets:
        # Basic Offset Table entries point at the item tag of each frame's first fragment,
        # counted from the first fragment's item tag.
        frame_starts = [first_item_position + offset for offset in basic_offsets]
        grouped: list[list[tuple[int, int]]] = [[] for _ in frame_starts]
        for position, length in fragments:
            index = bisect.bisect_right(frame_starts, position - 8) - 1
            if index >= 0:
                grouped[index].append((position, length))
        return grouped
    if frame_count <= 1:
        return [fragments] if fragments else []
    if len(fragments) == frame_count:
        return [[fragment] for fragment in fragments]

    # Several fragments per frame and no offset table: a frame ends with the fragment
    # whose last bytes hold an end-of-image marker.
    grouped = []
    current: list[tuple[int, int]] = []
    for position, length in fragments:
        current.append((position, length))
        if _ends_with_marker(handle, position, length):
            grouped.append(current)
            current = []
    if current:
        grouped.append(current)
    return grouped


def encapsulated_frames(
    handle: BinaryIO, value: ElementValue, sop_instance_uid: str
) -> list[FrameContent]:
    """Return the frames of encapsulated pixel data, reading only item headers from ``handle``."""
    handle.seek(value.start)
    try:
        basic_offsets = parse_basic_offsets(handle)
    except ValueError as error:
        raise StoredObjectError(f"the encapsulated pixel data is corrupt: {error}") from error
    first_item_position = handle.tell()

    fragments = _read_fragments(handle)
    extended = _extended_offsets(value.container)
    if extended is not None and _valid_extended_offsets(
        extended, first_item_position, fragments, sop_instance_uid
    ):
        # Extended Offset Table entries point at each frame's item tag, counted like the
        # Basic Offset Table; each frame is one fragment (PS3.5 A.4).
        return [
            FrameContent(ranges=((first_item_position + offset + 8, length),))
            for offset, length in zip(*extended, strict=True)
        ]

    basic_offsets = _valid_basic_offsets(
        basic_offsets, first_item_position, fragments, sop_instance_uid
    )
    grouped = _group_fragments(
        handle, fragments, basic_offsets, first_item_position, number_of_frames(value.container)
    )
    return [FrameContent(ranges=tuple(group)) for group in grouped if group]


def whole_value(value: ElementValue) -> FrameContent:
    """Return the content of a value with a defined length as one part."""
    bits_allocated = None
    if value.is_pixel_data:
        bits_allocated = _image_attribute(value.container, "BitsAllocated", default=0)
    return FrameContent(
        ranges=((value.start, value.length or 0),),
        swap_unit=value.swap_unit(bits_allocated),
        value_start=value.start,
    )


def locate_frames(
    handle: BinaryIO, value: ElementValue, sop_instance_uid: str, up_to: int | None = None
) -> list[FrameContent]:
    """Return the frames that the pixel data ``value`` contains, in frame order.

    With ``up_to``, native pixel data is described only up to that frame. Encapsulated
    pixel data is always located in full, because its frames follow from its items.
    """
    if value.is_encapsulated:
        return encapsulated_frames(handle, value, sop_instance_uid)
    return native_frames(value, up_to)


def iter_frame(handle: BinaryIO, frame: FrameContent) -> Iterator[bytes]:
    """Yield the bytes of ``frame``, little endian and starting on a byte boundary."""
    if frame.swap_unit == 1 and frame.bit_count is None:
        for position, length in frame.ranges:
            yield from read_chunks(handle, position, length)
        return

    # Big endian and bit-packed frames are read one whole frame at a time; both are rare.
    (position, length), *_ = frame.ranges
    if frame.swap_unit > 1:
        data = read_little_endian(
            handle, frame.value_start, position - frame.value_start, length, frame.swap_unit
        )
    else:
        data = b"".join(read_chunks(handle, position, length))
    if frame.bit_count is None:
        yield data
        return
    # DICOM packs bits from the least significant bit of each byte upwards.
    bits = int.from_bytes(data, "little") >> frame.bit_shift
    bits &= (1 << frame.bit_count) - 1
    yield bits.to_bytes(-(-frame.bit_count // 8), "little")
