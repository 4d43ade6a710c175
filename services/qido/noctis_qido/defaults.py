"""The target resources of QIDO-RS and the attributes each returns by default.

The default attributes follow PS3.18 tables 10.6.3-3 (studies), 10.6.3-4 (series) and
10.6.3-5 (instances). Results of All Series also carry the study defaults, results of
All Instances the study and series defaults, and results of a Study's Instances the
series defaults (PS3.18 10.6.3.3.2 and 10.6.3.3.3). Beyond the tables, Noctis returns
the UIDs of the parent study and series, and Study Description, Series Date and Series
Time, which viewers list and the index contains at no extra cost.
"""

from __future__ import annotations

from enum import Enum

from pydicom.datadict import tag_for_keyword

from noctis_common.query import QueryRetrieveLevel


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a keyword of pydicom's data dictionary")
        tags.add(tag)
    return frozenset(tags)


RETRIEVE_URL_TAG = 0x00081190
SPECIFIC_CHARACTER_SET_TAG = 0x00080005
STUDY_INSTANCE_UID_TAG = 0x0020000D
SERIES_INSTANCE_UID_TAG = 0x0020000E

STUDY_DEFAULTS = _tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "StudyDescription",
)

SERIES_DEFAULTS = _tags(
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "StudyInstanceUID",
    "SeriesDate",
    "SeriesTime",
)

INSTANCE_DEFAULTS = _tags(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)

# Defaults that the tables return only "if known", and the extras above: a result
# leaves them out instead of sending them empty, unless the request names them.
RETURNED_IF_KNOWN = _tags(
    "TimezoneOffsetFromUTC",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "StudyDescription",
    "SeriesDate",
    "SeriesTime",
)


class TargetResource(Enum):
    """A QIDO-RS target resource (PS3.18 10.6.1.1) with its level and default attributes."""

    ALL_STUDIES = ("studies", QueryRetrieveLevel.STUDY, STUDY_DEFAULTS)
    ALL_SERIES = ("series", QueryRetrieveLevel.SERIES, STUDY_DEFAULTS | SERIES_DEFAULTS)
    STUDY_SERIES = ("series of a study", QueryRetrieveLevel.SERIES, SERIES_DEFAULTS)
    ALL_INSTANCES = (
        "instances",
        QueryRetrieveLevel.IMAGE,
        STUDY_DEFAULTS | SERIES_DEFAULTS | INSTANCE_DEFAULTS,
    )
    STUDY_INSTANCES = (
        "instances of a study",
        QueryRetrieveLevel.IMAGE,
        SERIES_DEFAULTS | INSTANCE_DEFAULTS,
    )
    SERIES_INSTANCES = ("instances of a series", QueryRetrieveLevel.IMAGE, INSTANCE_DEFAULTS)

    def __init__(
        self, description: str, level: QueryRetrieveLevel, default_tags: frozenset[int]
    ) -> None:
        self.description = description
        self.level = level
        self.default_tags = default_tags
