"""The referring physician restriction: which studies a referring physician may see.

A principal whose only roles are restricted ones (``referring_physician``) may read a study
only when the study's Referring Physician's Name (0008,0090) names them. The name they
are known by comes from their token's ``referring_physician_name`` claim (the claim
that ``NOCTIS_AUTH_REFERRING_PHYSICIAN_CLAIM`` names). The rule compares the first
component group (the alphabetic form) of both names, component by component,
ignoring case and trailing empty components: ``Smith^John`` matches ``SMITH^JOHN``,
``smith^john^^^`` and ``Smith^John=スミス^ジョン``, but not ``Smith^John^Q`` nor
``Smith``. A referring physician whose token lacks the claim may read no study.

Studies they may not see are hidden, not refused: QIDO-RS leaves them out of its
matches, and WADO-RS and WADO-URI answer 404 as for a study that does not exist, so
the response does not reveal that the study is there. A principal that also holds any
unrestricted role (radiologist, say) is not restricted.

The WADO check reads the UIDs of a request as the routes do. :func:`validate_uid`
removes trailing spaces and NULs, so ``1.2.3%20`` in a URL names study ``1.2.3``. The
check covers the study of every UID that the request names: study, series and
instance, in the path or in WADO-URI's ``studyUID``, ``seriesUID`` and ``objectUID``.
Without that, a padded study UID would reach the route unchecked. So would a series
of another study put under the physician's own study, and the route's 404 message
names the study that such a series belongs to.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request, status
from sqlalchemy import ColumnElement, Select, false, or_, select
from sqlalchemy.orm import Session

from noctis_common.audit_http import note_audit_details
from noctis_common.auth import Principal, authenticate_request
from noctis_common.db import Database
from noctis_common.db.models import Instance, Series, Study
from noctis_common.dicom.attributes import person_name_search_form
from noctis_common.uids import InvalidUIDError, validate_uid

MAX_PERSON_NAME_COMPONENTS = 5


def person_name_forms(name: str) -> list[str]:
    """Return the search forms of ``name``'s alphabetic group with 0 to 4 trailing carets."""
    alphabetic = name.split("=", 1)[0]
    components = [component.strip() for component in alphabetic.split("^")]
    while components and not components[-1]:
        components.pop()
    if not components:
        return []
    base = person_name_search_form("^".join(components))
    padding = MAX_PERSON_NAME_COMPONENTS - len(components)
    return [base + "^" * extra for extra in range(max(padding, 0) + 1)]


def referring_physician_condition(principal: Principal) -> ColumnElement[bool] | None:
    """Return the condition on :class:`Study` rows that ``principal`` may see, or None."""
    if not principal.restricted_to_referring_physician:
        return None
    forms = person_name_forms(principal.referring_physician_name or "")
    if not forms:
        return false()
    column = Study.referring_physician_name_search
    return or_(
        column.in_(forms),
        *(column.startswith(form + "=", autoescape=True) for form in forms),
    )


def _study_of_study(uid: str) -> Select[int]:
    return select(Study.id).where(Study.study_instance_uid == uid)


def _study_of_series(uid: str) -> Select[int]:
    return (
        select(Study.id)
        .join(Series, Series.study_fk == Study.id)
        .where(Series.series_instance_uid == uid)
    )


def _study_of_instance(uid: str) -> Select[int]:
    return (
        select(Study.id)
        .join(Instance, Instance.study_fk == Study.id)
        .where(Instance.sop_instance_uid == uid)
    )


# For each kind of UID: the word that 404 messages use for it, its path parameter, its
# WADO-URI query parameter, and the query of the studies that such a UID belongs to.
REQUESTED_UIDS: tuple[tuple[str, str, str, Callable[[str], Select[int]]], ...] = (
    ("study", "study_instance_uid", "studyUID", _study_of_study),
    ("series", "series_instance_uid", "seriesUID", _study_of_series),
    ("instance", "sop_instance_uid", "objectUID", _study_of_instance),
)


def _names_hidden_study(
    session: Session, owning_studies: Select[int], condition: ColumnElement[bool]
) -> bool:
    """Return whether a study that ``owning_studies`` selects fails ``condition``.

    It runs two queries rather than one with NOT, because a study without Referring
    Physician's Name has a NULL search form, and NOT (... IN ...) is NULL for it.
    """
    owners = set(session.scalars(owning_studies))
    if not owners:
        return False
    return set(session.scalars(owning_studies.where(condition))) != owners


def may_see_study(database: Database, principal: Principal, study_instance_uid: str) -> bool:
    """Return whether ``principal`` may see the study, or True when it does not exist.

    A study that does not exist is left to the route, which returns 404 for it anyway.
    Trailing spaces and NULs are removed from the UID first, as the routes do.
    """
    condition = referring_physician_condition(principal)
    if condition is None:
        return True
    try:
        uid = validate_uid(study_instance_uid, "StudyInstanceUID")
    except InvalidUIDError:
        return False
    with database.read_session() as session:
        return not _names_hidden_study(session, _study_of_study(uid), condition)


def _requested_values(request: Request, path_name: str, query_name: str) -> list[str]:
    values: list[str] = []
    path_value = request.path_params.get(path_name)
    if isinstance(path_value, str):
        values.append(path_value)
    values.extend(request.query_params.getlist(query_name))
    return values


def hide_studies_of_others(request: Request) -> None:
    """Raise 404 for a request that names a study a referring physician may not see.

    A router dependency of WADO-RS and WADO-URI, declared after the scope check. It
    also notes the study UIDs of the request, as the routes read them, for its audit
    record, because the audit middleware reads them as sent, padded or percent-encoded.
    """
    study_uids: list[str] = []
    for value in _requested_values(request, "study_instance_uid", "studyUID"):
        try:
            study_uids.append(validate_uid(value, "StudyInstanceUID"))
        except InvalidUIDError:
            continue
    note_audit_details(request.state, study_instance_uids=study_uids)
    principal = authenticate_request(request)
    condition = referring_physician_condition(principal)
    if condition is None:
        return
    checks: list[tuple[str, Select[int]]] = []
    for kind, path_name, query_name, owning_studies in REQUESTED_UIDS:
        for value in _requested_values(request, path_name, query_name):
            try:
                uid = validate_uid(value, path_name)
            except InvalidUIDError:
                # The route would return 400. A restricted principal gets 404, which
                # reveals less.
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} not found") from None
            checks.append((f"{kind} {uid}", owning_studies(uid)))
    database: Database = request.app.state.context.database
    with database.read_session() as session:
        for resource, owning_studies_query in checks:
            if _names_hidden_study(session, owning_studies_query, condition):
                # The words of the route's 404 for a resource that does not exist.
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"{resource} not found")
