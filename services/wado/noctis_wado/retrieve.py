"""Retrieve Study, Series and Instance: stored Part 10 objects (PS3.18 table 10.4.1-1).

Each part is the stored Part 10 file: the File Meta Information that the archive
wrote, then the dataset bytes exactly as they were received, in the stored transfer
syntax. Objects are streamed from the object store in chunks, so a study is never
held in memory. An instance that the client asks for in another transfer syntax, or
that is stored in a syntax that PS3.18 8.7.3 rules out, is transcoded in memory
(see :mod:`noctis_wado.transcode`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from noctis_common.metrics import STORAGE_ERRORS
from noctis_common.storage import ObjectNotFoundError, ObjectStore, StorageError
from noctis_wado.accept import MediaRange, describe_offers, select_offer
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
from noctis_wado.transcode import instance_offers, transcoded_instance


def select_instance_targets(
    ranges: Sequence[MediaRange], instances: Sequence[StoredInstance], resource: str
) -> dict[str, str]:
    """Return the transfer syntax to send for each stored transfer syntax of ``instances``.

    Raises :class:`NotAcceptableError` when the Accept header allows no form of some
    stored syntax, naming the forms that can be sent.
    """
    targets: dict[str, str] = {}
    for stored_syntax in dict.fromkeys(i.transfer_syntax_uid for i in instances):
        offers = instance_offers(stored_syntax)
        offer = select_offer(ranges, offers)
        if offer is None or offer.transfer_syntax_uid is None:
            raise NotAcceptableError(
                f"the Accept header allows no transfer syntax in which {resource} can be "
                f"sent (stored syntax {stored_syntax}); request one of "
                f"{describe_offers(offers)} or transfer-syntax=*"
            )
        targets[stored_syntax] = offer.transfer_syntax_uid
    return targets


def _stream_object(store: ObjectStore, instance: StoredInstance) -> Iterator[bytes]:
    try:
        yield from store.iter_range(instance.object_key, 0, None)
    except (ObjectNotFoundError, StorageError) as error:
        if isinstance(error, StorageError):
            STORAGE_ERRORS.labels(operation="read").inc()
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
        STORAGE_ERRORS.labels(operation="read").inc()
        raise StoredObjectError(
            f"reading the stored object of instance {instance.sop_instance_uid} "
            f"({instance.object_key}) failed: {error}; retry later",
            unavailable=True,
        ) from error


def _transcoded_object(
    store: ObjectStore, instance: StoredInstance, target: str
) -> Iterator[bytes]:
    try:
        yield transcoded_instance(store, instance, target)
    except (NotAcceptableError, StoredObjectError) as error:
        raise ResponseAbortedError(
            f"transcoding instance {instance.sop_instance_uid} to {target} failed, so the "
            f"response was cut off: {error.detail}"
        ) from error


def instances_response(
    store: ObjectStore, instances: Sequence[StoredInstance], targets: dict[str, str]
) -> MultipartResponse:
    """Return the multipart response that sends each instance in its target syntax.

    Instances whose target is their stored syntax are streamed from the object store.
    The others are transcoded in memory one at a time while the body is sent, except a
    single instance, which is transcoded first so that a failure gets a 406.

    The first object is checked before the response starts, so a missing object of a
    single instance gets a 500 (or a 503 when the store fails). The others are read
    only while the body is sent, and a missing one cuts the body off before its close
    delimiter, because checking every object first would cost one store request each.
    """
    check_object_present(store, instances[0])
    boundary = new_boundary()

    def target_of(instance: StoredInstance) -> str:
        return targets.get(instance.transfer_syntax_uid, instance.transfer_syntax_uid)

    def content(instance: StoredInstance) -> Iterator[bytes]:
        target = target_of(instance)
        if target == instance.transfer_syntax_uid:
            return _stream_object(store, instance)
        return _transcoded_object(store, instance, target)

    first_target = target_of(instances[0])
    if len(instances) == 1 and first_target != instances[0].transfer_syntax_uid:
        single = transcoded_instance(store, instances[0], first_target)
        parts: Iterator[tuple[str, Iterable[bytes]]] = iter(
            [(part_content_type(DICOM, first_target), [single])]
        )
    else:
        parts = (
            (part_content_type(DICOM, target_of(instance)), content(instance))
            for instance in instances
        )
    syntaxes = {target_of(instance) for instance in instances}
    uniform_syntax = next(iter(syntaxes)) if len(syntaxes) == 1 else None
    return MultipartResponse(
        content_type=multipart_content_type(DICOM, boundary, uniform_syntax),
        part_type=part_content_type(DICOM, uniform_syntax) if uniform_syntax else None,
        body=frame_multipart(boundary, parts),
    )
