"""Retrieve Bulkdata: one element value of an instance (PS3.18 10.4.1.1.5).

The BulkDataURIs in the metadata end in ``bulkdata/`` and a path of tags and item
indexes, such as ``7FE00010`` or ``00540016/0/00181072`` (the element (0018,1072) in
item 0 of the sequence (0054,0016)). A value is sent as one
``application/octet-stream`` part in little endian byte order. Encapsulated pixel
data is sent as one part per frame, in the same forms as Retrieve Frames.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from noctis_common.dicom.json_model import BINARY_VRS
from noctis_common.storage import ObjectStore
from noctis_wado.accept import MediaRange, Offer
from noctis_wado.errors import BadRequestError, ResourceNotFoundError
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
) -> MultipartResponse:
    """Return the response that streams the value of the element at ``path``.

    Raises :class:`ResourceNotFoundError` when the element does not exist, and
    :class:`NotAcceptableError` when its value cannot be sent in a media type that the
    Accept header allows.
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
        if value.is_encapsulated:
            offers = frame_offers(value, instance.transfer_syntax_uid)
            offer = select_frame_offer(ranges, offers, resource)
            frames = locate_frames(value_handle(stored, value), value, instance.sop_instance_uid)
            contents = [(f"frame {index + 1}", frame) for index, frame in enumerate(frames)]
        else:
            offer = select_frame_offer(ranges, BULKDATA_OFFERS, resource)
            contents = [(f"bulk data {path.describe()}", whole_value(value))]
    return stream_value_parts(store, instance, value, offer, contents)
