"""Retrieve Bulkdata: one element value of an instance (PS3.18 10.4.1.1.5).

The BulkDataURIs in the metadata end in ``bulkdata/`` and a path of tags and item
indexes, such as ``7FE00010`` or ``00540016/0/00181072`` (the element (0018,1072) in
item 0 of the sequence (0054,0016)). A value is sent as one
``application/octet-stream`` part in little endian byte order. Encapsulated pixel
data is sent as one part per frame, in the same forms as Retrieve Frames.

A ``Range: bytes=first-last`` header (RFC 9110 section 14.2, one range) selects part of
a value that is sent as one part. The response is then 206 with Content-Range.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from noctis_common.dicom.json_model import BINARY_VRS
from noctis_common.storage import ObjectStore
from noctis_wado.accept import MediaRange, Offer
from noctis_wado.errors import BadRequestError, RangeNotSatisfiableError, ResourceNotFoundError
from noctis_wado.frames import frame_offers, select_frame_offer, stream_value_parts, value_handle
from noctis_wado.lookup import StoredInstance
from noctis_wado.media_types import EXPLICIT_VR_LITTLE_ENDIAN, OCTET_STREAM
from noctis_wado.multipart import MultipartResponse
from noctis_wado.pixel_data import FrameContent, locate_frames, whole_value
from noctis_wado.stored_values import ElementPath, locate_element, open_stored_dataset

_TAG_PATTERN = re.compile(r"[0-9A-Fa-f]{8}")
# ASCII digits only, because str.isdigit() also accepts digits such as '²' that int()
# cannot read. Ten digits bound the work of int() and exceed any real item count.
_ITEM_INDEX_PATTERN = re.compile(r"[0-9]{1,10}")
BULKDATA_OFFERS = (Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN),)
_BYTE_RANGE_PATTERN = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


@dataclass(frozen=True)
class ByteRange:
    """A byte range of a value: ``first`` and ``last`` are inclusive offsets."""

    first: int
    last: int
    value_length: int

    @property
    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.value_length}"


def parse_byte_range(header: str | None, value_length: int) -> ByteRange | None:
    """Return the range that a ``Range`` header requests, or None for the whole value.

    Several ranges, or units other than bytes, are ignored as RFC 9110 allows: the
    whole value is sent. Raises :class:`RangeNotSatisfiableError` for a range that
    starts past the end of the value.
    """
    if header is None:
        return None
    match = _BYTE_RANGE_PATTERN.fullmatch(header.replace(" ", ""))
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first_text, last_text = match.groups()
    if first_text:
        first = int(first_text)
        last = min(int(last_text), value_length - 1) if last_text else value_length - 1
        if last_text and int(last_text) < first:
            return None  # an invalid range is ignored (RFC 9110 section 14.2)
    else:
        first = max(value_length - int(last_text), 0)
        last = value_length - 1
    if first >= value_length:
        raise RangeNotSatisfiableError(
            f"the range {header!r} starts past the end of the {value_length}-byte value",
            value_length,
        )
    return ByteRange(first, last, value_length)


def parse_bulkdata_path(tag_path: str) -> ElementPath:
    """Parse the part of a BulkDataURI after ``bulkdata/`` into an :class:`ElementPath`.

    Raises :class:`BadRequestError` unless the path alternates 8-digit hexadecimal tags
    and item indexes and ends with a tag.
    """
    steps = tag_path.strip("/").split("/")
    tags = steps[0::2]
    indexes = steps[1::2]
    if (
        len(steps) % 2 == 0
        or not all(_TAG_PATTERN.fullmatch(tag) for tag in tags)
        or not all(_ITEM_INDEX_PATTERN.fullmatch(index) for index in indexes)
    ):
        raise BadRequestError(
            f"invalid bulk data path {tag_path!r}: expected 8-digit hexadecimal tags "
            "separated by item indexes, such as 7FE00010 or 00540016/0/00181072; take "
            "the path from a BulkDataURI in the instance's metadata"
        )
    items = tuple((int(tag, 16), int(index)) for tag, index in zip(tags, indexes, strict=False))
    return ElementPath(items, int(tags[-1], 16))


def bulkdata_response(
    store: ObjectStore,
    instance: StoredInstance,
    path: ElementPath,
    ranges: Sequence[MediaRange],
    range_header: str | None = None,
) -> tuple[MultipartResponse, ByteRange | None]:
    """Return the response that streams the value of the element at ``path``.

    Raises :class:`ResourceNotFoundError` when the element does not exist, and
    :class:`NotAcceptableError` when its value cannot be sent in a media type that the
    Accept header allows. The byte range that ``range_header`` selected is returned
    with the response; it is None when the whole value is sent.
    """
    resource = f"bulk data {path.describe()} of instance {instance.sop_instance_uid}"
    with open_stored_dataset(store, instance) as stored:
        value = locate_element(stored, path)
        if not value.is_pixel_data and value.vr not in BINARY_VRS:
            raise ResourceNotFoundError(
                f"element {path.describe()} of instance {instance.sop_instance_uid} has VR "
                f"{value.vr}, which is not bulk data; its value is in the metadata"
            )
        contents: list[tuple[str, FrameContent]]
        byte_range = None
        if value.is_encapsulated:
            offers = frame_offers(value, instance.transfer_syntax_uid)
            offer = select_frame_offer(ranges, offers, resource)
            frames = locate_frames(value_handle(stored, value), value, instance.sop_instance_uid)
            contents = [(f"frame {index + 1}", frame) for index, frame in enumerate(frames)]
        else:
            offer = select_frame_offer(ranges, BULKDATA_OFFERS, resource)
            content = whole_value(value)
            # Byte-swapped and bit-packed values are converted while read. A range of them
            # is not a plain slice of the stored bytes, so they are sent whole.
            if content.swap_unit == 1 and content.bit_count is None:
                byte_range = parse_byte_range(range_header, value.length or 0)
            if byte_range is not None:
                content = FrameContent(
                    ranges=(
                        (value.start + byte_range.first, byte_range.last - byte_range.first + 1),
                    ),
                    value_start=value.start,
                )
            contents = [(f"bulk data {path.describe()}", content)]
    return stream_value_parts(store, instance, value, offer, contents), byte_range
