"""UID validation and the object keys derived from UIDs.

A UID (PS3.5 section 9) is at most 64 characters of digits and dots, in components
that are not empty. Only UIDs that pass :func:`validate_uid` become parts of object
keys, so no value can escape its key prefix (no slash, no ``..``) or collide.
"""

from __future__ import annotations

import re
import uuid

UID_MAX_LENGTH = 64
_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")

# Implementation Class UID written into the File Meta Information of stored objects:
# a UUID-derived UID (PS3.5 section B.2) fixed for this implementation.
IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.UUID("6f1c1f5e-2b0e-4f6a-9a51-5d0b4c1e7a3d").int)
IMPLEMENTATION_VERSION_NAME = "NOCTIS_010"


class InvalidUIDError(ValueError):
    """A value that is not a valid DICOM UID."""

    def __init__(self, keyword: str, value: object, reason: str) -> None:
        self.keyword = keyword
        self.value = value
        super().__init__(f"invalid {keyword} {value!r}: {reason}")


def validate_uid(value: object, keyword: str = "UID") -> str:
    """Return ``value`` as a UID string, or raise :class:`InvalidUIDError`.

    Trailing NUL or space padding, which some senders leave in, is removed first.
    """
    if not isinstance(value, str):
        raise InvalidUIDError(keyword, value, "a UID must be a string")
    uid = value.rstrip("\x00 ")
    if not uid:
        raise InvalidUIDError(keyword, value, "the UID is empty")
    if len(uid) > UID_MAX_LENGTH:
        raise InvalidUIDError(
            keyword,
            value,
            f"the UID is {len(uid)} characters long, over the {UID_MAX_LENGTH} allowed",
        )
    if not _UID_PATTERN.fullmatch(uid):
        raise InvalidUIDError(
            keyword, value, "a UID contains only digits in dot-separated, non-empty components"
        )
    return uid


def instance_object_key(
    study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, content_digest: str
) -> str:
    """Return the object key of one stored version of an instance.

    The key ends in a digest of the dataset bytes, so two different objects sent with
    the same SOP Instance UID never share a key and one cannot overwrite the other.
    """
    parts = [
        validate_uid(study_instance_uid, "StudyInstanceUID"),
        validate_uid(series_instance_uid, "SeriesInstanceUID"),
        validate_uid(sop_instance_uid, "SOPInstanceUID"),
    ]
    if not re.fullmatch(r"[0-9a-f]{16,64}", content_digest):
        raise ValueError(f"invalid content digest {content_digest!r}: expected lowercase hex")
    return f"{parts[0]}/{parts[1]}/{parts[2]}.{content_digest[:16]}.dcm"
