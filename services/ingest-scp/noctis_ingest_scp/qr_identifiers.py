"""Parsing of C-FIND, C-MOVE and C-GET request Identifiers (PS3.4 C.4.1.1.3, C.4.2.1.4).

A C-FIND Identifier becomes a query of the shared matching engine. Its keys are sorted
the way PS3.4 C.2.2.1.3 describes the support of Optional Keys:

- keys the index can match are matched;
- keys the archive can return but not match (not indexed, or indexed without a
  comparable form) have their value ignored and are returned;
- keys of a level below the query's level, private attributes and sequence values
  are not supported: they are neither matched nor returned.

Either of the last two makes the Pending responses carry 0xFF01 instead of 0xFF00.

Text values arrive decoded with the request's Specific Character Set: pydicom decodes
each value with the character set that the Identifier names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from noctis_common.query import (
    PATIENT_KEYS,
    InvalidQueryError,
    Matching,
    PatientQuery,
    Query,
    describe_tag,
    find_indexed_key,
    is_patient_level_tag,
    level_of_tag,
)
from noctis_common.query.values import VALUE_DELIMITER, has_wildcards, parse_uid_list
from noctis_ingest_scp.qr_models import InformationModel, Level
from noctis_ingest_scp.qr_statuses import IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword} is not a keyword of pydicom's data dictionary")
    return tag


SPECIFIC_CHARACTER_SET_TAG = _tag("SpecificCharacterSet")
QUERY_RETRIEVE_LEVEL_TAG = _tag("QueryRetrieveLevel")
QUERY_RETRIEVE_VIEW_TAG = _tag("QueryRetrieveView")
RETRIEVE_AE_TITLE_TAG = _tag("RetrieveAETitle")
INSTANCE_AVAILABILITY_TAG = _tag("InstanceAvailability")
TIMEZONE_OFFSET_FROM_UTC_TAG = _tag("TimezoneOffsetFromUTC")
# Attributes that a response carries whether or not the request names them.
RESPONSE_ONLY_TAGS = frozenset(
    {
        SPECIFIC_CHARACTER_SET_TAG,
        QUERY_RETRIEVE_LEVEL_TAG,
        RETRIEVE_AE_TITLE_TAG,
        INSTANCE_AVAILABILITY_TAG,
    }
)
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


class IdentifierError(ValueError):
    """An Identifier that the SCP cannot process; ``status`` is the failure to send.

    The message fits the 64 characters of an Error Comment where it can, and quotes no
    Patient ID, so that it may be logged.
    """

    def __init__(self, message: str, status: int = IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def read_level(identifier: Dataset, model: InformationModel) -> Level:
    """Return the Query/Retrieve Level of ``identifier``, or raise :class:`IdentifierError`."""
    term = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    allowed = ", ".join(candidate.term for candidate in model.levels)
    if not term:
        raise IdentifierError(f"QueryRetrieveLevel is missing; give one of {allowed}")
    level = model.level_for_term(term)
    if level is None:
        raise IdentifierError(f"{term!r} is not a {model.title} level; use {allowed}")
    return level


def key_value(element: DataElement) -> str | None:
    """Return the value of a key as query text, or None when it cannot be matched.

    Multiple values are joined by backslashes. An empty value, an empty sequence or a
    sequence of one empty item requests Universal Matching and gives ``""``. Other
    sequences and binary values give None because they cannot be matched here.
    """
    if element.VR == "SQ":
        items = element.value if isinstance(element.value, Sequence) else []
        if not items or (len(items) == 1 and len(items[0]) == 0):
            return ""
        return None
    value = element.value
    if value is None:
        return ""
    if element.VR in BINARY_VRS:
        return "" if len(value) == 0 else None
    if isinstance(value, MultiValue | list | tuple):
        return VALUE_DELIMITER.join(str(item) for item in value)
    return str(value)


def _elements(identifier: Dataset) -> Iterable[DataElement]:
    for tag in identifier.keys():  # noqa: SIM118 (iterating a Dataset yields elements)
        try:
            yield identifier[tag]
        except Exception as error:  # pydicom raises several types on malformed values
            raise IdentifierError(
                f"the value of {describe_tag(int(tag))} cannot be decoded: {error}"
            ) from error


def _single_value(level: Level, upper: Level, value: str | None) -> str:
    """Return the Unique Key value of an upper level, which must be one value."""
    text = (value or "").strip()
    if not text or VALUE_DELIMITER in text or has_wildcards(text):
        # Hierarchical Search (PS3.4 C.4.1.2.1) needs a single value for the Unique Key
        # of each level above the query's level.
        raise IdentifierError(
            f"{upper.unique_keyword} must be one value without wild cards in a {level.term} query"
        )
    return text


@dataclass(frozen=True)
class FindRequest:
    """A parsed C-FIND Identifier: what the engine matches and what the response carries."""

    model: InformationModel
    level: Level
    # (tag, value) pairs for the engine, in DICOM query syntax.
    match_keys: tuple[tuple[int, str], ...]
    # Every attribute the responses carry from the index or the stored metadata.
    return_tags: frozenset[int]
    # Keys whose value was ignored because the archive cannot match them.
    unmatched_keywords: tuple[str, ...] = ()
    # Keys that the archive does not return at this level.
    unsupported_keywords: tuple[str, ...] = ()

    @property
    def all_keys_supported(self) -> bool:
        """Return whether every key was supported in the same manner as a Required Key."""
        return not self.unmatched_keywords and not self.unsupported_keywords

    def query(self, offset: int, limit: int) -> Query:
        """Return one page of the engine query for a STUDY, SERIES or IMAGE level request."""
        index_level = self.level.index_level
        if index_level is None:
            raise ValueError("a PATIENT level request runs through patient_query()")
        return Query(
            level=index_level,
            match_keys=self.match_keys,
            return_tags=self.return_tags,
            offset=offset,
            limit=limit,
        )

    def patient_query(self, offset: int, limit: int) -> PatientQuery:
        """Return one page of the patient query for a PATIENT level request."""
        return PatientQuery(
            match_keys=self.match_keys, return_tags=self.return_tags, offset=offset, limit=limit
        )


def _can_return(tag: int, level: Level) -> bool:
    """Return whether a response at ``level`` can carry the attribute ``tag``."""
    group = tag >> 16
    if group % 2 == 1 or group < 0x0008:
        return False  # private attributes, and command or file meta elements
    if tag == QUERY_RETRIEVE_VIEW_TAG:
        return False  # Enhanced Multi-Frame Image Conversion is not negotiated
    if level is Level.PATIENT:
        return is_patient_level_tag(tag)
    index_level = level.index_level
    return index_level is not None and level_of_tag(tag) <= index_level


def _can_match(tag: int, level: Level) -> bool:
    if tag == TIMEZONE_OFFSET_FROM_UTC_TAG:
        return False  # timezone query adjustment is not negotiated, so it is never matched
    if level is Level.PATIENT:
        return tag in PATIENT_KEYS
    index_level = level.index_level
    if index_level is None:
        return False
    key = find_indexed_key(tag, index_level)
    return key is not None and key.matching is not Matching.UNIVERSAL_ONLY


def parse_find_identifier(identifier: Dataset, model: InformationModel) -> FindRequest:
    """Parse a C-FIND request Identifier (PS3.4 C.4.1.1.3.1) of ``model``.

    Raises :class:`IdentifierError` when the Query/Retrieve Level is missing or not in
    the model, or when a Unique Key of a level above the query's level is missing or
    not a single value, as the Hierarchical Search requires (PS3.4 C.4.1.2.1).
    """
    level = read_level(identifier, model)
    match_keys: list[tuple[int, str]] = []
    return_tags: set[int] = set()
    unmatched: list[str] = []
    unsupported: list[str] = []
    values: dict[int, str | None] = {}
    for element in _elements(identifier):
        tag = int(element.tag)
        if tag in RESPONSE_ONLY_TAGS:
            continue
        values[tag] = key_value(element)
        if not _can_return(tag, level):
            unsupported.append(describe_tag(tag))
            continue
        return_tags.add(tag)
        value = values[tag]
        if value is None or not value.strip():
            if value is None:
                unmatched.append(describe_tag(tag))
            continue
        if _can_match(tag, level):
            match_keys.append((tag, value))
        elif tag != TIMEZONE_OFFSET_FROM_UTC_TAG:
            unmatched.append(describe_tag(tag))

    for upper in model.levels_above(level):
        unique_value = _single_value(level, upper, values.get(upper.unique_tag))
        match_keys = [key for key in match_keys if key[0] != upper.unique_tag]
        match_keys.append((upper.unique_tag, unique_value))
        return_tags.add(upper.unique_tag)
    return FindRequest(
        model=model,
        level=level,
        match_keys=tuple(match_keys),
        return_tags=frozenset(return_tags),
        unmatched_keywords=tuple(unmatched),
        unsupported_keywords=tuple(unsupported),
    )


@dataclass(frozen=True)
class RetrieveRequest:
    """The entities a C-MOVE or C-GET Identifier selects, by Unique Key.

    An empty tuple leaves that level unconstrained.
    """

    model: InformationModel
    level: Level
    patient_id: str | None
    study_instance_uids: tuple[str, ...] = ()
    series_instance_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()


def _uid_list(identifier: Dataset, level: Level, *, required: bool) -> tuple[str, ...]:
    element = identifier.get(level.unique_tag)
    text = key_value(element) if element is not None else ""
    if not (text or "").strip():
        if required:
            raise IdentifierError(
                f"a {level.term} retrieval needs {level.unique_keyword}: one UID or a list"
            )
        return ()
    try:
        return tuple(parse_uid_list(level.unique_keyword, text or ""))
    except InvalidQueryError as error:
        raise IdentifierError(str(error)) from error


def parse_retrieve_identifier(identifier: Dataset, model: InformationModel) -> RetrieveRequest:
    """Parse a C-MOVE or C-GET request Identifier (PS3.4 C.4.2.1.4.1, C.4.3.1.3.1).

    The Unique Key of the retrieval's level is required: one Patient ID at PATIENT
    level, one UID or a list of UIDs below. Unique Keys of the levels above narrow the
    selection when present; when absent, the retrieval works as Relational-Retrieve
    (PS3.4 C.4.2.2.2.1) without that extended negotiation. Other keys are ignored.
    Raises :class:`IdentifierError` for a missing or invalid Unique Key.
    """
    level = read_level(identifier, model)
    patient_id: str | None = None
    if Level.PATIENT in model.levels:
        element = identifier.get(Level.PATIENT.unique_tag)
        text = (key_value(element) or "").strip() if element is not None else ""
        if level is Level.PATIENT and not text:
            raise IdentifierError("a PATIENT retrieval needs one PatientID value")
        if text:
            if VALUE_DELIMITER in text or has_wildcards(text):
                raise IdentifierError("PatientID must be one value without wild cards")
            patient_id = text
    return RetrieveRequest(
        model=model,
        level=level,
        patient_id=patient_id,
        study_instance_uids=(
            _uid_list(identifier, Level.STUDY, required=level is Level.STUDY)
            if level is not Level.PATIENT
            else ()
        ),
        series_instance_uids=(
            _uid_list(identifier, Level.SERIES, required=level is Level.SERIES)
            if level in (Level.SERIES, Level.IMAGE)
            else ()
        ),
        sop_instance_uids=(
            _uid_list(identifier, Level.IMAGE, required=True) if level is Level.IMAGE else ()
        ),
    )
