"""DELETE of a study, series or instance: an extension outside PS3.18.

PS3.18 defines no DELETE transaction for the Studies Service; these routes follow the
URL layout of its resources (PS3.18 10.4.1), as other archives do. A successful
deletion returns 204 No Content. The index rows are deleted first and the stored
objects right after. The archive's orphan object sweep retries any object whose
deletion failed (see :mod:`noctis_common.deletion`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Depends, HTTPException, Request, status
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from noctis_common.audit import patients_of_studies
from noctis_common.audit_http import note_audit_details
from noctis_common.auth import require_scope
from noctis_common.deletion import (
    DeletionResult,
    DeletionTargetNotFoundError,
    delete_instance,
    delete_series,
    delete_study,
)
from noctis_common.roles import Scope
from noctis_common.uids import InvalidUIDError, validate_uid
from noctis_common.web import Context

logger = logging.getLogger(__name__)

router = APIRouter(tags=["DELETE"], dependencies=[Depends(require_scope(Scope.DELETE))])

SERIES_PATH = "/studies/{study_instance_uid}/series/{series_instance_uid}"
INSTANCE_PATH = SERIES_PATH + "/instances/{sop_instance_uid}"


def _url_uid(value: str, keyword: str) -> str:
    try:
        return validate_uid(value, keyword)
    except InvalidUIDError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"{error}; check the {keyword} in the request URL"
        ) from error


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown client"


def _run_deletion(
    context: Context, request: Request, description: str, deletion: Callable[[], DeletionResult]
) -> Response:
    """Run ``deletion`` and map its outcome to 204, 404 or 503."""
    # The audit record names the patient, which the index cannot look up once the
    # study is deleted.
    study_instance_uid = request.path_params.get("study_instance_uid", "")
    note_audit_details(
        request.state, patients=patients_of_studies(context.database, [study_instance_uid])
    )
    # Records of this process's earlier requests get their patients from the index
    # when they are flushed, so they go in before the rows they need are deleted.
    if context.audit is not None:
        context.audit.flush()
    try:
        result = deletion()
    except DeletionTargetNotFoundError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    except SQLAlchemyError as error:
        # The database's own message can quote patient data, so only the class is sent.
        logger.error("deleting %s failed in the index database: %s", description, type(error))
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"deleting {description} failed because the index database failed "
            f"({type(error).__name__}); nothing was deleted, retry later",
        ) from error
    context.relay.notify()
    logger.info(
        "DELETE %s from %s: %d instances removed, %d objects left for the sweep",
        description,
        _client(request),
        result.number_of_deleted_instances,
        result.number_of_orphaned_objects,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/studies/{study_instance_uid}", status_code=status.HTTP_204_NO_CONTENT)
def delete_study_resource(study_instance_uid: str, request: Request, context: Context) -> Response:
    """Delete a study with all its series and instances (extension; no PS3.18 section)."""
    study = _url_uid(study_instance_uid, "StudyInstanceUID")
    return _run_deletion(
        context,
        request,
        f"study {study}",
        lambda: delete_study(context.database, context.store, study),
    )


@router.delete(SERIES_PATH, status_code=status.HTTP_204_NO_CONTENT)
def delete_series_resource(
    study_instance_uid: str, series_instance_uid: str, request: Request, context: Context
) -> Response:
    """Delete a series with all its instances (extension; no PS3.18 section)."""
    study = _url_uid(study_instance_uid, "StudyInstanceUID")
    series = _url_uid(series_instance_uid, "SeriesInstanceUID")
    return _run_deletion(
        context,
        request,
        f"series {series}",
        lambda: delete_series(context.database, context.store, study, series),
    )


@router.delete(INSTANCE_PATH, status_code=status.HTTP_204_NO_CONTENT)
def delete_instance_resource(
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    request: Request,
    context: Context,
) -> Response:
    """Delete one instance (extension; no PS3.18 section)."""
    study = _url_uid(study_instance_uid, "StudyInstanceUID")
    series = _url_uid(series_instance_uid, "SeriesInstanceUID")
    instance = _url_uid(sop_instance_uid, "SOPInstanceUID")
    return _run_deletion(
        context,
        request,
        f"instance {instance}",
        lambda: delete_instance(context.database, context.store, study, series, instance),
    )
