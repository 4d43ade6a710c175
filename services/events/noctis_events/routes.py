"""The REST change feed: ``GET /dicom-web/changefeed`` (a Noctis extension, not PS3.18).

Systems that cannot consume Kafka read the same CloudEvents here, paged by the relay's
publication sequence (see :mod:`noctis_events.changefeed`). A response is a JSON object
``{"events": [...], "next_offset": N}``, and the client passes ``N`` as ``offset`` in
its next request. A rejected request gets 400 with ``{"detail": ...}`` naming the parameter
and what it accepts.

Reading the feed needs the ``search`` scope. The feed lists events of every study, so a
principal restricted to the studies of one referring physician gets 403: filtering
would need the study rows, which deleted studies no longer have.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from noctis_common.auth import CurrentPrincipal, require_scope
from noctis_common.roles import Scope
from noctis_common.web import Context
from noctis_events.changefeed import (
    ChangeFeedRequestError,
    parse_changefeed_request,
    read_changefeed,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["change feed"], dependencies=[Depends(require_scope(Scope.SEARCH))])


@router.get("/changefeed")
def read_change_feed(
    request: Request, context: Context, principal: CurrentPrincipal
) -> JSONResponse:
    """Return published events from ``offset`` on, filtered by time window and type."""
    client = request.client.host if request.client else "unknown client"
    if principal.restricted_to_referring_physician:
        logger.info("change feed request from %s rejected: referring physician token", client)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "the change feed lists the events of every study, and this token is limited to "
            "the studies of one referring physician; use QIDO-RS to find their studies",
        )
    try:
        feed_request = parse_changefeed_request(request.query_params.multi_items())
    except ChangeFeedRequestError as error:
        logger.info("change feed request from %s rejected: %s", client, error)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    try:
        page = read_changefeed(context.database, feed_request, context.settings.events_source)
    except SQLAlchemyError as error:
        # The database's own message can quote payload values, so only the class is logged.
        logger.error(
            "reading the change feed failed in the index database: %s", type(error).__name__
        )
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"reading the change feed failed because the index database failed "
            f"({type(error).__name__}); retry later",
        ) from error
    logger.info(
        "change feed request from %s: offset %d, %d events, next offset %d",
        client,
        feed_request.offset,
        len(page.events),
        page.next_offset,
    )
    return JSONResponse({"events": page.events, "next_offset": page.next_offset})
