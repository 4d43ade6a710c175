"""The referring physician restriction: which studies a referring physician may see.

A principal whose only roles are restricted ones (``referring_physician``) sees a study
only when the study's Referring Physician's Name (0008,0090) names them. The name they
are known by comes from their token's ``referring_physician_name`` claim (the claim
that ``NOCTIS_AUTH_REFERRING_PHYSICIAN_CLAIM`` names). The rule compares the first
component group (the alphabetic form) of both names, component by component,
ignoring case and trailing empty components: ``Smith^John`` matches ``SMITH^JOHN``,
``smith^john^^^`` and ``Smith^John=スミス^ジョン``, but not ``Smith^John^Q`` nor
``Smith``. A referring physician whose token lacks the claim sees no study.

Studies they may not see are hidden, not refused: QIDO-RS leaves them out of its
matches, and WADO-RS and WADO-URI answer 404 as for a study that does not exist, so
the response does not reveal that the study is there. A principal that also holds any
unrestricted role (radiologist, say) is not restricted.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, status
from sqlalchemy import ColumnElement, false, or_, select

from noctis_common.auth import Principal, authenticate_request
from noctis_common.db import Database
from noctis_common.db.models import Study
from noctis_common.dicom.attributes import person_name_search_form

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


def may_see_study(database: Database, principal: Principal, study_instance_uid: str) -> bool:
    """Return whether ``principal`` may see the study, or True when it does not exist.

    A study that does not exist is left to the route, which returns 404 for it anyway.
    """
    condition = referring_physician_condition(principal)
    if condition is None:
        return True
    with database.read_session() as session:
        exists = session.scalar(
            select(Study.id).where(Study.study_instance_uid == study_instance_uid)
        )
        if exists is None:
            return True
        visible = session.scalar(
            select(Study.id).where(Study.study_instance_uid == study_instance_uid, condition)
        )
    return visible is not None


def _requested_study(request: Request) -> str | None:
    value: Any = request.path_params.get("study_instance_uid")
    if value is None:
        value = request.query_params.get("studyUID")
    return value if isinstance(value, str) else None


def hide_studies_of_others(request: Request) -> None:
    """Raise 404 for a study that a referring physician may not see.

    A router dependency of WADO-RS and WADO-URI, declared after the scope check.
    """
    principal = authenticate_request(request)
    if not principal.restricted_to_referring_physician:
        return
    study_instance_uid = _requested_study(request)
    if study_instance_uid is None:
        return
    if not may_see_study(request.app.state.context.database, principal, study_instance_uid):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study_instance_uid} not found")
