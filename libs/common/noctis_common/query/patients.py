"""Patient-level matching for the Patient Root Query/Retrieve model (PS3.4 C.6.1.1.2).

The index keeps one patient row per identity: Patient ID within its Issuer of Patient
ID. A patient matches when one of its studies matches every key. The patient
attributes are indexed with each study, so matching uses the same conditions as a
study-level query, with case-insensitive person names. Returned values come from the
patient row, which keeps the attributes that the first stored instance of the patient
carried. Other patient attributes come from the stored metadata of the patient's first
instance. Matches are ordered by indexing, oldest patient first, so offset and limit
page through them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from noctis_common.db.models import Instance, Patient, Series, Study
from noctis_common.query.conditions import MatchOptions, match_condition
from noctis_common.query.errors import InvalidQueryError
from noctis_common.query.keys import IndexedKey, Matching, find_indexed_key
from noctis_common.query.levels import PATIENT_GROUP, QueryRetrieveLevel
from noctis_common.query.results import empty_element, index_element, json_key
from noctis_common.query.search import InstanceReference, describe_tag
from noctis_common.query.values import is_universal


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a keyword of pydicom's data dictionary")
    return tag


def _study_key(keyword: str) -> IndexedKey:
    key = find_indexed_key(_tag(keyword), QueryRetrieveLevel.STUDY)
    if key is None:
        raise ValueError(f"{keyword} is not indexed with each study")
    return key


def _patient_key(
    keyword: str, column: InstrumentedAttribute[Any], matching: Matching
) -> IndexedKey:
    # The level is the one at which the Study Root model keeps patient attributes.
    study_key = _study_key(keyword)
    return IndexedKey(
        keyword, study_key.tag, study_key.vr, QueryRetrieveLevel.STUDY, column, matching
    )


# The patient attributes that a patient-level query can match, returned from the
# patient row.
PATIENT_KEYS: dict[int, IndexedKey] = {
    key.tag: key
    for key in (
        _patient_key("PatientName", Patient.patient_name, Matching.PERSON_NAME),
        _patient_key("PatientID", Patient.patient_id, Matching.TEXT),
        _patient_key("IssuerOfPatientID", Patient.issuer_of_patient_id, Matching.TEXT),
        _patient_key("PatientBirthDate", Patient.patient_birth_date, Matching.DATE),
        _patient_key("PatientSex", Patient.patient_sex, Matching.TEXT),
    )
}

# The same attributes as indexed with each study: the conditions compare these columns,
# which keep the casefolded search form of person names.
_STUDY_KEYS: dict[int, IndexedKey] = {
    tag: _study_key(key.keyword) for tag, key in PATIENT_KEYS.items()
}

NUMBER_OF_PATIENT_RELATED_STUDIES_TAG = _tag("NumberOfPatientRelatedStudies")
NUMBER_OF_PATIENT_RELATED_SERIES_TAG = _tag("NumberOfPatientRelatedSeries")
NUMBER_OF_PATIENT_RELATED_INSTANCES_TAG = _tag("NumberOfPatientRelatedInstances")
_COUNT_TAGS = frozenset(
    {
        NUMBER_OF_PATIENT_RELATED_STUDIES_TAG,
        NUMBER_OF_PATIENT_RELATED_SERIES_TAG,
        NUMBER_OF_PATIENT_RELATED_INSTANCES_TAG,
    }
)

# Group 0010 attributes of the Patient Study module: they describe the patient at the
# time of one study, so the Patient Root model puts them at the study level.
PATIENT_STUDY_MODULE_TAGS = frozenset(
    _tag(keyword)
    for keyword in (
        "PatientAge",
        "PatientSize",
        "PatientSizeCodeSequence",
        "PatientBodyMassIndex",
        "PatientWeight",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientSexNeutered",
        "SmokingStatus",
        "PregnancyStatus",
        "LastMenstrualDate",
    )
)


def is_patient_level_tag(tag: int) -> bool:
    """Return whether an attribute belongs to the patient level of the Patient Root model.

    Those are the Patient Relationship counts and the group 0010 attributes outside
    the Patient Study module.
    """
    if tag in _COUNT_TAGS:
        return True
    return tag >> 16 == PATIENT_GROUP and tag not in PATIENT_STUDY_MODULE_TAGS


@dataclass(frozen=True)
class PatientQuery:
    """A patient-level query: what to match and what to return.

    ``match_keys`` are (tag, value) pairs in DICOM's query syntax, as in
    :class:`noctis_common.query.Query`; only the attributes of :data:`PATIENT_KEYS`
    can be matched. Match keys are returned too, as are ``return_tags``.
    """

    match_keys: tuple[tuple[int, str], ...] = ()
    return_tags: frozenset[int] = frozenset()
    fuzzy_matching: bool = False
    offset: int = 0
    limit: int | None = None


@dataclass
class PatientMatch:
    """One matching patient and its returned attributes."""

    patient_id: str
    issuer_of_patient_id: str
    # DICOM JSON elements by their eight-digit hex tag, in no particular order.
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The instance whose stored metadata supplied attributes.
    metadata_source: InstanceReference | None = None


@dataclass
class PatientPage:
    """The patients of one page, and whether more follow it."""

    matches: list[PatientMatch]
    more_matches: bool


def _conditions(query: PatientQuery, dialect_name: str) -> list[ColumnElement[bool]]:
    options = MatchOptions(dialect_name=dialect_name, fuzzy_matching=query.fuzzy_matching)
    conditions = []
    for tag, value in query.match_keys:
        if is_universal(value.strip()):
            continue
        if tag not in PATIENT_KEYS:
            matchable = ", ".join(key.keyword for key in PATIENT_KEYS.values())
            raise InvalidQueryError(
                f"cannot match {describe_tag(tag)}={value!r}: a patient-level query can "
                f"match {matchable}. Any other patient attribute can be returned by "
                "giving it an empty value"
            )
        condition = match_condition(_STUDY_KEYS[tag], value, options)
        if condition is not None:
            conditions.append(condition)
    return conditions


def _count_columns(returned: set[int]) -> dict[int, Any]:
    of_patient = Study.patient_fk == Patient.id
    counts: dict[int, Any] = {}
    if NUMBER_OF_PATIENT_RELATED_STUDIES_TAG in returned:
        counts[NUMBER_OF_PATIENT_RELATED_STUDIES_TAG] = (
            select(func.count(Study.id)).where(of_patient).scalar_subquery()
        )
    if NUMBER_OF_PATIENT_RELATED_SERIES_TAG in returned:
        counts[NUMBER_OF_PATIENT_RELATED_SERIES_TAG] = (
            select(func.coalesce(func.sum(Study.number_of_study_related_series), 0))
            .where(of_patient)
            .scalar_subquery()
        )
    if NUMBER_OF_PATIENT_RELATED_INSTANCES_TAG in returned:
        counts[NUMBER_OF_PATIENT_RELATED_INSTANCES_TAG] = (
            select(func.coalesce(func.sum(Study.number_of_study_related_instances), 0))
            .where(of_patient)
            .scalar_subquery()
        )
    return counts


def _first_instance_metadata(
    session: Session, patient_ids: Sequence[int]
) -> dict[int, tuple[str, InstanceReference]]:
    """Return, by patient id, the metadata of the patient's first stored instance."""
    first_instances = (
        select(func.min(Instance.id))
        .join(Study, Instance.study_fk == Study.id)
        .where(Study.patient_fk.in_(patient_ids))
        .group_by(Study.patient_fk)
    )
    rows = session.execute(
        select(
            Study.patient_fk,
            Instance.metadata_json,
            Instance.sop_instance_uid,
            Series.series_instance_uid,
            Study.study_instance_uid,
        )
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Instance.study_fk == Study.id)
        .where(Instance.id.in_(first_instances))
    )
    found = {}
    for row in rows:
        patient_fk, metadata_json, sop_instance_uid, series_instance_uid, study_instance_uid = row
        source = InstanceReference(study_instance_uid, series_instance_uid, sop_instance_uid)
        found[patient_fk] = (metadata_json, source)
    return found


def find_patient_matches(session: Session, query: PatientQuery) -> PatientPage:
    """Return the page of patients that ``query`` selects, with its returned attributes.

    Raises :class:`InvalidQueryError` when a key other than those of
    :data:`PATIENT_KEYS` has a value to match, or a value is invalid for its VR.
    Attributes that are not patient-level (see :func:`is_patient_level_tag`) are not
    returned. Runs one SELECT for the patients and, when some returned attribute is
    not indexed, one more for the stored metadata.
    """
    conditions = _conditions(query, session.get_bind().dialect.name)
    returned = {tag for tag, _ in query.match_keys} | set(query.return_tags)
    returned = {tag for tag in returned if is_patient_level_tag(tag)}
    counts = _count_columns(returned)
    metadata_tags = returned - set(PATIENT_KEYS) - set(counts)

    has_matching_study = (
        select(Study.id).where(Study.patient_fk == Patient.id, *conditions).exists()
    )
    statement: Select[Any] = (
        select(Patient, *counts.values()).where(has_matching_study).order_by(Patient.id.asc())
    )
    if query.offset:
        statement = statement.offset(query.offset)
    if query.limit is not None:
        # One row more than requested shows whether more matches follow this page.
        statement = statement.limit(query.limit + 1)
    rows = list(session.execute(statement).all())
    more_matches = query.limit is not None and len(rows) > query.limit
    if more_matches:
        rows = rows[: query.limit]

    matches = []
    for row in rows:
        patient: Patient = row[0]
        match = PatientMatch(patient.patient_id, patient.issuer_of_patient_id)
        for tag in metadata_tags:
            match.attributes[json_key(tag)] = empty_element(tag)
        for tag, key in PATIENT_KEYS.items():
            if tag in returned:
                match.attributes[json_key(tag)] = index_element(
                    key, getattr(patient, key.column.key)
                )
        for tag, value in zip(counts, row[1:], strict=True):
            match.attributes[json_key(tag)] = {"vr": "IS", "Value": [int(value)]}
        matches.append(match)
    if not metadata_tags or not matches:
        return PatientPage(matches, more_matches)

    metadata_by_patient = _first_instance_metadata(session, [row[0].id for row in rows])
    for match, row in zip(matches, rows, strict=True):
        found = metadata_by_patient.get(row[0].id)
        if found is None:
            continue
        metadata_json, source = found
        metadata: dict[str, dict[str, Any]] = json.loads(metadata_json)
        match.metadata_source = source
        for tag in metadata_tags:
            name = json_key(tag)
            if name in metadata:
                match.attributes[name] = metadata[name]
    return PatientPage(matches, more_matches)
