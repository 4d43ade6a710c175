"""WADO-RS: the Retrieve transaction of the Studies Service (PS3.18 10.4).

Every route of the service is registered here. A handler parses the URL and the
Accept header, queries the index, then renders a streamed response. Each of these
steps is a function in its own module. Handlers are plain functions, so FastAPI runs their
blocking index and object store reads in its thread pool.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from noctis_common.web import Context, dicomweb_base_url
from noctis_wado.accept import parse_accept
from noctis_wado.bulkdata import bulkdata_response, parse_bulkdata_path
from noctis_wado.frames import frames_response, parse_frame_list
from noctis_wado.lookup import (
    StoredInstance,
    find_instance,
    find_series_instances,
    find_study_instances,
    validate_url_uid,
)
from noctis_wado.media_types import DICOM_JSON
from noctis_wado.metadata import check_metadata_acceptable, stream_metadata
from noctis_wado.multipart import MultipartResponse
from noctis_wado.retrieve import check_instances_acceptable, instances_response

logger = logging.getLogger(__name__)
router = APIRouter(tags=["WADO-RS"])

AcceptHeader = Annotated[str | None, Header()]
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
    check_instances_acceptable(ranges, instances, f"study {study}")
    logger.info("retrieve study %s: %d instances to %s", study, len(instances), _client(request))
    return _streaming(instances_response(context.store, instances))


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
    check_instances_acceptable(ranges, instances, f"series {series}")
    logger.info("retrieve series %s: %d instances to %s", series, len(instances), _client(request))
    return _streaming(instances_response(context.store, instances))


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
    check_instances_acceptable(ranges, [instance], f"instance {instance.sop_instance_uid}")
    logger.info("retrieve instance %s to %s", instance.sop_instance_uid, _client(request))
    return _streaming(instances_response(context.store, [instance]))


@router.get("/studies/{study_instance_uid}/metadata")
def retrieve_study_metadata(
    *, study_instance_uid: str, request: Request, context: Context, accept: AcceptHeader = None
) -> StreamingResponse:
    """Retrieve Study Metadata as DICOM JSON (PS3.18 10.4, table 10.4.1-2)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    check_metadata_acceptable(parse_accept(accept))
    instances = find_study_instances(context.database, study)
    logger.info(
        "retrieve metadata of study %s: %d instances to %s",
        study,
        len(instances),
        _client(request),
    )
    return _metadata_response(request, context, instances)


@router.get("/studies/{study_instance_uid}/series/{series_instance_uid}/metadata")
def retrieve_series_metadata(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    request: Request,
    context: Context,
    accept: AcceptHeader = None,
) -> StreamingResponse:
    """Retrieve Series Metadata as DICOM JSON (PS3.18 10.4, table 10.4.1-2)."""
    study = validate_url_uid(study_instance_uid, "StudyInstanceUID")
    series = validate_url_uid(series_instance_uid, "SeriesInstanceUID")
    check_metadata_acceptable(parse_accept(accept))
    instances = find_series_instances(context.database, study, series)
    logger.info(
        "retrieve metadata of series %s: %d instances to %s",
        series,
        len(instances),
        _client(request),
    )
    return _metadata_response(request, context, instances)


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
    response = frames_response(context.store, instance, frame_numbers, ranges)
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
    response = bulkdata_response(context.store, instance, path, ranges)
    logger.info(
        "retrieve bulk data %s of instance %s as %s to %s",
        path.describe(),
        instance.sop_instance_uid,
        response.part_type,
        _client(request),
    )
    return _streaming(response)
