"""STOW-RS routes: the Store transaction of the Studies Service (PS3.18 section 10.5).

A request is handled in three steps: parse (header checks, then the body streamed into
spool files), store (each part through the archive's store pipeline), and render (the
Store Instances Response). A bad request as a whole is rejected before anything is
stored. Once the body is complete, each part succeeds or fails on its own.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from noctis_common.archive import FailureReason
from noctis_common.audit_http import note_audit_details
from noctis_common.auth import require_scope
from noctis_common.roles import Scope
from noctis_common.web import Context, dicomweb_base_url
from noctis_stow.receive import ReceivedPart, discard_parts, receive_parts
from noctis_stow.request import StowRequestError, parse_store_request
from noctis_stow.response import render_request_error, render_store_response
from noctis_stow.store import StoreOutcome, store_parts

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_scope(Scope.STORE))])

# Failed parts logged one by one per request; the rest are counted in the summary line.
MAX_LOGGED_FAILURES = 10
ARCHIVE_SIDE_FAILURES = frozenset(
    {FailureReason.OUT_OF_RESOURCES, FailureReason.PROCESSING_FAILURE}
)


def _client_address(request: Request) -> str:
    if request.client is None:
        return "unknown client"
    return f"{request.client.host}:{request.client.port}"


def _log_outcome(
    client: str,
    study_instance_uid: str | None,
    parts: list[ReceivedPart],
    outcome: StoreOutcome,
    status_code: int,
) -> None:
    for failed in outcome.failed[:MAX_LOGGED_FAILURES]:
        # A failure on the archive's side (index or object store down) is an error of
        # the service; a rejected instance is the client's problem.
        archive_side = failed.failure_reason in ARCHIVE_SIDE_FAILURES
        logger.log(
            logging.ERROR if archive_side else logging.WARNING,
            "STOW-RS part %d from %s (SOP Instance UID %s) failed with %04XH: %s",
            failed.part_number,
            client,
            failed.uids.sop_instance_uid or "unknown",
            failed.failure_reason,
            failed.message,
        )
    duplicates = sum(1 for part in outcome.stored if part.instance.duplicate)
    target = f"/studies/{study_instance_uid}" if study_instance_uid else "/studies"
    logger.info(
        "STOW-RS %s from %s: %d parts, %d stored (%d already stored), %d failed; status %d",
        target,
        client,
        len(parts),
        len(outcome.stored),
        duplicates,
        len(outcome.failed),
        status_code,
    )


async def store_instances(
    request: Request, context: Context, study_instance_uid: str | None
) -> Response:
    """Run the Store transaction for ``/studies`` or ``/studies/{study_instance_uid}``."""
    client = _client_address(request)
    settings = context.settings
    try:
        store_request = parse_store_request(
            request.headers, study_instance_uid, settings.stow_max_request_bytes
        )
        parts = await receive_parts(
            request.stream(),
            store_request.boundary,
            context.archive,
            settings.stow_max_request_bytes,
        )
    except StowRequestError as error:
        logger.warning(
            "STOW-RS from %s rejected with %d: %s", client, error.status_code, error.detail
        )
        return render_request_error(error)
    except ClientDisconnect:
        logger.warning("STOW-RS from %s: the client disconnected before the body ended", client)
        return Response(status_code=400)

    try:
        outcome = await store_parts(context.archive, parts, store_request.study_instance_uid)
    finally:
        discard_parts(parts)
    response = render_store_response(
        outcome, dicomweb_base_url(request, settings), store_request.response_media_type
    )
    _log_outcome(client, store_request.study_instance_uid, parts, outcome, response.status_code)
    note_audit_details(
        request.state,
        study_instance_uids=[part.instance.study_instance_uid for part in outcome.stored],
        number_of_instances=len(outcome.stored),
    )
    return response


@router.post("/studies")
async def store_studies(request: Request, context: Context) -> Response:
    """Store DICOM instances of any studies (PS3.18 10.5, Studies resource)."""
    return await store_instances(request, context, None)


@router.post("/studies/{study_instance_uid}")
async def store_study(request: Request, context: Context, study_instance_uid: str) -> Response:
    """Store DICOM instances of one study (PS3.18 10.5, Study resource)."""
    return await store_instances(request, context, study_instance_uid)
