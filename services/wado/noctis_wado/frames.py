"""Retrieve Frames: selected frames of an instance's pixel data (PS3.18 10.4.1.1.6).

Frames are sent as stored, one part per frame in the order requested. Native frames
are ``application/octet-stream`` in little endian byte order. Compressed frames are
the frame's bitstream in the media type of their transfer syntax (PS3.18 table
8.7.3-5), or ``application/octet-stream`` with the stored transfer syntax named when
the client asks for that. Frames asked for in another form are decoded or transcoded
in memory (see :mod:`noctis_wado.transcode`).

Frames of instances with a ``frame_index`` row (see
:mod:`noctis_common.dicom.frame_index`) are read by position, without parsing the
stored object; instances stored before the index existed are parsed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO

from noctis_common.db import Database
from noctis_common.dicom.frame_index import (
    FrameLayout,
    load_frame_layout,
    read_frame_layout,
    save_frame_layout,
)
from noctis_common.metrics import STORAGE_ERRORS
from noctis_common.storage import ObjectStore, StorageError
from noctis_wado.accept import MediaRange, Offer, describe_offers, select_offer
from noctis_wado.errors import (
    BadRequestError,
    NotAcceptableError,
    ResourceNotFoundError,
    ResponseAbortedError,
    StoredObjectError,
)
from noctis_wado.lookup import StoredInstance
from noctis_wado.media_types import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    compressed_media_type,
)
from noctis_wado.multipart import (
    MultipartResponse,
    frame_multipart,
    multipart_content_type,
    new_boundary,
    part_content_type,
)
from noctis_wado.pixel_data import FrameContent, iter_frame, locate_frames, number_of_frames
from noctis_wado.stored_values import (
    ElementPath,
    ElementValue,
    StoredDataset,
    locate_element,
    open_object,
    open_stored_dataset,
    open_value,
)
from noctis_wado.transcode import frame_transcode_offers, transcoded_frames

# Number of Frames (0028,0008) is an IS value, so it is at most 2**31 - 1.
MAX_FRAME_NUMBER = 2**31 - 1
# ASCII digits only, because str.isdigit() also accepts digits such as '²' that int()
# cannot read.
_FRAME_NUMBER_PATTERN = re.compile(r"[0-9]+")

PIXEL_DATA_PATHS = (
    ElementPath((), 0x7FE00010),  # Pixel Data
    ElementPath((), 0x7FE00008),  # Float Pixel Data
    ElementPath((), 0x7FE00009),  # Double Float Pixel Data
)


def parse_frame_list(frame_list: str) -> list[int]:
    """Return the 1-based frame numbers of a comma-separated list such as ``1,3``.

    Raises :class:`BadRequestError` for an empty entry, a non-number, 0, a number over
    :data:`MAX_FRAME_NUMBER` or a number listed twice.
    """
    numbers: list[int] = []
    seen: set[int] = set()
    for entry in frame_list.split(","):
        text = entry.strip()
        if not _FRAME_NUMBER_PATTERN.fullmatch(text):
            raise BadRequestError(
                f"invalid frame list {frame_list!r}: {text!r} is not a frame number; list "
                "frame numbers from 1, separated by commas, such as 1,3"
            )
        digits = text.lstrip("0") or "0"
        # The length check comes first: int() refuses strings of over 4300 digits.
        if len(digits) > len(str(MAX_FRAME_NUMBER)) or int(digits) > MAX_FRAME_NUMBER:
            raise BadRequestError(
                f"invalid frame list {frame_list!r}: frame {text} is over the maximum frame "
                f"number {MAX_FRAME_NUMBER}"
            )
        number = int(digits)
        if number == 0:
            raise BadRequestError(
                f"invalid frame list {frame_list!r}: frame numbers start at 1, not 0"
            )
        if number in seen:
            raise BadRequestError(
                f"invalid frame list {frame_list!r}: frame {number} is listed twice"
            )
        seen.add(number)
        numbers.append(number)
    return numbers


def frame_offers(value: ElementValue, transfer_syntax_uid: str) -> list[Offer]:
    """Return the forms in which the frames of ``value`` can be sent without transcoding."""
    return _stored_frame_offers(value.is_encapsulated, transfer_syntax_uid)


def _stored_frame_offers(encapsulated: bool, transfer_syntax_uid: str) -> list[Offer]:
    if not encapsulated:
        return [Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)]
    offers = []
    media_type = compressed_media_type(transfer_syntax_uid)
    if media_type is not None:
        offers.append(Offer(media_type, transfer_syntax_uid))
    # application/octet-stream without a transfer-syntax parameter means uncompressed
    # frames, so it selects the compressed bitstream only with transfer-syntax given.
    offers.append(Offer(OCTET_STREAM, transfer_syntax_uid, default_transfer_syntax=False))
    return offers


def select_frame_offer(
    ranges: Sequence[MediaRange], offers: Sequence[Offer], resource: str
) -> Offer:
    """Return the offer that the Accept header selects, or raise :class:`NotAcceptableError`."""
    offer = select_offer(ranges, offers)
    if offer is None:
        raise NotAcceptableError(
            f"{resource} cannot be sent in any media type that the Accept header allows; "
            f"request {describe_offers(offers)}"
        )
    return offer


def pixel_data_value(stored: StoredDataset) -> ElementValue:
    """Return the Pixel Data, Float Pixel Data or Double Float Pixel Data of an instance."""
    for path in PIXEL_DATA_PATHS:
        if path.tag in stored.dataset:
            return locate_element(stored, path)
    raise ResourceNotFoundError(
        f"instance {stored.instance.sop_instance_uid} has no pixel data, so it has no frames"
    )


def value_handle(stored: StoredDataset, value: ElementValue) -> BinaryIO:
    """Return a handle to read ``value`` from while ``stored`` is open."""
    return stored.handle if value.data is None else io.BytesIO(value.data)


def _read_part(
    handle: BinaryIO, content: FrameContent, instance: StoredInstance, part: str
) -> Iterator[bytes]:
    try:
        yield from iter_frame(handle, content)
    except (EOFError, OSError) as error:
        raise ResponseAbortedError(
            f"reading {part} of instance {instance.sop_instance_uid} from "
            f"{instance.object_key} failed, so the response was cut off: {error}"
        ) from error


def stream_value_parts(
    store: ObjectStore,
    instance: StoredInstance,
    value: ElementValue,
    offer: Offer,
    contents: Sequence[tuple[str, FrameContent]],
) -> MultipartResponse:
    """Return a multipart response with one part per ``(description, content)`` of ``value``."""
    return _stream_parts(lambda: open_value(store, instance, value), instance, offer, contents)


def _stream_parts(
    open_source: Callable[[], AbstractContextManager[BinaryIO]],
    instance: StoredInstance,
    offer: Offer,
    contents: Sequence[tuple[str, FrameContent]],
) -> MultipartResponse:
    boundary = new_boundary()
    content_type = part_content_type(offer.media_type, offer.transfer_syntax_uid)

    def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
        try:
            with open_source() as handle:
                for description, content in contents:
                    yield content_type, _read_part(handle, content, instance, description)
        except (StoredObjectError, StorageError) as error:
            if isinstance(error, StorageError):
                STORAGE_ERRORS.labels(operation="read").inc()
            raise ResponseAbortedError(
                f"opening {instance.object_key} of instance {instance.sop_instance_uid} "
                f"failed, so the response was cut off: {error}"
            ) from error

    return MultipartResponse(
        content_type=multipart_content_type(offer.media_type, boundary, offer.transfer_syntax_uid),
        part_type=content_type,
        body=frame_multipart(boundary, parts()),
    )


def _transcoded_frames_response(
    store: ObjectStore, instance: StoredInstance, frame_numbers: Sequence[int], offer: Offer
) -> MultipartResponse:
    """Return the frames decoded, or encoded in the syntax of ``offer``, built in memory."""
    target = offer.transfer_syntax_uid or EXPLICIT_VR_LITTLE_ENDIAN
    frames = transcoded_frames(store, instance, frame_numbers, target)
    boundary = new_boundary()
    # Decoded frames are labelled Explicit VR Little Endian, like native frames.
    content_type = part_content_type(offer.media_type, target)
    return MultipartResponse(
        content_type=multipart_content_type(offer.media_type, boundary, target),
        part_type=content_type,
        body=frame_multipart(boundary, ((content_type, [frame]) for frame in frames)),
    )


def _check_frame_numbers(
    instance: StoredInstance, frame_numbers: Sequence[int], frame_count: int
) -> None:
    for number in frame_numbers:
        if number > frame_count:
            raise ResourceNotFoundError(
                f"frame {number} is out of range: instance {instance.sop_instance_uid} "
                f"has {frame_count} frame{'s' if frame_count != 1 else ''}, numbered "
                "from 1"
            )


def _frames_resource(instance: StoredInstance) -> str:
    return (
        f"frames of instance {instance.sop_instance_uid} (transfer syntax "
        f"{instance.transfer_syntax_uid})"
    )


def indexed_frames_response(
    store: ObjectStore,
    instance: StoredInstance,
    frame_numbers: Sequence[int],
    ranges: Sequence[MediaRange],
    layout: FrameLayout,
) -> MultipartResponse:
    """Return the response that streams frames located by the instance's frame index.

    The index covers Pixel Data (7FE0,0010) only, so the transcoded forms are offered
    as in :func:`frames_response`, which this mirrors without parsing the object.
    """
    stored_offers = _stored_frame_offers(layout.is_encapsulated, instance.transfer_syntax_uid)
    offers = stored_offers + frame_transcode_offers(
        instance.transfer_syntax_uid, layout.is_encapsulated
    )
    offer = select_frame_offer(ranges, offers, _frames_resource(instance))
    _check_frame_numbers(instance, frame_numbers, layout.number_of_frames)
    if offer not in stored_offers:
        return _transcoded_frames_response(store, instance, frame_numbers, offer)
    contents = [
        (f"frame {number}", FrameContent(ranges=(layout.frame_range(number),)))
        for number in frame_numbers
    ]
    return _stream_parts(lambda: open_object(store, instance), instance, offer, contents)


def _fill_frame_index(database: Database, instance: StoredInstance, handle: BinaryIO) -> None:
    # NOTE: a layout that is not indexed (frames of several fragments, say) is looked
    # for again on every request, which costs one more parse of the element headers.
    layout = read_frame_layout(handle, instance.transfer_syntax_uid)
    if layout is not None:
        save_frame_layout(database, instance.id, layout)


def frames_response(
    store: ObjectStore,
    instance: StoredInstance,
    frame_numbers: Sequence[int],
    ranges: Sequence[MediaRange],
    database: Database | None = None,
) -> MultipartResponse:
    """Return the response that streams the requested frames of ``instance``.

    With ``database``, the frames are read by position when the instance has a frame
    index row. Otherwise the stored object is parsed to locate them, and the row is
    written then, so that later requests for an instance stored before the index find it.

    Raises :class:`ResourceNotFoundError` for an instance without pixel data or a frame
    number above Number of Frames, and :class:`NotAcceptableError` when the frames
    cannot be sent in a media type that the Accept header allows.
    """
    layout = None if database is None else load_frame_layout(database, instance.id)
    if layout is not None:
        return indexed_frames_response(store, instance, frame_numbers, ranges, layout)
    with open_stored_dataset(store, instance) as stored:
        value = pixel_data_value(stored)
        stored_offers = frame_offers(value, instance.transfer_syntax_uid)
        offers = list(stored_offers)
        if value.tag == PIXEL_DATA_PATHS[0].tag:
            offers += frame_transcode_offers(instance.transfer_syntax_uid, value.is_encapsulated)
        offer = select_frame_offer(ranges, offers, _frames_resource(instance))
        frame_count = number_of_frames(value.container)
        _check_frame_numbers(instance, frame_numbers, frame_count)
        if database is not None and stored.values_in_object:
            _fill_frame_index(database, instance, stored.handle)
        if offer not in stored_offers:
            return _transcoded_frames_response(store, instance, frame_numbers, offer)
        frames = locate_frames(
            value_handle(stored, value),
            value,
            instance.sop_instance_uid,
            up_to=max(frame_numbers),
        )
    if max(frame_numbers) > len(frames):
        raise StoredObjectError(
            f"the pixel data of instance {instance.sop_instance_uid} contains {len(frames)} "
            f"complete frames, fewer than its Number of Frames {frame_count}; the stored "
            "object is truncated or corrupt"
        )
    contents = [(f"frame {number}", frames[number - 1]) for number in frame_numbers]
    return stream_value_parts(store, instance, value, offer, contents)
