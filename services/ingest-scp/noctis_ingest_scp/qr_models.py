"""The Query/Retrieve information models the SCP supports (PS3.4 C.6.1, C.6.2).

Patient Root has the levels PATIENT, STUDY, SERIES and IMAGE; Study Root starts at
STUDY and keeps the patient attributes with each study. Each level has one Unique Key.
"""

from __future__ import annotations

from enum import Enum

from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID

from noctis_common.query import QueryRetrieveLevel


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a keyword of pydicom's data dictionary")
    return tag


class Level(Enum):
    """A Query/Retrieve Level (0008,0052) with the Unique Key of its entity."""

    PATIENT = ("PATIENT", "PatientID")
    STUDY = ("STUDY", "StudyInstanceUID")
    SERIES = ("SERIES", "SeriesInstanceUID")
    IMAGE = ("IMAGE", "SOPInstanceUID")

    def __init__(self, term: str, unique_keyword: str) -> None:
        self.term = term
        self.unique_keyword = unique_keyword
        self.unique_tag = _tag(unique_keyword)

    @property
    def index_level(self) -> QueryRetrieveLevel | None:
        """Return the matching engine's level; None for PATIENT, which it runs apart."""
        if self is Level.PATIENT:
            return None
        return QueryRetrieveLevel[self.name]


class InformationModel(Enum):
    """A Query/Retrieve information model and its FIND, MOVE and GET SOP classes."""

    PATIENT_ROOT = (
        "Patient Root",
        (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
        UID("1.2.840.10008.5.1.4.1.2.1.1"),
        UID("1.2.840.10008.5.1.4.1.2.1.2"),
        UID("1.2.840.10008.5.1.4.1.2.1.3"),
    )
    STUDY_ROOT = (
        "Study Root",
        (Level.STUDY, Level.SERIES, Level.IMAGE),
        UID("1.2.840.10008.5.1.4.1.2.2.1"),
        UID("1.2.840.10008.5.1.4.1.2.2.2"),
        UID("1.2.840.10008.5.1.4.1.2.2.3"),
    )

    def __init__(
        self,
        title: str,
        levels: tuple[Level, ...],
        find_sop_class_uid: UID,
        move_sop_class_uid: UID,
        get_sop_class_uid: UID,
    ) -> None:
        self.title = title
        self.levels = levels
        self.find_sop_class_uid = find_sop_class_uid
        self.move_sop_class_uid = move_sop_class_uid
        self.get_sop_class_uid = get_sop_class_uid

    def levels_above(self, level: Level) -> tuple[Level, ...]:
        """Return the levels above ``level``, top first."""
        return self.levels[: self.levels.index(level)]

    def level_for_term(self, term: str) -> Level | None:
        """Return the level that a Query/Retrieve Level value names in this model."""
        for level in self.levels:
            if level.term == term:
                return level
        return None


def model_of_sop_class(sop_class_uid: str) -> InformationModel | None:
    """Return the information model of a FIND, MOVE or GET SOP Class UID."""
    for model in InformationModel:
        if sop_class_uid in (
            model.find_sop_class_uid,
            model.move_sop_class_uid,
            model.get_sop_class_uid,
        ):
            return model
    return None


FIND_SOP_CLASS_UIDS = tuple(model.find_sop_class_uid for model in InformationModel)
MOVE_SOP_CLASS_UIDS = tuple(model.move_sop_class_uid for model in InformationModel)
GET_SOP_CLASS_UIDS = tuple(model.get_sop_class_uid for model in InformationModel)
QUERY_RETRIEVE_SOP_CLASS_UIDS = FIND_SOP_CLASS_UIDS + MOVE_SOP_CLASS_UIDS + GET_SOP_CLASS_UIDS
