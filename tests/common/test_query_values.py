"""Query value parsing, SQL pattern escaping and the key tables of the matching engine."""

from __future__ import annotations

import pytest
from pydicom.datadict import tag_for_keyword

from noctis_common.db.models import Series, Study
from noctis_common.query import InvalidQueryError, QueryRetrieveLevel, level_of_tag
from noctis_common.query.conditions import glob_pattern, like_pattern
from noctis_common.query.keys import find_indexed_key, matchable_keywords
from noctis_common.query.values import (
    KeyRange,
    Wildcard,
    parse_date_range,
    parse_datetime_range,
    parse_integer,
    parse_time_range,
    parse_uid_list,
    wildcard_pattern,
)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag


def test_wildcard_pattern_splits_literals_and_wildcards() -> None:
    assert wildcard_pattern("Doe*J?ne") == ["Doe", Wildcard.ANY, "J", Wildcard.ONE, "ne"]
    assert wildcard_pattern("**") == [Wildcard.ANY, Wildcard.ANY]


def test_like_pattern_escapes_special_characters() -> None:
    parts = wildcard_pattern("50%_off\\*")

    assert like_pattern(parts) == "50\\%\\_off\\\\%"


def test_glob_pattern_brackets_special_characters() -> None:
    assert glob_pattern(["a*b?c[d]", Wildcard.ANY, Wildcard.ONE]) == "a[*]b[?]c[[]d]*?"


def test_uid_list_accepts_commas_and_backslashes() -> None:
    assert parse_uid_list("StudyInstanceUID", "1.2.3, 1.2.4\\1.2.5") == [
        "1.2.3",
        "1.2.4",
        "1.2.5",
    ]
    with pytest.raises(InvalidQueryError, match=r"invalid StudyInstanceUID '1\.2\.\*'"):
        parse_uid_list("StudyInstanceUID", "1.2.3,1.2.*")


def test_integer_value_accepts_only_integers() -> None:
    assert parse_integer("SeriesNumber", " 12 ") == 12
    assert parse_integer("SeriesNumber", "-3") == -3
    with pytest.raises(InvalidQueryError, match="invalid SeriesNumber value '1_000'"):
        parse_integer("SeriesNumber", "1_000")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240115", KeyRange("20240115", "20240115")),
        ("20240101-20240131", KeyRange("20240101", "20240131")),
        ("-20240131", KeyRange(None, "20240131")),
        ("20240101-", KeyRange("20240101", None)),
        ("20240229", KeyRange("20240229", "20240229")),
    ],
)
def test_date_range_forms(text: str, expected: KeyRange) -> None:
    assert parse_date_range("StudyDate", text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-", "invalid StudyDate range '-'"),
        ("2024", "'2024' is not a date"),
        ("20230229", "'20230229' is not a date"),
        ("2024-01-01", "invalid StudyDate range '2024-01-01'"),
        ("20240201-20240101", "the start is after the end"),
        ("2024.01.15", "'2024.01.15' is not a date"),
    ],
)
def test_invalid_dates_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        parse_date_range("StudyDate", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", KeyRange("100000.000000", "105959.999999")),
        ("1015", KeyRange("101500.000000", "101559.999999")),
        ("101530.5", KeyRange("101530.500000", "101530.599999")),
        ("10:15:30", KeyRange("101530.000000", "101530.999999")),
        ("08-1015", KeyRange("080000.000000", "101559.999999")),
        ("-1015", KeyRange(None, "101559.999999")),
        ("2359-", KeyRange("235900.000000", None)),
    ],
)
def test_time_values_cover_their_precision(text: str, expected: KeyRange) -> None:
    assert parse_time_range("StudyTime", text) == expected


@pytest.mark.parametrize("text", ["24", "1060", "10.5", "1o", "1200-1100"])
def test_invalid_times_rejected(text: str) -> None:
    with pytest.raises(InvalidQueryError, match="StudyTime"):
        parse_time_range("StudyTime", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", KeyRange("20240101000000.000000", "20241231235959.999999")),
        ("202402", KeyRange("20240201000000.000000", "20240229235959.999999")),
        ("2024011510", KeyRange("20240115100000.000000", "20240115105959.999999")),
        (
            "20240115103000-20240116",
            KeyRange("20240115103000.000000", "20240116235959.999999"),
        ),
        ("-2023", KeyRange(None, "20231231235959.999999")),
    ],
)
def test_datetime_values_cover_their_precision(text: str, expected: KeyRange) -> None:
    assert parse_datetime_range("AcquisitionDateTime", text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20240115103000+0100", "UTC offset"),
        ("2024.5", "fraction without seconds"),
        ("202413", "is not a date-time"),
        ("20240230", "is not a date-time"),
    ],
)
def test_invalid_datetimes_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        parse_datetime_range("AcquisitionDateTime", text)


def test_attribute_levels_follow_modules() -> None:
    assert level_of_tag(_tag("PatientAge")) is QueryRetrieveLevel.STUDY
    assert level_of_tag(_tag("AccessionNumber")) is QueryRetrieveLevel.STUDY
    assert level_of_tag(_tag("Manufacturer")) is QueryRetrieveLevel.SERIES
    assert level_of_tag(_tag("Rows")) is QueryRetrieveLevel.IMAGE
    assert level_of_tag(0x00091001) is QueryRetrieveLevel.IMAGE


def test_indexed_key_comes_from_nearest_level() -> None:
    timezone = _tag("TimezoneOffsetFromUTC")

    image_key = find_indexed_key(timezone, QueryRetrieveLevel.IMAGE)
    study_key = find_indexed_key(timezone, QueryRetrieveLevel.STUDY)

    assert image_key is not None
    assert image_key.column is Series.timezone_offset_from_utc
    assert study_key is not None
    assert study_key.column is Study.timezone_offset_from_utc
    assert find_indexed_key(_tag("Modality"), QueryRetrieveLevel.STUDY) is None


def test_matchable_keywords_exclude_returned_only_keys() -> None:
    study_keys = matchable_keywords(QueryRetrieveLevel.STUDY)
    image_keys = matchable_keywords(QueryRetrieveLevel.IMAGE)

    assert "PatientName" in study_keys
    assert "NumberOfStudyRelatedSeries" not in study_keys
    assert "Modality" not in study_keys
    assert {"Modality", "SOPClassUID", "PatientName"} <= set(image_keys)
    assert "ContentTime" not in image_keys
