"""Retrieve Study, Series and Instance: stored Part 10 objects (PS3.18 table 10.4.1-1).

Each part is the stored Part 10 file: the File Meta Information that the archive
wrote, then the dataset bytes exactly as they were received, in the stored transfer
syntax. Objects are streamed from the object store in chunks, so a study is never
held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from noctis_common.storage import ObjectNotFoundError, ObjectStore, StorageError
from noctis_wado.accept import MediaRange, Offer, describe_offers, select_offer
from noctis_wado.errors import NotAcceptableError, ResponseAbortedError, StoredObjectError
from noctis_wado.lookup import StoredInstance
from noctis_wado.media_types import DICOM
from noctis_wado.multipart import (
    MultipartResponse,
    frame_multipart,
    multipart_content_type,
    new_boundary,
    part_content_type,
)


def dicom_offer(transfer_syntax_uid: str) -> Offer:
    """Return the offer of an object in its stored transfer syntax."""
    # NOTE: without transcoding, objects stored in Implicit VR Little Endian or Explicit
    # VR Big Endian are sent in those syntaxes, which PS3.18 8.7.3 rules out for web
    # services.
    return Offer(DICOM, transfer_syntax_uid)


def check_instances_acceptable(
    ranges: Sequence[MediaRange], instances: Sequence[StoredInstance], resource: str
) -> None:
    """Raise :class:`NotAcceptableError` unless every instance is acceptable as stored."""
    offers = [dicom_offer(uid) for uid in dict.fromkeys(i.transfer_syntax_uid for i in instances)]
    rejected = [offer for offer in offers if select_offer(ranges, [offer]) is None]
    if rejected:
        raise NotAcceptableError(
            "the Accept header does not allow transfer syntax "
            f"{', '.join(str(offer.transfer_syntax_uid) for offer in rejected)} of {resource}, "
            f"and transcoding is not supported; request {describe_offers(offers)} or "
            "transfer-syntax=*"
        )


def _stream_object(store: ObjectStore, instance: StoredInstance) -> Iterator[bytes]:
    try:
        yield from store.iter_range(instance.object_key, 0, None)
    except (ObjectNotFoundError, StorageError) as error:
        raise ResponseAbortedError(
            f"reading stored object {instance.object_key} of instance "
            f"{instance.sop_instance_uid} failed, so the response was cut off: {error}"
        ) from error


def check_object_present(store: ObjectStore, instance: StoredInstance) -> None:
    """Raise :class:`StoredObjectError` unless the stored object of ``instance`` is present."""
    try:
        store.size(instance.object_key)
    except ObjectNotFoundError as error:
        raise StoredObjectError(
            f"the stored object of instance {instance.sop_instance_uid} "
            f"({instance.object_key}) is missing from the object store, although the index "
            "lists it; restore the object or delete the instance"
        ) from error
    except StorageError as error:
        raise StoredObjectError(
            f"reading the stored object of instance {instance.sop_instance_uid} "
            f"({instance.object_key}) failed: {error}; retry later",
            unavailable=True,
        ) from error


def instances_response(
    store: ObjectStore, instances: Sequence[StoredInstance]
) -> MultipartResponse:
    """Return the multipart response that streams ``instances`` in their stored syntax.

    The first object is checked before the response starts, so a missing object of a
    single instance gets a 500 (or a 503 when the store fails). The others are read
    only while the body is sent, and a missing one cuts the body off before its close
    delimiter, because checking every object first would cost one store request each.
    """
    check_object_present(store, instances[0])
    boundary = new_boundary()
    syntaxes = {instance.transfer_syntax_uid for instance in instances}
    uniform_syntax = next(iter(syntaxes)) if len(syntaxes) == 1 else None
    parts = (
        (part_content_type(DICOM, instance.transfer_syntax_uid), _stream_object(store, instance))
        for instance in instances
    )
    return MultipartResponse(
        content_type=multipart_content_type(DICOM, boundary, uniform_syntax),
        part_type=part_content_type(DICOM, uniform_syntax) if uniform_syntax else None,
        body=frame_multipart(boundary, parts),
    )
