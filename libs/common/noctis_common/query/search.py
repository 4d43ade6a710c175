"""Running a query against the index: one SQL statement per page of matches.

A :class:`Query` defines what to match (PS3.4 C.2.2.2) and what to return. Returned
attributes come from index columns where the index has them. Other attributes come
from the stored DICOM JSON metadata of one instance: the instance itself for an
instance-level query, and the first stored instance of the study or series for the
levels above. Those metadata are read in at most one more statement per page, never
per match.

Matches are returned in a stable order, so that offset and limit page through them:

- studies: Study Date, then Study Time, newest first; then the order of indexing,
  newest first;
- series: in the order of their studies, then by Series Number (series without one
  last), then in the order of indexing;
- instances: in the order of their series, then by Instance Number (instances without
  one last), then in the order of indexing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import keyword_for_tag
from sqlalchemy import ColumnElement, Select, UnaryExpression, func, select
from sqlalchemy.orm import Session, defer

from noctis_common.db.models import Instance, Series, Study
from noctis_common.query.conditions import MatchOptions, match_condition
from noctis_common.query.errors import InvalidQueryError
from noctis_common.query.keys import (
    IndexedKey,
    find_indexed_key,
    find_lower_level_key,
    matchable_keywords,
)
from noctis_common.query.levels import QueryRetrieveLevel, level_of_tag
from noctis_common.query.results import empty_element, index_element, json_key
from noctis_common.query.values import is_universal

INSTANCE_AVAILABILITY_TAG = 0x00080056
MODALITY_TAG = 0x00080060
SPECIFIC_CHARACTER_SET_TAG = 0x00080005
# Every indexed instance is in the object store, which serves it at once.
INSTANCE_AVAILABILITY_ONLINE = "ONLINE"


@dataclass(frozen=True)
class Query:
    """A query at one level of the Study Root information model.

    ``match_keys`` are (tag, value) pairs as text in DICOM's query syntax; a tag may
    appear more than once, and then every value must match. Match keys are returned
    too, as are ``return_tags``. With ``include_all_of_level`` every attribute of the
    query's level that the stored metadata contain is returned as well.

    Specific Character Set (0008,0005) is never matched (PS3.4 C.2.2.2) nor returned:
    the values here are Unicode, and the protocol that encodes them names the character
    set.
    """

    level: QueryRetrieveLevel
    match_keys: tuple[tuple[int, str], ...] = ()
    return_tags: frozenset[int] = frozenset()
    include_all_of_level: bool = False
    fuzzy_matching: bool = False
    multiple_value_matching: bool = False
    offset: int = 0
    limit: int | None = None
    # Conditions on the index tables that every match must also meet, such as the
    # referring physician restriction of noctis_common.auth_restrictions.
    extra_conditions: tuple[ColumnElement[bool], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class InstanceReference:
    """The UIDs that locate one stored instance."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


@dataclass
class QueryMatch:
    """One matching study, series or instance and its returned attributes."""

    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None
    # DICOM JSON elements by their eight-digit hex tag, in no particular order.
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The instance whose stored metadata supplied attributes; its relative BulkDataURIs
    # resolve against that instance.
    metadata_source: InstanceReference | None = None


@dataclass
class QueryPage:
    """The matches of one page, and whether more follow it."""

    matches: list[QueryMatch]
    more_matches: bool


@dataclass
class _Plan:
    """The conditions of a query and where each returned attribute comes from."""

    conditions: list[ColumnElement[bool]]
    index_keys: dict[int, IndexedKey]
    metadata_tags: set[int]
    include_computed_availability: bool
    include_all_of_level: bool

    @property
    def needs_metadata(self) -> bool:
        return bool(self.metadata_tags) or self.include_all_of_level


def describe_tag(tag: int) -> str:
    """Return the keyword of ``tag``, or its ``(gggg,eeee)`` form when it has none."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _unmatchable_key_error(tag: int, value: str, level: QueryRetrieveLevel) -> InvalidQueryError:
    name = describe_tag(tag)
    level_name = level.name.lower()
    lower_key = find_lower_level_key(tag, level)
    if lower_key is not None:
        reason = (
            f"{name} is a {lower_key.level.name.lower()}-level attribute and a "
            f"{level_name}-level query cannot match it"
        )
        if tag == MODALITY_TAG:
            reason += "; match ModalitiesInStudy to find studies by the modality of a series"
    else:
        reason = f"the index keeps no {name} to compare at the {level_name} level or above"
    return InvalidQueryError(
        f"cannot match {name}={value!r}: {reason}. Keys that a {level_name}-level query "
        f"can match: {', '.join(matchable_keywords(level))}. Any other attribute can be "
        "returned by giving it an empty value"
    )


def _plan(query: Query, dialect_name: str) -> _Plan:
    options = MatchOptions(
        dialect_name=dialect_name,
        fuzzy_matching=query.fuzzy_matching,
        multiple_value_matching=query.multiple_value_matching,
    )
    conditions = list(query.extra_conditions)
    returned = set(query.return_tags)
    for tag, value in query.match_keys:
        if tag == SPECIFIC_CHARACTER_SET_TAG:
            continue
        returned.add(tag)
        if is_universal(value.strip()):
            continue
        key = find_indexed_key(tag, query.level)
        if key is None:
            raise _unmatchable_key_error(tag, value, query.level)
        condition = match_condition(key, value, options)
        if condition is not None:
            conditions.append(condition)

    returned.discard(SPECIFIC_CHARACTER_SET_TAG)
    include_availability = INSTANCE_AVAILABILITY_TAG in returned
    returned.discard(INSTANCE_AVAILABILITY_TAG)
    index_keys = {}
    metadata_tags = set()
    for tag in returned:
        key = find_indexed_key(tag, query.level)
        if key is not None:
            index_keys[tag] = key
        else:
            metadata_tags.add(tag)
    return _Plan(
        conditions, index_keys, metadata_tags, include_availability, query.include_all_of_level
    )


def _select_page(query: Query, plan: _Plan) -> Select[*tuple[Any, ...]]:
    study_order: list[UnaryExpression[Any]] = [
        Study.study_date.desc(),
        Study.study_time_key.desc(),
        Study.id.desc(),
    ]
    series_order: list[UnaryExpression[Any]] = [
        Series.series_number.asc().nulls_last(),
        Series.id.asc(),
    ]
    statement: Select[*tuple[Any, ...]]
    if query.level is QueryRetrieveLevel.STUDY:
        statement = select(Study).order_by(*study_order)
    elif query.level is QueryRetrieveLevel.SERIES:
        statement = (
            select(Series, Study)
            .join(Study, Series.study_fk == Study.id)
            .order_by(*study_order, *series_order)
        )
    else:
        statement = (
            select(Instance, Series, Study)
            .join(Series, Instance.series_fk == Series.id)
            .join(Study, Instance.study_fk == Study.id)
            .order_by(
                *study_order,
                *series_order,
                Instance.instance_number.asc().nulls_last(),
                Instance.id.asc(),
            )
        )
        if not plan.needs_metadata:
            statement = statement.options(defer(Instance.metadata_json))
    statement = statement.where(*plan.conditions)
    if query.offset:
        statement = statement.offset(query.offset)
    if query.limit is not None:
        # Reading one row more than requested shows whether more matches follow this page.
        statement = statement.limit(query.limit + 1)
    return statement


def _first_instance_metadata(
    session: Session, level: QueryRetrieveLevel, parent_ids: Sequence[int]
) -> dict[int, tuple[str, InstanceReference]]:
    """Return, by study or series id, the metadata of its first stored instance."""
    parent_column = Instance.study_fk if level is QueryRetrieveLevel.STUDY else Instance.series_fk
    first_instances = (
        select(func.min(Instance.id)).where(parent_column.in_(parent_ids)).group_by(parent_column)
    )
    rows = session.execute(
        select(
            parent_column,
            Instance.metadata_json,
            Instance.sop_instance_uid,
            Series.series_instance_uid,
            Study.study_instance_uid,
        )
        .join(Series, Instance.series_fk == Series.id)
        .join(Study, Instance.study_fk == Study.id)
        .where(Instance.id.in_(first_instances))
    )
    return {
        parent_id: (
            metadata_json,
            InstanceReference(study_instance_uid, series_instance_uid, sop_instance_uid),
        )
        for parent_id, metadata_json, sop_instance_uid, series_instance_uid, study_instance_uid in (
            rows
        )
    }


def _add_metadata_attributes(
    match: QueryMatch,
    plan: _Plan,
    level: QueryRetrieveLevel,
    metadata_json: str,
    source: InstanceReference,
) -> None:
    metadata: dict[str, dict[str, Any]] = json.loads(metadata_json)
    match.metadata_source = source
    for tag in plan.metadata_tags:
        name = json_key(tag)
        if name in metadata:
            match.attributes[name] = metadata[name]
    if plan.include_all_of_level:
        for name, element in metadata.items():
            if name not in match.attributes and level_of_tag(int(name, 16)) is level:
                match.attributes[name] = element


def _build_match(query: Query, plan: _Plan, row: Sequence[Any]) -> QueryMatch:
    study: Study
    series: Series | None = None
    instance: Instance | None = None
    if query.level is QueryRetrieveLevel.STUDY:
        (study,) = row
    elif query.level is QueryRetrieveLevel.SERIES:
        series, study = row
    else:
        instance, series, study = row
    entities: dict[QueryRetrieveLevel, Any] = {
        QueryRetrieveLevel.STUDY: study,
        QueryRetrieveLevel.SERIES: series,
        QueryRetrieveLevel.IMAGE: instance,
    }
    match = QueryMatch(
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid if series is not None else None,
        sop_instance_uid=instance.sop_instance_uid if instance is not None else None,
    )
    for tag in plan.metadata_tags:
        match.attributes[json_key(tag)] = empty_element(tag)
    for tag, key in plan.index_keys.items():
        value = getattr(entities[key.level], key.column.key)
        match.attributes[json_key(tag)] = index_element(key, value)
    if plan.include_computed_availability:
        match.attributes[json_key(INSTANCE_AVAILABILITY_TAG)] = {
            "vr": "CS",
            "Value": [INSTANCE_AVAILABILITY_ONLINE],
        }
    return match


def find_matches(session: Session, query: Query) -> QueryPage:
    """Return the page of matches that ``query`` selects, with its returned attributes.

    Raises :class:`InvalidQueryError` when a key cannot be matched at the query's
    level or a value is invalid for its VR. Runs one SELECT for the matches and, when
    some returned attribute is not indexed, one more for the stored metadata.
    """
    plan = _plan(query, session.get_bind().dialect.name)
    rows = list(session.execute(_select_page(query, plan)).all())
    more_matches = query.limit is not None and len(rows) > query.limit
    if more_matches:
        rows = rows[: query.limit]
    matches = [_build_match(query, plan, row) for row in rows]
    if not plan.needs_metadata or not matches:
        return QueryPage(matches, more_matches)

    if query.level is QueryRetrieveLevel.IMAGE:
        for match, (instance, series, study) in zip(matches, rows, strict=True):
            source = InstanceReference(
                study.study_instance_uid, series.series_instance_uid, instance.sop_instance_uid
            )
            _add_metadata_attributes(match, plan, query.level, instance.metadata_json, source)
        return QueryPage(matches, more_matches)

    parent_ids = [row[0].id for row in rows]
    metadata_by_parent = _first_instance_metadata(session, query.level, parent_ids)
    for match, parent_id in zip(matches, parent_ids, strict=True):
        found = metadata_by_parent.get(parent_id)
        if found is not None:
            _add_metadata_attributes(match, plan, query.level, *found)
    return QueryPage(matches, more_matches)
