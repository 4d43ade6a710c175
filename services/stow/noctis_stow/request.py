"""Checks of a Store request's target and header fields (PS3.18 section 10.5.1).

Every check runs before the body is read, so a request that cannot succeed is rejected
without spooling anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette import status
from starlette.datastructures import Headers

from noctis_common.uids import InvalidUIDError, validate_uid
from noctis_stow.media_types import (
    DICOM,
    MULTIPART_RELATED,
    SUPPORTED_RESPONSE_MEDIA_TYPES,
    MediaTypeError,
    parse_media_type,
    select_response_media_type,
)
from noctis_stow.multipart import MultipartError, validate_boundary

_EXPECTED_CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary=...'


class StowRequestError(Exception):
    """The request as a whole is rejected with ``status_code`` and ``detail``."""

    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True)
class StoreRequest:
    """The target study, boundary and response media type of a valid Store request."""

    study_instance_uid: str | None
    boundary: str
    response_media_type: str


def parse_store_request(
    headers: Headers, study_instance_uid: str | None, max_request_bytes: int
) -> StoreRequest:
    """Check the target study, Accept, Content-Encoding, Content-Type and Content-Length.

    Raises :class:`StowRequestError` with 400, 406, 413 or 415.
    """
    if study_instance_uid is not None:
        try:
            study_instance_uid = validate_uid(study_instance_uid, "StudyInstanceUID")
        except InvalidUIDError as error:
            raise StowRequestError(
                status.HTTP_400_BAD_REQUEST, f"{error}; the URL must name the study by its UID"
            ) from error

    response_media_type = select_response_media_type(headers.get("accept"))
    if response_media_type is None:
        raise StowRequestError(
            status.HTTP_406_NOT_ACCEPTABLE,
            f"none of the media types in Accept {headers.get('accept')!r} is supported; "
            f"accept one of {', '.join(SUPPORTED_RESPONSE_MEDIA_TYPES)}",
        )

    content_encoding = headers.get("content-encoding", "").strip().lower()
    if content_encoding not in ("", "identity"):
        raise StowRequestError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {content_encoding!r} is not supported; send the body "
            "without content coding",
        )

    boundary = _parse_content_type(headers.get("content-type"))
    _check_content_length(headers.get("content-length"), max_request_bytes)
    return StoreRequest(study_instance_uid, boundary, response_media_type)


def _parse_content_type(content_type: str | None) -> str:
    """Return the boundary of a ``multipart/related; type="application/dicom"`` body."""
    if not content_type:
        raise StowRequestError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"the request has no Content-Type; send {_EXPECTED_CONTENT_TYPE}",
        )
    try:
        media_type = parse_media_type(content_type)
    except MediaTypeError as error:
        raise StowRequestError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{error}; send {_EXPECTED_CONTENT_TYPE}"
        ) from error
    if media_type.essence != MULTIPART_RELATED:
        raise StowRequestError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {media_type.essence!r} is not supported; send {_EXPECTED_CONTENT_TYPE}",
        )
    # A missing type parameter is accepted: each part's own Content-Type still decides.
    part_type = media_type.parameters.get("type", DICOM).strip().lower()
    if part_type != DICOM:
        raise StowRequestError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"multipart/related type {part_type!r} is not supported: only DICOM Part 10 "
            f"instances ({DICOM}) can be stored, not the metadata and bulk data forms",
        )
    boundary = media_type.parameters.get("boundary")
    if boundary is None:
        raise StowRequestError(
            status.HTTP_400_BAD_REQUEST,
            f"the Content-Type has no boundary parameter; send {_EXPECTED_CONTENT_TYPE}",
        )
    try:
        return validate_boundary(boundary)
    except MultipartError as error:
        raise StowRequestError(status.HTTP_400_BAD_REQUEST, str(error)) from error


def _check_content_length(content_length: str | None, max_request_bytes: int) -> None:
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError as error:
        raise StowRequestError(
            status.HTTP_400_BAD_REQUEST, f"invalid Content-Length {content_length!r}"
        ) from error
    if length > max_request_bytes:
        raise StowRequestError(
            status.HTTP_413_CONTENT_TOO_LARGE,
            request_too_large_message(max_request_bytes, f"Content-Length is {length} bytes"),
        )


def request_too_large_message(max_request_bytes: int, observed: str) -> str:
    return (
        f"the request body is larger than the maximum of {max_request_bytes} bytes "
        f"({observed}); send fewer instances per request"
    )
