"""Parsing of query key values into the forms that matching compares (PS3.4 C.2.2.2).

Nothing here touches the database. Each function turns the text of one key value
into literal parts and wild cards, a list of UIDs, an integer or an inclusive range of
fixed-width keys. An invalid value raises :class:`InvalidQueryError`, which names the
key and the value.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from enum import Enum

from noctis_common.query.errors import InvalidQueryError
from noctis_common.uids import InvalidUIDError, validate_uid

VALUE_DELIMITER = "\\"
UNIVERSAL_WILDCARD = "*"

# re.ASCII keeps \d to 0-9: DA, TM, DT and IS values are ASCII digits (PS3.5 table
# 6.2-1), and other Unicode digits would compare as strings above every stored value.
_DATE_PATTERN = re.compile(r"\d{8}", re.ASCII)
_TIME_PATTERN = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", re.ASCII)
_DATETIME_PATTERN = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", re.ASCII
)
_INTEGER_PATTERN = re.compile(r"[+-]?\d{1,10}", re.ASCII)

# The range of an IS value (PS3.5 table 6.2-1), which also covers every US value.
INTEGER_MIN = -(2**31)
INTEGER_MAX = 2**31 - 1

DATE_FORMS = "YYYYMMDD, or a range such as 20240101-20240131, -20240131 or 20240101-"
TIME_FORMS = "HH, HHMM, HHMMSS or HHMMSS.FFFFFF, or a range such as 0800-1200"
DATETIME_FORMS = "YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]], or a range of two such values"


class Wildcard(Enum):
    """A wild card of PS3.4 C.2.2.2.4."""

    ANY = "*"  # any sequence of characters, including none
    ONE = "?"  # exactly one character


PatternPart = str | Wildcard


def is_universal(value: str) -> bool:
    """Return whether ``value`` requests Universal Matching (C.2.2.2.3, C.2.2.2.4)."""
    return value in ("", UNIVERSAL_WILDCARD)


def has_wildcards(value: str) -> bool:
    return "*" in value or "?" in value


def split_values(value: str) -> list[str]:
    """Split a key value into its backslash-separated values."""
    return value.split(VALUE_DELIMITER)


def wildcard_pattern(value: str) -> list[PatternPart]:
    """Split ``value`` into runs of literal text and wild cards."""
    parts: list[PatternPart] = []
    literal = ""
    for character in value:
        if character in "*?":
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(Wildcard(character))
        else:
            literal += character
    if literal:
        parts.append(literal)
    return parts


def parse_uid_list(keyword: str, value: str) -> list[str]:
    """Return the UIDs of a Single Value or List of UID Matching value (C.2.2.2.2).

    QIDO-RS separates the UIDs of a list by commas (PS3.18 8.3.4.1) and C-FIND by
    backslashes; either is accepted because neither can occur inside a UID.
    """
    uids = []
    for text in re.split(r"[\\,]", value):
        try:
            uids.append(validate_uid(text.strip(), keyword))
        except InvalidUIDError as error:
            raise InvalidQueryError(
                f"{error}; give one UID or a list of UIDs separated by commas or backslashes"
            ) from error
    return uids


def parse_integer(keyword: str, value: str) -> int:
    """Return the integer of a Single Value Matching value for an IS or US key."""
    text = value.strip()
    if not _INTEGER_PATTERN.fullmatch(text):
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: {keyword} matches a single integer "
            "such as 3; wild cards, ranges and lists are not supported for it"
        )
    number = int(text)
    # The index keeps IS and US values in 32-bit columns, which PostgreSQL will not
    # compare with a larger parameter.
    if not INTEGER_MIN <= number <= INTEGER_MAX:
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: an IS or US value lies between "
            f"{INTEGER_MIN} and {INTEGER_MAX}"
        )
    return number


@dataclass(frozen=True)
class KeyRange:
    """An inclusive range of comparable key strings; None leaves that end open."""

    lower: str | None
    upper: str | None


def _split_range(keyword: str, value: str, forms: str) -> tuple[str, str] | None:
    """Return the two ends of a range value, or None when ``value`` is a single value."""
    if "-" not in value:
        return None
    lower, _, upper = value.partition("-")
    if "-" in upper or not (lower or upper):
        raise InvalidQueryError(f"invalid {keyword} range {value!r}; use {forms}")
    return lower, upper


def _checked_range(keyword: str, value: str, lower: str | None, upper: str | None) -> KeyRange:
    if lower is not None and upper is not None and lower > upper:
        raise InvalidQueryError(
            f"invalid {keyword} range {value!r}: the start is after the end; "
            "give the earlier value first"
        )
    return KeyRange(lower, upper)


def _date_key(keyword: str, value: str, text: str) -> str:
    if _DATE_PATTERN.fullmatch(text):
        try:
            date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            pass
        else:
            return text
    raise InvalidQueryError(
        f"invalid {keyword} value {value!r}: {text!r} is not a date; use {DATE_FORMS}"
    )


def parse_date_range(keyword: str, value: str) -> KeyRange:
    """Return the dates that a DA Single Value or Range Matching value covers (C.2.2.2.5)."""
    text = value.strip()
    ends = _split_range(keyword, text, DATE_FORMS)
    if ends is None:
        single = _date_key(keyword, value, text)
        return KeyRange(single, single)
    lower, upper = ends
    return _checked_range(
        keyword,
        value,
        _date_key(keyword, value, lower) if lower else None,
        _date_key(keyword, value, upper) if upper else None,
    )


def _time_key(keyword: str, value: str, text: str, *, ceiling: bool) -> str:
    """Return ``text`` as ``HHMMSS.FFFFFF``, filling missing digits up or down.

    A TM value names an interval as long as its precision: ``1030`` is every time
    from 10:30:00 to 10:30:59.999999. The start of a range and a single value take the
    first time of that interval, the end of a range takes the last.
    """
    match = _TIME_PATTERN.fullmatch(text.replace(":", ""))
    if match is None or (match.group(4) is not None and match.group(3) is None):
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: {text!r} is not a time; use {TIME_FORMS}"
        )
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: {text!r} is not a time of day; use {TIME_FORMS}"
        )
    fill = "9" if ceiling else "0"
    default_minutes = "59" if ceiling else "00"
    return (
        f"{hours}{minutes or default_minutes}{seconds or default_minutes}"
        f".{(fraction or '').ljust(6, fill)}"
    )


def parse_time_range(keyword: str, value: str) -> KeyRange:
    """Return the ``HHMMSS.FFFFFF`` keys that a TM value covers (C.2.2.2.1, C.2.2.2.5).

    A single value matches every time within its precision, so ``10`` matches 10:00
    to 10:59:59.999999.
    """
    text = value.strip()
    ends = _split_range(keyword, text, TIME_FORMS)
    if ends is None:
        return KeyRange(
            _time_key(keyword, value, text, ceiling=False),
            _time_key(keyword, value, text, ceiling=True),
        )
    lower, upper = ends
    return _checked_range(
        keyword,
        value,
        _time_key(keyword, value, lower, ceiling=False) if lower else None,
        _time_key(keyword, value, upper, ceiling=True) if upper else None,
    )


def _datetime_key(keyword: str, value: str, text: str, *, ceiling: bool) -> str:
    """Return a DT value as ``YYYYMMDDHHMMSS.FFFFFF``, filling missing parts up or down.

    Raises :class:`InvalidQueryError` for a value with a UTC offset suffix, which
    this index does not convert.
    """
    if "+" in text or "&" in text:
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: DT values with a UTC offset are not "
            f"supported in queries; use {DATETIME_FORMS}"
        )
    match = _DATETIME_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: {text!r} is not a date-time; use {DATETIME_FORMS}"
        )
    year, month, day, hours, minutes, seconds, fraction = match.groups()
    if fraction is not None and seconds is None:
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: {text!r} has a fraction without seconds; "
            f"use {DATETIME_FORMS}"
        )
    try:
        month_number = int(month or (12 if ceiling else 1))
        last_day = calendar.monthrange(int(year), month_number)[1]
        day_number = int(day or (last_day if ceiling else 1))
        date(int(year), month_number, day_number)
    except ValueError as error:
        raise InvalidQueryError(
            f"invalid {keyword} value {value!r}: {text!r} is not a date-time ({error})"
        ) from error
    time_text = _time_key(
        keyword,
        value,
        f"{hours or ('23' if ceiling else '00')}{minutes or ''}{seconds or ''}"
        + (f".{fraction}" if fraction else ""),
        ceiling=ceiling,
    )
    return f"{year}{month_number:02d}{day_number:02d}{time_text}"


def parse_datetime_range(keyword: str, value: str) -> KeyRange:
    """Return the ``YYYYMMDDHHMMSS.FFFFFF`` keys that a DT value covers (C.2.2.2.5)."""
    text = value.strip()
    ends = _split_range(keyword, text, DATETIME_FORMS)
    if ends is None:
        return KeyRange(
            _datetime_key(keyword, value, text, ceiling=False),
            _datetime_key(keyword, value, text, ceiling=True),
        )
    lower, upper = ends
    return _checked_range(
        keyword,
        value,
        _datetime_key(keyword, value, lower, ceiling=False) if lower else None,
        _datetime_key(keyword, value, upper, ceiling=True) if upper else None,
    )
