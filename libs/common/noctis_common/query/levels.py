"""Query/Retrieve levels and the level each attribute belongs to (PS3.4 C.6.1, C.6.2).

The Study Root information model has three levels. Patient attributes count as study
attributes, as in QIDO-RS. Attributes that the PS3.4 key tables do not list take the
level of the information entity whose module defines them in PS3.3. The Patient,
General Study and Patient Study modules are study level. The General Series, Frame of
Reference and General Equipment modules are series level. Everything else is instance
level.
"""

from __future__ import annotations

from enum import IntEnum

from pydicom.datadict import tag_for_keyword

PATIENT_GROUP = 0x0010


class QueryRetrieveLevel(IntEnum):
    """A level of the Study Root model; a higher value is a level further down.

    The names are the defined terms of Query/Retrieve Level (0008,0052).
    """

    STUDY = 1
    SERIES = 2
    IMAGE = 3


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a keyword of pydicom's data dictionary")
        tags.add(tag)
    return frozenset(tags)


# Attributes of the General Study and Patient Study modules and the study-level query
# keys; the Patient module's attributes are all in group 0010.
STUDY_LEVEL_TAGS = _tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence",
    "StudyDescription",
    "ProcedureCodeSequence",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "ReferencedStudySequence",
    "RequestingServiceCodeSequence",
    "StudyInstanceUID",
    "StudyID",
    "OtherStudyNumbers",
    "ModalitiesInStudy",
    "SOPClassesInStudy",
    "AnatomicRegionsInStudyCodeSequence",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "ReasonForVisit",
    "ReasonForVisitCodeSequence",
    "ServiceEpisodeID",
    "ServiceEpisodeDescription",
    "IssuerOfServiceEpisodeIDSequence",
    "ReasonForPerformedProcedureCodeSequence",
)

# Attributes of the General Series, Frame of Reference and General Equipment modules
# and the series-level query keys.
SERIES_LEVEL_TAGS = _tags(
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDescriptionCodeSequence",
    "SeriesDate",
    "SeriesTime",
    "Laterality",
    "BodyPartExamined",
    "PatientPosition",
    "ProtocolName",
    "OperatorsName",
    "OperatorIdentificationSequence",
    "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence",
    "ReferencedPerformedProcedureStepSequence",
    "RelatedSeriesSequence",
    "AnatomicalOrientationType",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "RequestAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime",
    "PerformedProcedureStepDescription",
    "PerformedProtocolCodeSequence",
    "CommentsOnThePerformedProcedureStep",
    "NumberOfSeriesRelatedInstances",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "DateOfLastCalibration",
    "TimeOfLastCalibration",
)


def level_of_tag(tag: int) -> QueryRetrieveLevel:
    """Return the level whose entity an attribute describes; unknown tags are instance level."""
    if tag >> 16 == PATIENT_GROUP or tag in STUDY_LEVEL_TAGS:
        return QueryRetrieveLevel.STUDY
    if tag in SERIES_LEVEL_TAGS:
        return QueryRetrieveLevel.SERIES
    return QueryRetrieveLevel.IMAGE
