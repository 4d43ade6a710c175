"""WADO-RS: the Retrieve transaction of the Studies Service (PS3.18 10.4).

Every route of the service is registered here. A handler parses the URL and the
Accept header, queries the index, then renders a streamed response. Each of these
steps is a function in its own module. Handlers are plain functions, so FastAPI runs their
blocking index and object store reads in its thread pool.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from noctis_common.auth import require_scope
from noctis_common.auth_restrictions import hide_studies_of_others
from noctis_common.roles import Scope
from noctis_common.web import Context, dicomweb_base_url
from noctis_wado.accept import parse_accept
from noctis_wado.bulkdata import bulkdata_response, parse_bulkdata_path
from noctis_wado.errors import BadRequestError
from noctis_wado.frames import frames_response, parse_frame_list
from noctis_wado.lookup import (
    StoredInstance,
    find_instance,
    find_series_instances,
    find_study_instances,
    validate_url_uid,
)
from noctis_wado.media_types import DICOM_JSON
from noctis_wado.metadata import (
    cached_metadata_response,
    check_metadata_acceptable,
    find_series_revisions,
    stream_metadata,
)
from noctis_wado.multipart import MultipartResponse
from noctis_wado.rendered import (
    RenderingOptions,
    image_instances,
    parse_rendering_options,
    render_instance,
    rendered_instances_response,
    select_rendered_type,
    thumbnail_options,
)
from noctis_wado.retrieve import instances_response, select_instance_targets

logger = logging.getLogger(__name__)
# Browsers open rendered images and thumbnails as plain links, which cannot carry an
# Authorization header, so the token may also come as the access_token parameter.
router = APIRouter(
    tags=["WADO-RS"],
    dependencies=[
        Depends(require_scope(Scope.RETRIEVE, query_token=True)),
        Depends(hide_studies_of_others),
    ],
)

AcceptHeader = Annotated[str | None, Header()]
IfNoneMatchHeader = Annotated[str | None, Header()]
AcceptEncodingHeader = Annotated[str | None, Header()]
QueryText = Annotated[str | None, Query()]
AcceptQuery = Annotated[str | None, Query(alias="accept")]
INSTANCE_PATH = (
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances/{sop_instance_uid}"
)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown client"


def _streaming(response: MultipartResponse) -> StreamingResponse:
    return StreamingResponse(response.body, media_type=response.content_type)


def _find_instance(
    context: Context, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
) -> StoredInstance:
    return find_instance(
        context.database,
        validate_url_uid(study_instance_uid, "StudyInstanceUID"),
        validate_url_uid(series_instance_uid, "SeriesInstanceUID"),
        validate_url_uid(sop_instance_uid, "SOPInstanceUID"),
    )


def _metadata_response(
    request: Request, context: Context, instances: list[StoredInstance]
) -> StreamingResponse:
    base_url = dicomweb_base_url(request, context.settings)
    return StreamingResponse(
        stream_metadata(context.database, instances, base_url), media_type=DICOM_JSON
    )


@router.get("/studies/{study_instance_uid}")
def retrieve_study(
    *, study_instance_uid: str, request: Request, context: Context, accept: AcceptHeader = None
) -> StreamingResponse:
    """Retrieve Study: every instance of the study as stored (PS3.18 10.4, table 10.4.1-1)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    ranges = parse_accept(accept)
    instances = find_study_instances(context.database, study)
    targets = select_instance_targets(ranges, instances, f"study {study}")
    logger.info("retrieve study %s: %d instances to %s", study, len(instances), _client(request))
    return _streaming(instances_response(context.store, instances, targets))


@router.get("/studies/{study_instance_uid}/series/{series_instance_uid}")
def retrieve_series(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    """Retrieve Series: every instance of the series as stored (PS3.18 10.4, table 10.4.1-1)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    series = validate_url_uid(series_instance_uid, "SeriesInstanceUID")
    ranges = parse_accept(accept)
    instances = find_series_instances(context.database, study, series)
    targets = select_instance_targets(ranges, instances, f"series {series}")
    logger.info("retrieve series %s: %d instances to %s", series, len(instances), _client(request))
    return _streaming(instances_response(context.store, instances, targets))


@router.get(INSTANCE_PATH)
def retrieve_instance(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    """Retrieve Instance: one instance as stored (PS3.18 10.4, table 10.4.1-1)."""
    ranges = parse_accept(accept)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    targets = select_instance_targets(ranges, [instance], f"instance {instance.sop_instance_uid}")
    logger.info("retrieve instance %s to %s", instance.sop_instance_uid, _client(request))
    return _streaming(instances_response(context.store, [instance], targets))


@router.get("/studies/{study_instance_uid}/metadata")
def retrieve_study_metadata(
    *,
    study_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    if_none_match: IfNoneMatchHeader = None,
    accept_encoding: AcceptEncodingHeader = None,
) -> Response:
    """Retrieve Study Metadata as DICOM JSON (PS3.18 10.4, table 10.4.1-2).

    Served from the per-series metadata cache, with an ETag and gzip when accepted.
    """
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    check_metadata_acceptable(parse_accept(accept))
    series = find_series_revisions(context.database, study)
    logger.info(
        "retrieve metadata of study %s: %d series to %s", study, len(series), _client(request)
    )
    return cached_metadata_response(
        context.database,
        study,
        series,
        dicomweb_base_url(request, context.settings),
        if_none_match=if_none_match,
        accept_encoding=accept_encoding,
    )


@router.get("/studies/{study_instance_uid}/series/{series_instance_uid}/metadata")
def retrieve_series_metadata(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    if_none_match: IfNoneMatchHeader = None,
    accept_encoding: AcceptEncodingHeader = None,
) -> Response:
    """Retrieve Series Metadata as DICOM JSON (PS3.18 10.4, table 10.4.1-2).

    Served from the per-series metadata cache, with an ETag and gzip when accepted.
    """
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    series = validate_url_uid(series_instance_uid, "SeriesInstanceUID")
    check_metadata_acceptable(parse_accept(accept))
    revisions = find_series_revisions(context.database, study, series)
    logger.info("retrieve metadata of series %s to %s", series, _client(request))
    return cached_metadata_response(
        context.database,
        study,
        revisions,
        dicomweb_base_url(request, context.settings),
        if_none_match=if_none_match,
        accept_encoding=accept_encoding,
    )


@router.get(INSTANCE_PATH + "/metadata")
def retrieve_instance_metadata(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    """Retrieve Instance Metadata as DICOM JSON (PS3.18 10.4, table 10.4.1-2)."""
    check_metadata_acceptable(parse_accept(accept))
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    logger.info(
        "retrieve metadata of instance %s to %s", instance.sop_instance_uid, _client(request)
    )
    return _metadata_response(request, context, [instance])


@router.get(INSTANCE_PATH + "/frames/{frame_list}")
def retrieve_instance_frames(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    frame_list: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    """Retrieve Frames of an instance's pixel data, as stored (PS3.18 10.4.1.1.6)."""
    frame_numbers = parse_frame_list(frame_list)
    ranges = parse_accept(accept)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    response = frames_response(
        context.store, instance, frame_numbers, ranges, database=context.database
    )
    logger.info(
        "retrieve frames %s of instance %s as %s to %s",
        frame_list,
        instance.sop_instance_uid,
        response.part_type,
        _client(request),
    )
    return _streaming(response)


@router.get(INSTANCE_PATH + "/bulkdata/{tag_path:path}")
def retrieve_instance_bulkdata(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    tag_path: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    """Retrieve Bulkdata: one element value of an instance (PS3.18 10.4.1.1.5)."""
    path = parse_bulkdata_path(tag_path)
    ranges = parse_accept(accept)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    response, byte_range = bulkdata_response(
        context.store, instance, path, ranges, request.headers.get("range")
    )
    logger.info(
        "retrieve bulk data %s of instance %s as %s to %s",
        path.describe(),
        instance.sop_instance_uid,
        response.part_type,
        _client(request),
    )
    if byte_range is not None:
        return StreamingResponse(
            response.body,
            status_code=206,
            media_type=response.content_type,
            headers={"Content-Range": byte_range.content_range},
        )
    return _streaming(response)


# Rendered resources and thumbnails (PS3.18 10.4.1.1.3 and 10.4.1.1.4). The annotation
# parameter is accepted and ignored: renderings carry no burned-in text. The accept query
# parameter (PS3.18 8.3.3.1), when present, is used in place of the Accept header, because
# OHIF requests .../thumbnail?accept=image/jpeg with a multipart Accept header.


def _render_one(
    *,
    request: Request,
    context: Context,
    instance: StoredInstance,
    accept: str | None,
    options: RenderingOptions,
    frame_number: int | None = None,
) -> Response:
    resource = f"instance {instance.sop_instance_uid}"
    media_type = select_rendered_type(parse_accept(accept), resource)
    content = render_instance(context.store, instance, media_type, options, frame_number)
    logger.info(
        "render %s%s as %s to %s",
        resource,
        "" if frame_number is None else f" frame {frame_number}",
        media_type,
        _client(request),
    )
    return Response(content, media_type=media_type)


def _render_many(
    *,
    request: Request,
    context: Context,
    instances: list[StoredInstance],
    resource: str,
    accept: str | None,
    options: RenderingOptions,
) -> StreamingResponse:
    media_type = select_rendered_type(parse_accept(accept), resource)
    images = image_instances(context.database, instances, resource)
    logger.info(
        "render %s: %d instances as %s to %s", resource, len(images), media_type, _client(request)
    )
    return _streaming(rendered_instances_response(context.store, images, media_type, options))


def _single_frame(frame_list: str) -> int:
    numbers = parse_frame_list(frame_list)
    if len(numbers) != 1:
        raise BadRequestError(
            f"a rendered frame resource names one frame, not {frame_list!r}; request each "
            "frame separately"
        )
    return numbers[0]


@router.get("/studies/{study_instance_uid}/rendered")
def retrieve_rendered_study(
    *,
    study_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    window: QueryText = None,
    viewport: QueryText = None,
    quality: QueryText = None,
    annotation: QueryText = None,
) -> StreamingResponse:
    """Retrieve Rendered Study: one rendered part per image instance (PS3.18 10.4.1.1.3)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    options = parse_rendering_options(window, viewport, quality)
    instances = find_study_instances(context.database, study)
    return _render_many(
        request=request,
        context=context,
        instances=instances,
        resource=f"study {study}",
        accept=accept_query or accept,
        options=options,
    )


@router.get("/studies/{study_instance_uid}/series/{series_instance_uid}/rendered")
def retrieve_rendered_series(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    window: QueryText = None,
    viewport: QueryText = None,
    quality: QueryText = None,
    annotation: QueryText = None,
) -> StreamingResponse:
    """Retrieve Rendered Series: one rendered part per image instance (PS3.18 10.4.1.1.3)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    series = validate_url_uid(series_instance_uid, "SeriesInstanceUID")
    options = parse_rendering_options(window, viewport, quality)
    instances = find_series_instances(context.database, study, series)
    return _render_many(
        request=request,
        context=context,
        instances=instances,
        resource=f"series {series}",
        accept=accept_query or accept,
        options=options,
    )


@router.get(INSTANCE_PATH + "/rendered")
def retrieve_rendered_instance(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    window: QueryText = None,
    viewport: QueryText = None,
    quality: QueryText = None,
    annotation: QueryText = None,
) -> Response:
    """Retrieve Rendered Instance: frame 1, or all frames as GIF (PS3.18 10.4.1.1.3)."""
    options = parse_rendering_options(window, viewport, quality)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    return _render_one(
        request=request,
        context=context,
        instance=instance,
        accept=accept_query or accept,
        options=options,
    )


@router.get(INSTANCE_PATH + "/frames/{frame_list}/rendered")
def retrieve_rendered_frames(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    frame_list: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    window: QueryText = None,
    viewport: QueryText = None,
    quality: QueryText = None,
    annotation: QueryText = None,
) -> Response:
    """Retrieve Rendered Frames: one frame of an instance (PS3.18 10.4.1.1.3)."""
    frame_number = _single_frame(frame_list)
    options = parse_rendering_options(window, viewport, quality)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    return _render_one(
        request=request,
        context=context,
        instance=instance,
        accept=accept_query or accept,
        options=options,
        frame_number=frame_number,
    )


@router.get("/studies/{study_instance_uid}/thumbnail")
def retrieve_study_thumbnail(
    *,
    study_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    viewport: QueryText = None,
) -> Response:
    """Retrieve Study Thumbnail: the first image instance (PS3.18 10.4.1.1.4)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    options = thumbnail_options(viewport)
    instances = find_study_instances(context.database, study)
    first = image_instances(context.database, instances, f"study {study}")[0]
    return _render_one(
        request=request,
        context=context,
        instance=first,
        accept=accept_query or accept,
        options=options,
    )


@router.get("/studies/{study_instance_uid}/series/{series_instance_uid}/thumbnail")
def retrieve_series_thumbnail(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    viewport: QueryText = None,
) -> Response:
    """Retrieve Series Thumbnail: the first image instance (PS3.18 10.4.1.1.4)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    series = validate_url_uid(series_instance_uid, "SeriesInstanceUID")
    options = thumbnail_options(viewport)
    instances = find_series_instances(context.database, study, series)
    first = image_instances(context.database, instances, f"series {series}")[0]
    return _render_one(
        request=request,
        context=context,
        instance=first,
        accept=accept_query or accept,
        options=options,
    )


@router.get(INSTANCE_PATH + "/thumbnail")
def retrieve_instance_thumbnail(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    viewport: QueryText = None,
) -> Response:
    """Retrieve Instance Thumbnail: frame 1 scaled down (PS3.18 10.4.1.1.4)."""
    options = thumbnail_options(viewport)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    return _render_one(
        request=request,
        context=context,
        instance=instance,
        accept=accept_query or accept,
        options=options,
        frame_number=1,
    )


@router.get(INSTANCE_PATH + "/frames/{frame_list}/thumbnail")
def retrieve_frame_thumbnail(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    frame_list: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
    accept_query: AcceptQuery = None,
    viewport: QueryText = None,
) -> Response:
    """Retrieve Frame Thumbnail: one frame scaled down (PS3.18 10.4.1.1.4)."""
    frame_number = _single_frame(frame_list)
    options = thumbnail_options(viewport)
    instance = _find_instance(context, study_instance_uid, series_instance_uid, sop_instance_uid)
    return _render_one(
        request=request,
        context=context,
        instance=instance,
        accept=accept_query or accept,
        options=options,
        frame_number=frame_number,
    )
