"""The query keys that the index can match, and the columns that contain their values.

Each key is an attribute of one Query/Retrieve level with an index column. Its
:class:`Matching` names the PS3.4 C.2.2.2 matching types that apply to it. Keys whose
column keeps no comparable form (``SeriesTime``, ``ContentTime``) and the counts that
the archive computes can be returned but only take Universal Matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy.orm import InstrumentedAttribute

from noctis_common.db.models import Instance, Series, Study
from noctis_common.query.levels import QueryRetrieveLevel


class Matching(Enum):
    """The comparison of a key's value with its column."""

    UID = "UID"  # Single Value and List of UID Matching
    TEXT = "text"  # Single Value and Wild Card Matching, case-sensitive
    PERSON_NAME = "person name"  # case-insensitive, per component group, optionally fuzzy
    CODE_LIST = "code list"  # a multi-valued CS column, such as Modalities in Study
    DATE = "date"  # Single Value and Range Matching on DA
    TIME = "time"  # Single Value and Range Matching on a fixed-width TM key column
    INTEGER = "integer"  # Single Value Matching on IS and US
    UNIVERSAL_ONLY = "universal only"  # returned, never compared


@dataclass(frozen=True)
class IndexedKey:
    """An attribute that the index keeps in a column at one level."""

    keyword: str
    tag: int
    vr: str
    level: QueryRetrieveLevel
    column: InstrumentedAttribute[Any]
    matching: Matching
    # The column compared when matching, where it differs from the returned one: the
    # casefolded search form of a person name or the fixed-width key of a time.
    match_column: InstrumentedAttribute[Any] | None = None

    @property
    def compared_column(self) -> InstrumentedAttribute[Any]:
        return self.match_column if self.match_column is not None else self.column


def _key(
    keyword: str,
    level: QueryRetrieveLevel,
    column: InstrumentedAttribute[Any],
    matching: Matching,
    match_column: InstrumentedAttribute[Any] | None = None,
) -> IndexedKey:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a keyword of pydicom's data dictionary")
    return IndexedKey(keyword, tag, dictionary_VR(tag), level, column, matching, match_column)


_STUDY = QueryRetrieveLevel.STUDY
_SERIES = QueryRetrieveLevel.SERIES
_IMAGE = QueryRetrieveLevel.IMAGE

INDEXED_KEYS: tuple[IndexedKey, ...] = (
    _key("StudyInstanceUID", _STUDY, Study.study_instance_uid, Matching.UID),
    _key(
        "PatientName",
        _STUDY,
        Study.patient_name,
        Matching.PERSON_NAME,
        Study.patient_name_search,
    ),
    _key("PatientID", _STUDY, Study.patient_id, Matching.TEXT),
    _key("IssuerOfPatientID", _STUDY, Study.issuer_of_patient_id, Matching.TEXT),
    _key("PatientBirthDate", _STUDY, Study.patient_birth_date, Matching.DATE),
    _key("PatientSex", _STUDY, Study.patient_sex, Matching.TEXT),
    _key("StudyDate", _STUDY, Study.study_date, Matching.DATE),
    _key("StudyTime", _STUDY, Study.study_time, Matching.TIME, Study.study_time_key),
    _key("AccessionNumber", _STUDY, Study.accession_number, Matching.TEXT),
    _key("StudyID", _STUDY, Study.study_id, Matching.TEXT),
    _key("StudyDescription", _STUDY, Study.study_description, Matching.TEXT),
    _key(
        "ReferringPhysicianName",
        _STUDY,
        Study.referring_physician_name,
        Matching.PERSON_NAME,
        Study.referring_physician_name_search,
    ),
    _key("TimezoneOffsetFromUTC", _STUDY, Study.timezone_offset_from_utc, Matching.TEXT),
    _key("ModalitiesInStudy", _STUDY, Study.modalities_in_study, Matching.CODE_LIST),
    _key(
        "NumberOfStudyRelatedSeries",
        _STUDY,
        Study.number_of_study_related_series,
        Matching.UNIVERSAL_ONLY,
    ),
    _key(
        "NumberOfStudyRelatedInstances",
        _STUDY,
        Study.number_of_study_related_instances,
        Matching.UNIVERSAL_ONLY,
    ),
    _key("SeriesInstanceUID", _SERIES, Series.series_instance_uid, Matching.UID),
    _key("Modality", _SERIES, Series.modality, Matching.TEXT),
    _key("SeriesNumber", _SERIES, Series.series_number, Matching.INTEGER),
    _key("SeriesDescription", _SERIES, Series.series_description, Matching.TEXT),
    _key("SeriesDate", _SERIES, Series.series_date, Matching.DATE),
    _key("SeriesTime", _SERIES, Series.series_time, Matching.UNIVERSAL_ONLY),
    _key("BodyPartExamined", _SERIES, Series.body_part_examined, Matching.TEXT),
    _key(
        "PerformedProcedureStepStartDate",
        _SERIES,
        Series.performed_procedure_step_start_date,
        Matching.DATE,
    ),
    _key(
        "PerformedProcedureStepStartTime",
        _SERIES,
        Series.performed_procedure_step_start_time,
        Matching.TIME,
        Series.performed_procedure_step_start_time_key,
    ),
    _key("TimezoneOffsetFromUTC", _SERIES, Series.timezone_offset_from_utc, Matching.TEXT),
    _key(
        "NumberOfSeriesRelatedInstances",
        _SERIES,
        Series.number_of_series_related_instances,
        Matching.UNIVERSAL_ONLY,
    ),
    _key("SOPInstanceUID", _IMAGE, Instance.sop_instance_uid, Matching.UID),
    _key("SOPClassUID", _IMAGE, Instance.sop_class_uid, Matching.UID),
    _key("InstanceNumber", _IMAGE, Instance.instance_number, Matching.INTEGER),
    _key("Rows", _IMAGE, Instance.rows, Matching.INTEGER),
    _key("Columns", _IMAGE, Instance.columns, Matching.INTEGER),
    _key("BitsAllocated", _IMAGE, Instance.bits_allocated, Matching.INTEGER),
    _key("NumberOfFrames", _IMAGE, Instance.number_of_frames, Matching.INTEGER),
    _key("ContentDate", _IMAGE, Instance.content_date, Matching.DATE),
    _key("ContentTime", _IMAGE, Instance.content_time, Matching.UNIVERSAL_ONLY),
)

_KEYS_BY_LEVEL: dict[QueryRetrieveLevel, dict[int, IndexedKey]] = {
    level: {key.tag: key for key in INDEXED_KEYS if key.level is level}
    for level in QueryRetrieveLevel
}


def find_indexed_key(tag: int, level: QueryRetrieveLevel) -> IndexedKey | None:
    """Return the column for ``tag`` in a query at ``level``, or None when none is indexed.

    The query's own level is searched first, then the levels above it, so that an
    attribute kept at several levels (Timezone Offset From UTC) comes from the nearest.
    """
    for candidate in sorted(QueryRetrieveLevel, reverse=True):
        if candidate > level:
            continue
        key = _KEYS_BY_LEVEL[candidate].get(tag)
        if key is not None:
            return key
    return None


def find_lower_level_key(tag: int, level: QueryRetrieveLevel) -> IndexedKey | None:
    """Return the key for ``tag`` at a level below ``level``, for a helpful error."""
    for candidate in QueryRetrieveLevel:
        if candidate > level and tag in _KEYS_BY_LEVEL[candidate]:
            return _KEYS_BY_LEVEL[candidate][tag]
    return None


def matchable_keywords(level: QueryRetrieveLevel) -> list[str]:
    """Return the keywords that a query at ``level`` can match on, sorted."""
    return sorted(
        {
            key.keyword
            for key in INDEXED_KEYS
            if key.level <= level and key.matching is not Matching.UNIVERSAL_ONLY
        }
    )
