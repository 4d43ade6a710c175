"""Storing the received parts through the archive's store pipeline, one result per part."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from starlette.concurrency import run_in_threadpool

from noctis_common.archive import Archive, FailureReason, StoredInstance, StoreFailedError
from noctis_common.uids import InvalidUIDError, validate_uid
from noctis_stow.media_types import DICOM
from noctis_stow.receive import ReceivedPart

logger = logging.getLogger(__name__)

# Implementation-specific Failure Reason (0008,1197) for an instance whose Study Instance
# UID differs from the study in the request URL. PS3.18 table I.2-2 defines no code for
# this, so it lies in the "Cannot understand" range Cxxx. dcm4chee-arc-light uses the
# same value (StoreServiceImpl.DIFF_STUDY_INSTANCE_UID).
STUDY_INSTANCE_UID_MISMATCH = 0xC409

_IDENTIFYING_TAGS = [
    Tag("SOPClassUID"),
    Tag("SOPInstanceUID"),
    Tag("StudyInstanceUID"),
]
# Values longer than this are skipped without being held in memory while the UIDs are
# read. UIDs are at most 64 bytes long, so they are always read.
_SKIPPED_VALUE_BYTES = 1024


@dataclass(frozen=True)
class InstanceUIDs:
    """The UIDs that identify a received instance; empty where they could not be read."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""


@dataclass(frozen=True)
class StoredPart:
    """A part whose instance is stored, or was already stored with the same content."""

    part_number: int
    instance: StoredInstance
    warning_reason: int | None = None


@dataclass(frozen=True)
class FailedPart:
    """A part that was not stored, with the Failure Reason and a message for the sender."""

    part_number: int
    uids: InstanceUIDs
    failure_reason: int
    message: str


@dataclass
class StoreOutcome:
    """The result of every part of one request, in the order of the parts."""

    stored: list[StoredPart] = field(default_factory=list)
    failed: list[FailedPart] = field(default_factory=list)


def _valid_uid_or_empty(value: object, keyword: str) -> str:
    try:
        return validate_uid(str(value), keyword) if value else ""
    except InvalidUIDError:
        return ""


def _element_value(dataset: Dataset | None, keyword: str) -> object:
    """Return the value of ``keyword`` in ``dataset``, or None if it is absent or undecodable."""
    if dataset is None:
        return None
    try:
        return dataset.get(keyword)
    except Exception:  # pydicom raises many types on malformed values
        return None


def read_instance_uids(path: Path) -> InstanceUIDs:
    """Read the identifying UIDs of the instance in the spool file at ``path``.

    Every top-level element is visited, as the store pipeline does, so that a UID
    repeated or placed after Pixel Data reads the same here as in the index. Unreadable
    input gives empty UIDs: the store pipeline then reports why it fails.
    """
    try:
        dataset = dcmread(
            path,
            specific_tags=_IDENTIFYING_TAGS,
            defer_size=_SKIPPED_VALUE_BYTES,
            force=True,
        )
    except Exception:  # pydicom raises many types on corrupt input
        return InstanceUIDs()
    return instance_uids(dataset)


def instance_uids(dataset: Dataset) -> InstanceUIDs:
    """Return the identifying UIDs of ``dataset``, from its File Meta where it lacks them."""
    file_meta = getattr(dataset, "file_meta", None)
    sop_class_uid = _element_value(dataset, "SOPClassUID") or _element_value(
        file_meta, "MediaStorageSOPClassUID"
    )
    sop_instance_uid = _element_value(dataset, "SOPInstanceUID") or _element_value(
        file_meta, "MediaStorageSOPInstanceUID"
    )
    return InstanceUIDs(
        sop_class_uid=_valid_uid_or_empty(sop_class_uid, "SOPClassUID"),
        sop_instance_uid=_valid_uid_or_empty(sop_instance_uid, "SOPInstanceUID"),
        study_instance_uid=_valid_uid_or_empty(
            _element_value(dataset, "StudyInstanceUID"), "StudyInstanceUID"
        ),
    )


class _PartRejectedError(Exception):
    """An error that the inspection raises to reject a part before the archive stores it."""

    def __init__(self, failure: FailedPart) -> None:
        self.failure = failure
        super().__init__(failure.message)


def _check_study(
    part_number: int, uids: InstanceUIDs, study_instance_uid: str | None
) -> FailedPart | None:
    """Return a failure unless the instance belongs to the study in the request URL.

    An instance whose Study Instance UID cannot be read fails too, because storing it
    could put it into another study than the URL names.
    """
    if study_instance_uid is None or uids.study_instance_uid == study_instance_uid:
        return None
    if not uids.study_instance_uid:
        return FailedPart(
            part_number,
            uids,
            FailureReason.CANNOT_UNDERSTAND,
            "the instance has no valid Study Instance UID (0020,000D) to compare with "
            f"the study {study_instance_uid} in the request URL; send instances that "
            "carry their Study Instance UID",
        )
    return FailedPart(
        part_number,
        uids,
        STUDY_INSTANCE_UID_MISMATCH,
        f"the instance's Study Instance UID {uids.study_instance_uid} differs from "
        f"the study {study_instance_uid} in the request URL; send it to "
        "/studies or to its own study",
    )


def store_part(
    archive: Archive, part: ReceivedPart, study_instance_uid: str | None
) -> StoredPart | FailedPart:
    """Store one spooled part and consume its spool file. This blocks, so run it in a thread.

    With ``study_instance_uid`` from the URL, an instance of another study fails with
    :data:`STUDY_INSTANCE_UID_MISMATCH` and is not stored, because every instance sent
    to the Study resource must belong to that study (PS3.18 table 10.5.1-1). An error
    that the store pipeline does not classify fails this part alone with Processing
    failure (0110H), so the other parts of the request keep their results.
    """
    if part.path is None:
        return FailedPart(
            part.number,
            InstanceUIDs(),
            FailureReason.CANNOT_UNDERSTAND,
            f"part {part.number} has media type {part.media_type!r}; only {DICOM} parts "
            "(DICOM Part 10 instances) can be stored",
        )
    path = part.path
    part.path = None
    # The store pipeline parses the file once and hands the dataset to inspect(), which
    # keeps its UIDs for the response and rejects an instance of another study. A second
    # name for the file keeps it readable for the UIDs of a part that fails before that.
    inspected: list[InstanceUIDs] = []
    second_name = path.with_name(path.name + ".second_name")

    def inspect(dataset: Dataset) -> None:
        uids = instance_uids(dataset)
        inspected.append(uids)
        study_failure = _check_study(part.number, uids, study_instance_uid)
        if study_failure is not None:
            raise _PartRejectedError(study_failure)

    def failed_uids() -> InstanceUIDs:
        if inspected:
            return inspected[0]
        return read_instance_uids(second_name) if second_name.exists() else InstanceUIDs()

    # Should the link fail, a part that fails before inspect() is reported without UIDs.
    with contextlib.suppress(OSError):
        os.link(path, second_name)
    try:
        instance = archive.store_part10(path, inspect=inspect)
    except _PartRejectedError as rejected:
        return rejected.failure
    except StoreFailedError as error:
        return FailedPart(part.number, failed_uids(), error.reason, error.message)
    except Exception as error:
        uids = failed_uids()
        logger.exception(
            "storing STOW-RS part %d (SOP Instance UID %s) failed unexpectedly",
            part.number,
            uids.sop_instance_uid or "unknown",
        )
        return FailedPart(
            part.number,
            uids,
            FailureReason.PROCESSING_FAILURE,
            f"storing the instance failed with {type(error).__name__}: {error}; "
            "the server log has the details",
        )
    finally:
        path.unlink(missing_ok=True)
        second_name.unlink(missing_ok=True)
    return StoredPart(part.number, instance)


async def store_parts(
    archive: Archive, parts: list[ReceivedPart], study_instance_uid: str | None
) -> StoreOutcome:
    """Store ``parts`` in order, each in a worker thread so the event loop stays free."""
    outcome = StoreOutcome()
    for part in parts:
        result = await run_in_threadpool(store_part, archive, part, study_instance_uid)
        if isinstance(result, StoredPart):
            outcome.stored.append(result)
        else:
            outcome.failed.append(result)
    return outcome
