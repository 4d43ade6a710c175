"""WADO-URI: the URI Service's Retrieve transaction (PS3.18 chapter 9).

``GET /wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...`` returns one
instance: as a Part 10 file (``contentType=application/dicom``) in the transfer syntax
that ``transferSyntax`` names (Explicit VR Little Endian by default, PS3.18 9.1.2.3.8),
or rendered as JPEG (the default for images), PNG or GIF. The route sits outside
``/dicom-web``, so its router is included without the DICOMweb prefix.

Not supported: ``anonymize=yes`` and presentation states (``presentationUID``), which
get a 400; ``annotation`` is accepted and ignored, and ``charset`` is accepted and
ignored because responses carry no text.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from noctis_common.auth import require_scope
from noctis_common.auth_restrictions import hide_studies_of_others
from noctis_common.roles import Scope
from noctis_common.web import Context
from noctis_wado.errors import BadRequestError, NotAcceptableError
from noctis_wado.frames import parse_frame_list
from noctis_wado.lookup import StoredInstance, find_instance, validate_url_uid
from noctis_wado.media_types import DICOM, EXPLICIT_VR_LITTLE_ENDIAN, canonical_media_type
from noctis_wado.render import VOIFunction, Window
from noctis_wado.rendered import (
    MAX_VIEWPORT_SIDE,
    RENDERED_MEDIA_TYPES,
    RenderingOptions,
    Viewport,
    has_pixel_data,
    parse_quality,
    render_instance,
)
from noctis_wado.retrieve import check_object_present
from noctis_wado.transcode import instance_offers, transcoded_instance

logger = logging.getLogger(__name__)
# WADO-URI links are opened by browsers, so the token may come as access_token too.
router = APIRouter(
    tags=["WADO-URI"],
    dependencies=[
        Depends(require_scope(Scope.RETRIEVE, query_token=True)),
        Depends(hide_studies_of_others),
    ],
)

WADO_URI_PATH = "/wado"
SUPPORTED_CONTENT_TYPES = (DICOM, *RENDERED_MEDIA_TYPES)
Text = str | None


def _uid(value: str | None, parameter: str, keyword: str) -> str:
    if not value:
        raise BadRequestError(f"the {parameter} parameter is missing; give the {keyword}")
    return validate_url_uid(value, keyword)


def select_content_type(content_type: str | None, is_image: bool) -> str:
    """Return the first supported media type of the ``contentType`` list.

    Without the parameter, images are sent as JPEG and other objects as DICOM
    (PS3.18 9.1.2.3.7).
    """
    if not content_type:
        return RENDERED_MEDIA_TYPES[0] if is_image else DICOM
    for item in content_type.split(","):
        media_type = canonical_media_type(item.split(";")[0])
        if media_type in SUPPORTED_CONTENT_TYPES:
            if media_type != DICOM and not is_image:
                raise NotAcceptableError(
                    f"contentType {media_type} needs an image, and this object has no pixel "
                    "data; request contentType=application/dicom"
                )
            return media_type
    raise NotAcceptableError(
        f"contentType {content_type!r} names no supported media type; use one of "
        f"{', '.join(SUPPORTED_CONTENT_TYPES)}"
    )


def _positive_integer(value: str | None, parameter: str) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= MAX_VIEWPORT_SIDE:
        raise BadRequestError(
            f"invalid {parameter} {value!r}: give an integer from 1 to {MAX_VIEWPORT_SIDE}"
        )
    return int(value)


def parse_frame_number(value: str | None) -> int | None:
    """Parse ``frameNumber``, a frame number from 1."""
    if value is None:
        return None
    numbers = parse_frame_list(value)
    if len(numbers) != 1:
        raise BadRequestError(f"invalid frameNumber {value!r}: give one frame number from 1")
    return numbers[0]


def parse_region(value: str | None) -> tuple[float, float, float, float] | None:
    """Parse ``region=left,top,right,bottom``, fractions of the image from 0.0 to 1.0."""
    if value is None:
        return None
    try:
        numbers = [float(item) for item in value.split(",")]
    except ValueError:
        numbers = []
    if (
        len(numbers) != 4
        or not all(math.isfinite(number) and 0.0 <= number <= 1.0 for number in numbers)
        or numbers[0] >= numbers[2]
        or numbers[1] >= numbers[3]
    ):
        raise BadRequestError(
            f"invalid region {value!r}: give left,top,right,bottom as fractions from 0.0 to "
            "1.0, left below right and top below bottom, such as 0.25,0.25,0.75,0.75"
        )
    left, top, right, bottom = numbers
    return (left, top, right, bottom)


def parse_uri_window(center: str | None, width: str | None) -> Window | None:
    """Parse ``windowCenter`` and ``windowWidth``, which come together (PS3.18 9.1.2.3.10)."""
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise BadRequestError("give windowCenter and windowWidth together, or neither")
    try:
        window = Window(float(center), float(width), VOIFunction.LINEAR)
    except ValueError as error:
        raise BadRequestError(
            f"invalid windowCenter {center!r} or windowWidth {width!r}: {error}"
        ) from error
    if not (math.isfinite(window.center) and math.isfinite(window.width)) or window.width < 1:
        raise BadRequestError(f"invalid windowWidth {width!r}: it must be a number of 1 or more")
    return window


def _dicom_response(
    context: Context, instance: StoredInstance, transfer_syntax: str | None
) -> Response:
    target = transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
    if target == instance.transfer_syntax_uid:
        check_object_present(context.store, instance)
        body = context.store.iter_range(instance.object_key, 0, None)
        return StreamingResponse(body, media_type=DICOM)
    servable = [
        offer.transfer_syntax_uid for offer in instance_offers(instance.transfer_syntax_uid)
    ]
    if target not in servable:
        raise NotAcceptableError(
            f"instance {instance.sop_instance_uid} cannot be sent in transfer syntax {target}; "
            f"request one of {', '.join(str(uid) for uid in dict.fromkeys(servable))}"
        )
    return Response(transcoded_instance(context.store, instance, target), media_type=DICOM)


def _uri_rendering_options(
    *,
    rows: str | None,
    columns: str | None,
    region: str | None,
    window_center: str | None,
    window_width: str | None,
    image_quality: str | None,
) -> RenderingOptions:
    """Return the rendering options of the WADO-URI image parameters (PS3.18 9.1.2.3)."""
    output_rows = _positive_integer(rows, "rows")
    output_columns = _positive_integer(columns, "columns")
    viewport = None
    if output_rows or output_columns:
        # Only one of them given: the other side follows from the aspect ratio.
        viewport = Viewport(output_columns or MAX_VIEWPORT_SIDE, output_rows or MAX_VIEWPORT_SIDE)
    return RenderingOptions(
        window=parse_uri_window(window_center, window_width),
        viewport=viewport,
        quality=parse_quality(image_quality),
        region=parse_region(region),
    )


def _check_supported(
    request_type: str | None, anonymize: str | None, presentation: str | None
) -> None:
    if request_type != "WADO":
        raise BadRequestError(f"requestType must be WADO, not {request_type!r}")
    if anonymize is not None:
        raise BadRequestError("anonymize is not supported; retrieve the object without it")
    if presentation is not None:
        raise BadRequestError(
            "presentationUID is not supported: presentation states are not applied; retrieve "
            "without it"
        )


@router.get(WADO_URI_PATH)
def retrieve_wado_uri_object(
    *,
    request: Request,
    context: Context,
    request_type: Annotated[Text, Query(alias="requestType")] = None,
    study_uid: Annotated[Text, Query(alias="studyUID")] = None,
    series_uid: Annotated[Text, Query(alias="seriesUID")] = None,
    object_uid: Annotated[Text, Query(alias="objectUID")] = None,
    content_type: Annotated[Text, Query(alias="contentType")] = None,
    charset: Annotated[Text, Query()] = None,
    anonymize: Annotated[Text, Query()] = None,
    annotation: Annotated[Text, Query()] = None,
    rows: Annotated[Text, Query()] = None,
    columns: Annotated[Text, Query()] = None,
    region: Annotated[Text, Query()] = None,
    window_center: Annotated[Text, Query(alias="windowCenter")] = None,
    window_width: Annotated[Text, Query(alias="windowWidth")] = None,
    frame_number: Annotated[Text, Query(alias="frameNumber")] = None,
    image_quality: Annotated[Text, Query(alias="imageQuality")] = None,
    presentation_uid: Annotated[Text, Query(alias="presentationUID")] = None,
    transfer_syntax: Annotated[Text, Query(alias="transferSyntax")] = None,
) -> Response:
    """Retrieve one object through WADO-URI (PS3.18 9.1 and 9.2)."""
    _check_supported(request_type, anonymize, presentation_uid)
    instance = find_instance(
        context.database,
        _uid(study_uid, "studyUID", "StudyInstanceUID"),
        _uid(series_uid, "seriesUID", "SeriesInstanceUID"),
        _uid(object_uid, "objectUID", "SOPInstanceUID"),
    )

    media_type = select_content_type(content_type, has_pixel_data(context.database, instance))
    client = request.client.host if request.client else "unknown client"
    logger.info(
        "WADO-URI retrieve of %s as %s to %s", instance.sop_instance_uid, media_type, client
    )

    rendering = (rows, columns, region, window_center, window_width, frame_number, image_quality)
    if media_type == DICOM:
        if any(value is not None for value in rendering):
            raise BadRequestError(
                "rows, columns, region, windowCenter, windowWidth, frameNumber and "
                "imageQuality apply to rendered images only; drop them or request an image "
                "contentType"
            )
        return _dicom_response(context, instance, transfer_syntax)
    if transfer_syntax is not None:
        raise BadRequestError("transferSyntax applies only to contentType=application/dicom")

    options = _uri_rendering_options(
        rows=rows,
        columns=columns,
        region=region,
        window_center=window_center,
        window_width=window_width,
        image_quality=image_quality,
    )
    frame = parse_frame_number(frame_number)
    content = render_instance(context.store, instance, media_type, options, frame)
    return Response(content, media_type=media_type)
