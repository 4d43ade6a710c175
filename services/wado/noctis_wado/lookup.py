"""Index queries that find the instances a WADO-RS URL names (PS3.18 10.4.1)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from noctis_common.db import Database
from noctis_common.db.models import Instance, Series, Study
from noctis_common.uids import InvalidUIDError, validate_uid
from noctis_wado.errors import BadRequestError, ResourceNotFoundError


@dataclass(frozen=True)
class StoredInstance:
    """The storage location of one indexed instance and the UIDs that address it."""

    id: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    object_key: str
    dataset_offset: int


# The columns of StoredInstance, in order.
_InstanceSelect = Select[int, str, str, str, str, str, int]


def validate_url_uid(value: str, keyword: str) -> str:
    """Return the UID from a URL segment, or raise :class:`BadRequestError`."""
    try:
        return validate_uid(value, keyword)
    except InvalidUIDError as error:
        raise BadRequestError(f"{error}; check the {keyword} in the request URL") from error


def _instances_query() -> _InstanceSelect:
    return (
        select(
            Instance.id,
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.transfer_syntax_uid,
            Instance.object_key,
            Instance.dataset_offset,
        )
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Instance.study_fk == Study.id)
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    )


def check_series_in_study(
    session: Session, study_instance_uid: str, series_instance_uid: str
) -> None:
    """Raise :class:`ResourceNotFoundError` unless the series exists in the study."""
    _check_series_in_study(session, study_instance_uid, series_instance_uid)


def _fetch(session: Session, query: _InstanceSelect) -> list[StoredInstance]:
    return [StoredInstance(*row) for row in session.execute(query).all()]


def _check_series_in_study(
    session: Session, study_instance_uid: str, series_instance_uid: str
) -> None:
    """Raise :class:`ResourceNotFoundError` unless the series exists in the study."""
    actual_study = session.scalar(
        select(Study.study_instance_uid)
        .join(Series, Series.study_fk == Study.id)
        .where(Series.series_instance_uid == series_instance_uid)
    )
    if actual_study is None:
        raise ResourceNotFoundError(f"series {series_instance_uid} not found")
    if actual_study != study_instance_uid:
        raise ResourceNotFoundError(
            f"series {series_instance_uid} not found in study {study_instance_uid}: it "
            f"belongs to study {actual_study}; correct the study in the URL"
        )


def find_study_instances(database: Database, study_instance_uid: str) -> list[StoredInstance]:
    """Return the instances of a study, ordered by series and instance number."""
    with database.read_session() as session:
        instances = _fetch(
            session, _instances_query().where(Study.study_instance_uid == study_instance_uid)
        )
    if not instances:
        raise ResourceNotFoundError(f"study {study_instance_uid} not found")
    return instances


def find_series_instances(
    database: Database, study_instance_uid: str, series_instance_uid: str
) -> list[StoredInstance]:
    """Return the instances of a series of a study, ordered by instance number."""
    with database.read_session() as session:
        _check_series_in_study(session, study_instance_uid, series_instance_uid)
        instances = _fetch(
            session, _instances_query().where(Series.series_instance_uid == series_instance_uid)
        )
    if not instances:
        raise ResourceNotFoundError(f"series {series_instance_uid} has no instances")
    return instances


def find_instance(
    database: Database,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
) -> StoredInstance:
    """Return one instance, checking that it belongs to the series and study of the URL."""
    with database.read_session() as session:
        _check_series_in_study(session, study_instance_uid, series_instance_uid)
        instances = _fetch(
            session, _instances_query().where(Instance.sop_instance_uid == sop_instance_uid)
        )
    if not instances:
        raise ResourceNotFoundError(f"instance {sop_instance_uid} not found")
    instance = instances[0]
    if instance.series_instance_uid != series_instance_uid:
        raise ResourceNotFoundError(
            f"instance {sop_instance_uid} not found in series {series_instance_uid}: it "
            f"belongs to series {instance.series_instance_uid} of study "
            f"{instance.study_instance_uid}; correct the URL"
        )
    return instance
