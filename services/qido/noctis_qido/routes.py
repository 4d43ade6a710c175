"""QIDO-RS: the Search transaction of the Studies service (PS3.18 10.6).

One route per target resource. Each handler parses the request into an index query
(:mod:`noctis_qido.parse`), runs it (:mod:`noctis_qido.query`) and renders the page of
matches (:mod:`noctis_qido.render`). A rejected request gets a 4xx JSON body
``{"detail": ...}`` that names the parameter, the value and what is accepted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from noctis_common.audit_http import note_audit_details
from noctis_common.auth import Principal, authenticate_request, require_scope
from noctis_common.auth_restrictions import referring_physician_condition
from noctis_common.context import ArchiveContext
from noctis_common.logs import phi
from noctis_common.query import InvalidQueryError, Query
from noctis_common.roles import Scope
from noctis_common.web import Context, dicomweb_base_url
from noctis_qido.defaults import TargetResource
from noctis_qido.parse import SearchRequestError, parse_search_request
from noctis_qido.query import search_index
from noctis_qido.render import render_search_results

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_scope(Scope.SEARCH))])


def restrict_query(query: Query, principal: Principal) -> Query:
    """Limit ``query`` to the studies ``principal`` may see (referring physicians)."""
    condition = referring_physician_condition(principal)
    if condition is None:
        return query
    return replace(query, extra_conditions=(*query.extra_conditions, condition))


def _search(
    request: Request,
    context: Context,
    target: TargetResource,
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> Response:
    started = time.monotonic()
    client = request.client.host if request.client else "unknown client"
    try:
        search = parse_search_request(
            target,
            request.query_params.multi_items(),
            request.headers.get("accept"),
            context.settings.qido_max_limit,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
        )
        principal = authenticate_request(request)
        page = search_index(context.database, restrict_query(search.query, principal))
    except SearchRequestError as error:
        return _reject(context, target, client, error.status_code, error.message)
    except InvalidQueryError as error:
        return _reject(context, target, client, 400, str(error))

    note_audit_details(
        request.state, study_instance_uids=[match.study_instance_uid for match in page.matches]
    )
    response = render_search_results(page, search, dicomweb_base_url(request, context.settings))
    logger.info(
        "search for %s from %s: %d matches%s, keys %s, offset %d, %.0f ms",
        target.description,
        client,
        len(page.matches),
        " and more" if page.more_matches else "",
        ",".join(search.match_keywords) or "none",
        search.query.offset,
        (time.monotonic() - started) * 1000,
    )
    return response


def _reject(
    context: ArchiveContext,
    target: TargetResource,
    client: str,
    status_code: int,
    message: str,
) -> Response:
    # The message can quote a query value, such as a patient's birth date, so the log
    # shows it only where PHI logging is on.
    logger.info(
        "rejected search for %s from %s with %d: %s",
        target.description,
        client,
        status_code,
        phi(context.settings, message),
    )
    return JSONResponse({"detail": message}, status_code=status_code)


@router.get("/studies", summary="Search for studies (PS3.18 10.6)")
def search_for_studies(request: Request, context: Context) -> Response:
    """Search for Studies: All Studies."""
    return _search(request, context, TargetResource.ALL_STUDIES)


@router.get("/series", summary="Search for series (PS3.18 10.6)")
def search_for_series(request: Request, context: Context) -> Response:
    """Search for Series: All Series, with the study attributes of each."""
    return _search(request, context, TargetResource.ALL_SERIES)


@router.get("/studies/{study_instance_uid}/series", summary="Search for series of a study")
def search_for_study_series(
    request: Request, context: Context, study_instance_uid: str
) -> Response:
    """Search for Series: Study's Series."""
    return _search(
        request, context, TargetResource.STUDY_SERIES, study_instance_uid=study_instance_uid
    )


@router.get("/instances", summary="Search for instances (PS3.18 10.6)")
def search_for_instances(request: Request, context: Context) -> Response:
    """Search for Instances: All Instances, with the study and series attributes of each."""
    return _search(request, context, TargetResource.ALL_INSTANCES)


@router.get("/studies/{study_instance_uid}/instances", summary="Search for instances of a study")
def search_for_study_instances(
    request: Request, context: Context, study_instance_uid: str
) -> Response:
    """Search for Instances: Study's Instances, with the series attributes of each."""
    return _search(
        request, context, TargetResource.STUDY_INSTANCES, study_instance_uid=study_instance_uid
    )


@router.get(
    "/studies/{study_instance_uid}/series/{series_instance_uid}/instances",
    summary="Search for instances of a series",
)
def search_for_series_instances(
    request: Request, context: Context, study_instance_uid: str, series_instance_uid: str
) -> Response:
    """Search for Instances: Study's Series' Instances."""
    return _search(
        request,
        context,
        TargetResource.SERIES_INSTANCES,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
    )
