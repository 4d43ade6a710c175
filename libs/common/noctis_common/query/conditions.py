"""SQL conditions for the matching types of PS3.4 C.2.2.2, one per indexed key.

Wild Card Matching is case-sensitive (C.2.2.2.4). PostgreSQL's LIKE is, SQLite's is not
for ASCII letters, so SQLite compares with GLOB instead. Person names are compared in
their casefolded search form, which makes their matching case-insensitive on both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, literal, or_
from sqlalchemy.orm import InstrumentedAttribute

from noctis_common.query.errors import InvalidQueryError
from noctis_common.query.keys import IndexedKey, Matching
from noctis_common.query.values import (
    VALUE_DELIMITER,
    KeyRange,
    PatternPart,
    Wildcard,
    has_wildcards,
    is_universal,
    parse_date_range,
    parse_integer,
    parse_time_range,
    parse_uid_list,
    split_values,
    wildcard_pattern,
)

LIKE_ESCAPE = "\\"
PERSON_NAME_GROUP_DELIMITER = "="
ColumnExpression = ColumnElement[Any] | InstrumentedAttribute[Any]
# Separators between the words of a person name that fuzzy matching compares: component
# delimiter, component group delimiter and space.
_PERSON_NAME_WORD_SEPARATORS = re.compile(r"[\^= ]+")


@dataclass(frozen=True)
class MatchOptions:
    """Matching switches of one query and the SQL dialect it runs on."""

    dialect_name: str
    fuzzy_matching: bool = False
    multiple_value_matching: bool = False


def like_pattern(parts: list[PatternPart]) -> str:
    """Return a LIKE pattern, escaping ``%``, ``_`` and the escape character in literals."""
    pattern = ""
    for part in parts:
        if part is Wildcard.ANY:
            pattern += "%"
        elif part is Wildcard.ONE:
            pattern += "_"
        else:
            for character in str(part):
                if character in (LIKE_ESCAPE, "%", "_"):
                    pattern += LIKE_ESCAPE
                pattern += character
    return pattern


def glob_pattern(parts: list[PatternPart]) -> str:
    """Return a SQLite GLOB pattern; literal ``*``, ``?`` and ``[`` become bracket sets."""
    pattern = ""
    for part in parts:
        if part is Wildcard.ANY:
            pattern += "*"
        elif part is Wildcard.ONE:
            pattern += "?"
        else:
            for character in str(part):
                pattern += f"[{character}]" if character in "*?[" else character
    return pattern


def wildcard_condition(
    expression: ColumnExpression, parts: list[PatternPart], dialect_name: str
) -> ColumnElement[bool]:
    """Return a case-sensitive pattern match of ``expression`` against ``parts``."""
    if dialect_name == "sqlite":
        return expression.op("GLOB", is_comparison=True)(glob_pattern(parts))
    return expression.like(like_pattern(parts), escape=LIKE_ESCAPE)


def _text_literal(text: str) -> ColumnElement[str]:
    return literal(text, String())


def _range_condition(column: ColumnExpression, key_range: KeyRange) -> ColumnElement[bool]:
    """Return Range Matching over fixed-width keys; empty values never match a range."""
    if key_range.lower is not None and key_range.lower == key_range.upper:
        return column == key_range.lower
    conditions = [column != ""]
    if key_range.lower is not None:
        conditions.append(column >= key_range.lower)
    if key_range.upper is not None:
        conditions.append(column <= key_range.upper)
    return and_(*conditions)


def _text_condition(
    key: IndexedKey, value: str, options: MatchOptions
) -> ColumnElement[bool] | None:
    """Single Value (C.2.2.2.1) or Wild Card Matching (C.2.2.2.4); a list matches any value."""
    conditions = []
    for item in split_values(value):
        text = item.strip()
        if is_universal(text):
            return None
        if has_wildcards(text):
            parts = wildcard_pattern(text)
            conditions.append(wildcard_condition(key.column, parts, options.dialect_name))
        else:
            conditions.append(key.column == text)
    return or_(*conditions)


def _person_name_condition(
    key: IndexedKey, value: str, options: MatchOptions
) -> ColumnElement[bool] | None:
    """Case-insensitive matching of a person name against each of its component groups.

    Without fuzzy matching, a query value matches when it equals, or matches as a wild
    card pattern, one component group of the stored name (its alphabetic, ideographic
    or phonetic form) or several adjacent groups joined by ``=``.
    """
    conditions = []
    for item in split_values(value):
        text = item.strip().casefold()
        if is_universal(text):
            return None
        if options.fuzzy_matching:
            conditions.append(_fuzzy_person_name_condition(key, text, options))
            continue
        stored = (
            _text_literal(PERSON_NAME_GROUP_DELIMITER)
            + key.compared_column
            + _text_literal(PERSON_NAME_GROUP_DELIMITER)
        )
        parts: list[PatternPart] = [
            Wildcard.ANY,
            PERSON_NAME_GROUP_DELIMITER,
            *wildcard_pattern(text),
            PERSON_NAME_GROUP_DELIMITER,
            Wildcard.ANY,
        ]
        conditions.append(wildcard_condition(stored, parts, options.dialect_name))
    return or_(*conditions)


def _fuzzy_person_name_condition(
    key: IndexedKey, text: str, options: MatchOptions
) -> ColumnElement[bool]:
    """Fuzzy semantic matching of person names, as this archive defines it.

    The query and the stored name are split into words at ``^``, ``=`` and spaces. The
    name matches when every query word is the start of some word of the name, without
    regard to case or word order, so ``jan doe`` and ``DOE^J`` both match ``Doe^Jane``.
    Wild cards keep their meaning inside a query word.
    """
    words_of_name = _text_literal(" ") + func.replace(
        func.replace(key.compared_column, "^", " ", type_=String()),
        PERSON_NAME_GROUP_DELIMITER,
        " ",
        type_=String(),
    )
    conditions = []
    for word in _PERSON_NAME_WORD_SEPARATORS.split(text):
        if not word:
            continue
        parts: list[PatternPart] = [Wildcard.ANY, " ", *wildcard_pattern(word), Wildcard.ANY]
        conditions.append(wildcard_condition(words_of_name, parts, options.dialect_name))
    return and_(*conditions)


def _code_list_condition(
    key: IndexedKey, value: str, options: MatchOptions
) -> ColumnElement[bool] | None:
    """Match a value of a multi-valued column such as Modalities in Study.

    The column contains backslash-separated values. One query value matches a study when
    any stored value equals it or matches it as a wild card pattern. Several query
    values match when any of them does, or, with Multiple Value Matching
    (C.2.2.2.8), only when every one of them does.
    """
    stored = _text_literal(VALUE_DELIMITER) + key.column + _text_literal(VALUE_DELIMITER)
    conditions = []
    for item in split_values(value):
        text = item.strip()
        if not text:
            continue
        parts: list[PatternPart] = [
            Wildcard.ANY,
            VALUE_DELIMITER,
            *wildcard_pattern(text),
            VALUE_DELIMITER,
            Wildcard.ANY,
        ]
        conditions.append(wildcard_condition(stored, parts, options.dialect_name))
    if not conditions:
        return None
    return and_(*conditions) if options.multiple_value_matching else or_(*conditions)


def match_condition(
    key: IndexedKey, value: str, options: MatchOptions
) -> ColumnElement[bool] | None:
    """Return the WHERE condition for matching ``key`` against ``value``.

    Returns None for Universal Matching (an empty value or ``*``), which matches every
    entity. Raises :class:`InvalidQueryError` for a value the key's VR does not allow.
    """
    if is_universal(value.strip()):
        return None
    if key.matching is Matching.UNIVERSAL_ONLY:
        raise InvalidQueryError(
            f"{key.keyword} cannot be matched against {value!r}: the index returns it but "
            f"keeps no form to compare; give {key.keyword} an empty value to have it "
            "returned"
        )
    if key.matching is Matching.UID:
        uids = parse_uid_list(key.keyword, value)
        return key.column == uids[0] if len(uids) == 1 else key.column.in_(uids)
    if key.matching is Matching.INTEGER:
        return key.column == parse_integer(key.keyword, value)
    if key.matching is Matching.DATE:
        return _range_condition(key.column, parse_date_range(key.keyword, value))
    if key.matching is Matching.TIME:
        return _range_condition(key.compared_column, parse_time_range(key.keyword, value))
    if key.matching is Matching.PERSON_NAME:
        return _person_name_condition(key, value, options)
    if key.matching is Matching.CODE_LIST:
        return _code_list_condition(key, value, options)
    return _text_condition(key, value, options)
